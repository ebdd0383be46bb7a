"""The papermill runner: value parsing, refusals before anything runs, failures kept and reported."""

from __future__ import annotations

import csv
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from tresnet_nb.__main__ import main
from tresnet_nb.runner import check_run, parse_value


@pytest.mark.parametrize(
    ("text", "value"),
    [("True", True), ("False", False), ("None", None), ("3", 3), ("2e-4", 2e-4), ("tresnet_m", "tresnet_m")],
)
def test_values_parse_like_papermill(text, value):
    assert parse_value(text) == value and type(parse_value(text)) is type(value)


def write_notebook(path, body: str):
    params = new_code_cell('OUTPUT_DIR = None\nPRESET = "cpu"')
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[params, new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


OK_BODY = """import json, pathlib
pathlib.Path(OUTPUT_DIR).mkdir(parents=True, exist_ok=True)
record = dict(notebook="ok", dataset="d", arch="a", weights="none", pretrained=False, img_size=64, epochs=1,
              metric_name="accuracy", metric_value=0.5, paper_target=None, train_seconds=1.0, device="cpu",
              versions={}, preset=PRESET)
pathlib.Path(OUTPUT_DIR, "metrics.json").write_text(json.dumps(record))"""


def test_unknown_parameter_and_preset_are_refused_before_running(tmp_path):
    nb = write_notebook(tmp_path / "ok.ipynb", OK_BODY)
    with pytest.raises(ValueError, match=r"has no parameters 'EPOCS'; its parameters are"):
        check_run([nb], None, {"EPOCS": 3})
    with pytest.raises(ValueError, match=r"has no parameters 'PRESTE' \(did you mean 'PRESET'\?\)"):
        check_run([nb], None, {"PRESTE": "cpu"})
    with pytest.raises(ValueError, match=r"Unknown preset 'turbo'; choose one of"):
        check_run([nb], "turbo", {})
    assert main(["run", str(nb), "-p", "EPOCS", "3", "--out", str(tmp_path / "runs")]) == 2
    assert not (tmp_path / "runs").exists()


def test_notebook_without_parameters_cell_is_refused(tmp_path):
    nb = new_notebook(cells=[new_code_cell("x = 1")])
    nbformat.write(nb, tmp_path / "plain.ipynb")
    with pytest.raises(ValueError, match="no cell tagged 'parameters'"):
        check_run([tmp_path / "plain.ipynb"], None, {})


@pytest.mark.slow
def test_a_failure_is_kept_and_the_batch_goes_on(tmp_path):
    bad = write_notebook(tmp_path / "bad.ipynb", "raise RuntimeError('boom in cell')")
    ok = write_notebook(tmp_path / "ok.ipynb", OK_BODY)
    out = tmp_path / "runs"
    code = main(["run", str(bad), str(ok), "--preset", "smoke", "--out", str(out)])
    assert code == 1
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [(r["notebook"], r["status"]) for r in rows] == [("bad", "failed"), ("ok", "ok")]
    assert "boom in cell" in rows[0]["error"]
    executed = nbformat.read(out / "bad" / "bad.ipynb", as_version=4)
    assert any(o.get("ename") == "RuntimeError" for c in executed.cells for o in c.get("outputs", []))
    assert rows[1]["metric_value"] == "0.5"
    assert "| ok | ok | accuracy | 0.5 |" in (out / "summary.md").read_text()


def test_each_kernel_has_private_ipc_sockets_removed_after_it():
    from tresnet_nb.runner import IPCKernelManager

    first, second = IPCKernelManager(), IPCKernelManager()
    folders = [Path(m.ip).parent for m in (first, second)]
    assert first.ip != second.ip and all(f.is_dir() and f.stat().st_mode & 0o777 == 0o700 for f in folders)
    assert not Path(first.ip).is_relative_to(Path.cwd())  # not the shared "kernel-ipc" prefix in the working folder
    for manager in (first, second):
        manager.cleanup_ipc_files()
    assert not any(f.exists() for f in folders)
