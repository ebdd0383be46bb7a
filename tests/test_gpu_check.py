"""``python -m tresnet_nb gpu-check``: the whole command at toy sizes on the CPU, as a bare CUDA image would run it
(every module such a machine lacks made unimportable), the report written after each section, and the offline
bundle installer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from gpu_image import lacking_modules, write_sitecustomize

from tresnet_nb import bundle, gpucheck
from tresnet_nb.gpucheck import SECTIONS, run_gpu_check

ROOT = Path(__file__).resolve().parent.parent


def test_the_bare_image_lacks_what_the_check_must_not_import():
    lacking = set(lacking_modules())
    # the simulation is only worth something if it refuses what such an image really lacks, and keeps what it has
    assert {"papermill", "nbformat", "jupyter_client", "ipykernel", "IPython", "traitlets", "spacy"} <= lacking
    assert not {"torch", "torchvision", "timm", "numpy", "pandas", "onnxruntime", "fastai", "fastcore"} & lacking


def test_gpu_check_on_a_cpu_runs_every_section_as_a_bare_cuda_image_would(tmp_path):
    site = write_sitecustomize(tmp_path / "site")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]),
        "TRESNET_NB_CACHE": str(tmp_path / "cache"),
    }
    out = tmp_path / "check"
    done = subprocess.run(
        [sys.executable, "-m", "tresnet_nb", "gpu-check", "--device", "cpu", "--quick", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert list(report["sections"]) == list(SECTIONS)
    assert {name: s["status"] for name, s in report["sections"].items()} == dict.fromkeys(SECTIONS, "ok")
    s = report["sections"]
    # tests: every CUDA test was collected there (nothing failed to import) and skipped, this machine has no GPU
    assert s["tests"]["skipped"] >= 10 and s["tests"]["passed"] == s["tests"]["failed"] == s["tests"]["error"] == 0
    assert "tests/test_cuda_train.py" in s["tests"]["files"]
    probe = s["probe"]["table"]
    assert [(r["model"], r["px"]) for r in probe][-1] == ("tresnet_m", 96) and all(r["train img/s"] > 0 for r in probe)
    fine = s["finetune"]["table"]
    assert [r["px"] for r in fine] == [64, 96] and all(0 <= r["data_wait_fraction"] < 1 for r in fine)
    assert all(
        r["steps"] == steps
        for r, (_, _, steps) in zip(fine, gpucheck.sizes_for(torch.device("cpu"), True).phases, strict=True)
    )
    assert s["finetune"]["recipe"] == "miil" and s["finetune"]["goal_met"] is None  # the goal is a GPU's
    assert [r["norm"] for r in s["iabn"]["table"]] == ["BatchNorm", "InPlace-ABN"]
    assert [r["mode"] for r in s["compile"]["table"]] == ["eager", "compile (aot_eager)"]
    for row in s["export"]["table"]:
        assert row["max abs diff on the device"] <= row["tolerance"]
    assert (out / "export" / "model.onnx").exists() and (out / "export" / "model.pt").exists()
    md = (out / "gpu_check.md").read_text()
    assert "| finetune | ok |" in md and "## probe" in md and "data_wait_fraction" in md


def test_the_report_is_written_after_each_section_and_a_failure_does_not_stop_the_rest(tmp_path, monkeypatch):
    seen = []

    def first(device, sz, out, state):
        return {"status": "ok", "summary": "first done"}

    def broken(device, sz, out, state):
        seen.append(json.loads((out / "gpu_check.json").read_text())["sections"])  # what a cut-short run leaves
        raise RuntimeError("planted failure")

    def last(device, sz, out, state):
        seen.append(json.loads((out / "gpu_check.json").read_text())["sections"])
        return {"status": "ok", "summary": "last done"}

    monkeypatch.setattr(gpucheck, "RUNNERS", {"tests": first, "probe": broken, "export": last})
    report = run_gpu_check(torch.device("cpu"), True, tmp_path, ("tests", "probe", "export"))
    assert seen[0]["tests"]["status"] == "ok" and seen[0]["probe"]["status"] == "running"
    assert seen[1]["probe"]["status"] == "failed" and "planted failure" in seen[1]["probe"]["error"]
    assert not report.ok and report.sections["export"]["status"] == "ok"
    md = (tmp_path / "gpu_check.md").read_text()
    assert "| probe | failed |" in md and "RuntimeError: planted failure" in md and "| finetune | not run |" in md


def test_another_network_replaces_tresnet_m_and_iabn_says_why_it_skips(tmp_path):
    report = run_gpu_check(torch.device("cpu"), True, tmp_path, ("probe", "iabn", "export"), arch="resnet18.a1_in1k")
    s = report.sections
    assert report.ok and report.environment["arch"] == "resnet18"  # the tag is dropped: the check trains from scratch
    assert {(r["model"], r["px"]) for r in s["probe"]["table"]} == {("resnet18", 64), ("resnet18", 96)}
    assert s["iabn"]["status"] == "skipped" and "resnet18 is not a TResNet" in s["iabn"]["summary"]
    assert s["export"]["status"] == "ok" and "a fresh resnet18" in s["export"]["summary"]
    assert "| iabn | skipped |" in (tmp_path / "gpu_check.md").read_text()


def test_an_unknown_arch_is_refused_before_any_section_runs(tmp_path, capsys):
    from tresnet_nb.__main__ import main

    assert main(["gpu-check", "--device", "cpu", "--quick", "--arch", "resnet51", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--arch resnet51: Unknown architecture 'resnet51'" in err and "did you mean" in err
    assert not (tmp_path / "gpu_check.json").exists()


def test_junit_outcomes_reads_each_kind(tmp_path):
    xml = tmp_path / "r.xml"
    xml.write_text(
        '<testsuites><testsuite><testcase classname="t" name="a"/><testcase classname="t" name="b">'
        '<failure/></testcase><testcase classname="t" name="c"><skipped/></testcase>'
        '<testcase classname="t" name="d"><error/></testcase></testsuite></testsuites>'
    )
    assert gpucheck.junit_outcomes(xml) == {"t::a": "passed", "t::b": "failed", "t::c": "skipped", "t::d": "error"}


def test_cpu_without_quick_and_a_missing_gpu_are_refused_with_the_fix(capsys):
    from tresnet_nb.__main__ import main

    assert main(["gpu-check", "--device", "cpu"]) == 2
    assert "--quick" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["gpu-check"]) == 2
        assert "--device cpu" in capsys.readouterr().err


def wheel(folder: Path, dist: str, module: str, body: str) -> Path:
    """A minimal pure-Python wheel of ``dist`` holding ``module``.py."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dist}-1.0-py3-none-any.whl"
    info = f"{dist}-1.0.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{module}.py", body)
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return path


def test_the_bundle_installs_offline_beside_the_wheels_and_leaves_the_environment_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "")
    wheel(tmp_path / "b", "tnb_probe_dist", "tnb_probe_mod", "VALUE = 41 + 1\n")
    needed = {"tnb_probe_mod": "tnb_probe_dist"}
    assert bundle.ensure_bundle(needed, tmp_path / "b") == ["tnb_probe_dist"]
    import tnb_probe_mod

    assert tnb_probe_mod.VALUE == 42
    assert Path(tnb_probe_mod.__file__).parent == bundle.site_dir(tmp_path / "b")  # not the venv's site-packages
    assert os.environ["PYTHONPATH"].split(os.pathsep)[0] == str(bundle.site_dir(tmp_path / "b"))  # for pytest's run
    assert bundle.ensure_bundle(needed, tmp_path / "b") == []  # now found: nothing to do
    sys.modules.pop("tnb_probe_mod")


def test_a_missing_bundle_stops_before_any_work_with_the_fix(tmp_path):
    with pytest.raises(SystemExit, match=r"tools/gpu_bundle.sh.*pip install tnb-absent"):
        bundle.ensure_bundle({"tnb_absent_mod": "tnb-absent"}, tmp_path / "empty")
    wheel(tmp_path / "other", "tnb_other", "tnb_other_mod", "")
    with pytest.raises(SystemExit, match="could not install"):
        bundle.ensure_bundle({"tnb_absent_mod": "tnb-absent"}, tmp_path / "other")


def test_the_bundle_script_downloads_every_distribution_the_check_installs():
    script = (ROOT / "tools" / "gpu_bundle.sh").read_text()
    assert subprocess.run(["bash", "-n", str(ROOT / "tools" / "gpu_bundle.sh")]).returncode == 0
    for dist in bundle.NEEDED.values():
        assert f"{dist}==" in script or (dist == "fastai" and "^fastai==" in script), dist
    assert "--no-deps" in script and "--only-binary=:all:" in script and "-gt 40" in script
    assert "gpu_bundle/" in (ROOT / ".gitignore").read_text().split()
