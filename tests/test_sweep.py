"""Sweeps: keys refused before anything runs; trials.csv, best.json and plots; a failed trial recorded and the sweep
going on; pruning from the epochs a notebook reports; a sweep killed mid-trial resumed from its folder. The 3-trial
smoke sweep of the quickstart, each trial logged to a real MLflow server, is in tests/test_tracking.py."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from tresnet_nb.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
# A notebook as small as a kernel allows: its metric depends on LR; the trial numbered FAIL_TRIAL fails, the one numbered
# POOR reports a poor accuracy at every epoch (to the sweep's trial, as the tracking callback does) and score poorly.
BODY = """import json, math, pathlib, time, types
from tresnet_nb.report.trial import report_epoch
out = pathlib.Path(OUTPUT_DIR); out.mkdir(parents=True, exist_ok=True)
time.sleep(SLEEP)
trial = int(out.parent.name)
if trial == FAIL_TRIAL:
    raise RuntimeError("diverged")
value = 0.1 if trial == POOR else 0.9 - abs(math.log10(LR) + 3) / 10
for epoch in range(1, EPOCHS + 1):
    report_epoch(types.SimpleNamespace(out=out), {"accuracy": value}, epoch)
record = dict(notebook="toy", dataset="fashion_mnist", arch="a", weights="none", pretrained=False, img_size=64,
              epochs=EPOCHS, metric_name="accuracy", metric_value=value, paper_target=None, train_seconds=1.0,
              device="cpu", versions={})
(out / "metrics.json").write_text(json.dumps(record))"""


def toy(folder: Path) -> Path:
    params = new_code_cell(
        'PRESET = "cpu"\nOUTPUT_DIR = None\nLR = 0.001\nEPOCHS = 2\nSLEEP = 0.0\nFAIL_TRIAL = -1\nPOOR = -1'
    )
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[params, new_code_cell(BODY)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / "toy.ipynb")
    return folder / "toy.ipynb"


def rows(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(open(out / "trials.csv")))


def test_unknown_keys_and_bad_spaces_are_refused_before_anything_runs(tmp_path, capsys):
    nb, out = toy(tmp_path), tmp_path / "sweep"
    assert (
        main(["sweep", str(nb), "--trials", "2", "--space", "AUGMENT=choice:flip,autoaugment", "--out", str(out)]) == 2
    )
    assert "toy.ipynb has no parameters 'AUGMENT';" in capsys.readouterr().err
    assert main(["sweep", str(nb), "--trials", "2", "--space", "LR=lognormal:1:2", "--out", str(out)]) == 2
    assert "is not KEY=kind:args" in capsys.readouterr().err
    assert main(["sweep", str(nb), "--trials", "2", "--space", "LR=loguniform:0:1", "--out", str(out)]) == 2
    assert "loguniform needs LOW > 0" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_a_failed_trial_is_recorded_the_sweep_goes_on_and_a_poor_one_is_pruned(tmp_path):
    out = tmp_path / "sweep"
    code = main(
        [
            "sweep",
            str(toy(tmp_path)),
            "--trials",
            "4",
            "--space",
            "LR=loguniform:1e-4:1e-2",
            "-p",
            "FAIL_TRIAL",
            "3",
            "-p",
            "POOR",
            "2",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    table = rows(out)
    assert [(r["number"], r["state"]) for r in table] == [
        ("0", "COMPLETE"),
        ("1", "COMPLETE"),
        ("2", "PRUNED"),
        ("3", "FAIL"),
    ]
    assert "diverged" in table[3]["error"] and float(table[0]["accuracy"]) > 0.5
    assert (out / "trials" / "002" / "toy" / "pruned.json").is_file()  # stopped at its first epoch
    assert (out / "best.json").is_file() and (out / "history.png").is_file() and (out / "importances.png").is_file()


@pytest.mark.slow
def test_a_sweep_killed_during_its_second_trial_resumes_to_three_complete_trials(tmp_path):
    nb, out = toy(tmp_path), tmp_path / "sweep"
    command = [
        sys.executable,
        "-m",
        "tresnet_nb",
        "sweep",
        str(nb),
        "--trials",
        "3",
        "--space",
        "LR=loguniform:1e-4:1e-2",
        "-p",
        "SLEEP",
        "2",
        "-p",
        "EPOCHS",
        "0",
        "--out",
        str(out),
    ]  # no pruning
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "trials" / "001").is_dir() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert (out / "trials" / "001").is_dir(), "the second trial never started"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert subprocess.run(command, cwd=ROOT, env=env, capture_output=True).returncode == 0
    states = [(r["number"], r["state"]) for r in rows(out)]
    assert states == [("0", "COMPLETE"), ("1", "FAIL"), ("2", "COMPLETE"), ("3", "COMPLETE")]
