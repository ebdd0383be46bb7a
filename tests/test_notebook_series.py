"""The dataset notebooks (02-06, 08) run headless under the smoke preset on fixtures written in each dataset's
official format, from a fresh kernel, and report honestly; they match their generator (tools/notebooks.py)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tresnet_nb.data import get_dataset
from tresnet_nb.evaluation.submissions import HERBARIUM_COLUMNS, PLANT_PATHOLOGY_COLUMNS, check_submission
from tresnet_nb.report.plots import MAX_NAMED_CLASSES
from tresnet_nb.report.record import PREDICTIONS, REQUIRED_KEYS
from tresnet_nb.runner import run_notebooks

ROOT = Path(__file__).resolve().parents[1]
SERIES = {
    "02_cifar": "cifar100",
    "03_stanford_cars": "stanford_cars",
    "04_oxford_flowers": "flowers102",
    "05_herbarium_2020": "herbarium2020",
    "06_plant_pathology_2020": "plant_pathology",
    "08_your_own_data": "folder",
}


def recomputed(run_dir: Path, metric: str) -> float:
    """The run's metric recomputed by scikit-learn from the predictions it saved (predictions.npz)."""
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    saved = np.load(run_dir / PREDICTIONS)
    probs, targets = saved["probs"], saved["targets"]
    if metric == "mean_roc_auc":  # class indices (Plant Pathology: one label a row) are scored as one-hot columns
        targets = np.eye(probs.shape[1], dtype=int)[targets] if targets.ndim == 1 else targets
        return float(np.mean([roc_auc_score(targets[:, j], probs[:, j]) for j in range(targets.shape[1])]))
    pred = probs.argmax(1)
    return float(accuracy_score(targets, pred) if metric == "accuracy" else f1_score(targets, pred, average="macro"))


def test_notebooks_match_their_generator():
    result = subprocess.run([sys.executable, "tools/notebooks.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("stem", "dataset"), list(SERIES.items()))
def test_notebook_smoke_run_on_a_fixture(stem, dataset, tmp_path, closed_hub, monkeypatch):
    monkeypatch.setenv("TRESNET_NB_CACHE", str(tmp_path / "cache"))
    spec = get_dataset(dataset)
    root = spec.write_fixture(tmp_path / "data")
    out = tmp_path / "runs"
    (outcome,) = run_notebooks(
        [ROOT / "notebooks" / f"{stem}.ipynb"], out, "smoke", {"DATA_ROOT": str(root), "DATASET": dataset}
    )
    assert outcome.status == "ok", outcome.error
    run_dir = out / stem
    record = json.loads((run_dir / "metrics.json").read_text())
    assert set(REQUIRED_KEYS) <= set(record)
    assert record["notebook"] == stem and record["dataset"] == dataset and record["preset"] == "smoke"
    assert record["pretrained"] is False and record["weights_source"] == "random"  # smoke: random weights, said so
    ds = spec.read(root)
    expected_metric = spec.metric if ds.task == spec.task else {"multi-label": "mean_roc_auc"}.get(ds.task, "accuracy")
    assert record["metric_name"] == expected_metric
    assert record["metric_value"] == pytest.approx(recomputed(run_dir, expected_metric), abs=1e-6)
    assert record["fixture_data"] is False  # DATA_ROOT given: the run does not know it is a fixture
    assert record["paper_target"] == spec.paper_target
    assert record["n_eval"] == min(len(ds[spec.eval_split]), max(len(ds.class_names), 64 // 2))
    if ds.task == "multi-label":
        plots = ["roc_curves.png"]
    else:  # a confusion matrix is drawn up to MAX_NAMED_CLASSES classes; a 1-epoch random model makes mistakes
        plots = ["mistakes.png"] + (["confusion.png"] if len(ds.class_names) <= MAX_NAMED_CLASSES else [])
    for name in ("samples.png", "class_counts.png", "training.png", "model.safetensors", "run_config.json", *plots):
        assert (run_dir / name).is_file(), name
    executed = (run_dir / f"{stem}.ipynb").read_text()
    assert "not comparable: a reduced run" in executed or spec.paper_target is None  # the closing table is honest
    if dataset in ("herbarium2020", "plant_pathology"):
        columns = HERBARIUM_COLUMNS if dataset == "herbarium2020" else PLANT_PATHOLOGY_COLUMNS
        assert check_submission(run_dir / "submission.csv", ds["test"].ids, columns) == len(ds["test"])


@pytest.mark.slow
def test_smoke_without_data_root_runs_on_a_fixture_and_says_so(tmp_path, closed_hub, monkeypatch, capsys):
    monkeypatch.setenv("TRESNET_NB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))  # the kernel writes the fixture there
    (tmp_path / "tmp").mkdir()
    stem = "04_oxford_flowers"
    out = tmp_path / "runs"
    (outcome,) = run_notebooks([ROOT / "notebooks" / f"{stem}.ipynb"], out, "smoke")
    assert outcome.status == "ok", outcome.error
    run_dir = out / stem
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["fixture_data"] is True and record["dataset"] == "flowers102"
    assert record["metric_value"] == pytest.approx(recomputed(run_dir, "accuracy"), abs=1e-6)
    config = json.loads((run_dir / "run_config.json").read_text())
    assert config["data_root"].startswith(str(tmp_path / "tmp" / "tresnet_nb-fixtures" / "flowers102"))
    executed = (run_dir / f"{stem}.ipynb").read_text()
    assert "DATA_ROOT is not set: PRESET 'smoke' runs on a generated flowers102 fixture" in executed
    assert f"{stem}: tresnet_m, weights=none (NOT pretrained: random init), flowers102 (FIXTURE data)" in (
        capsys.readouterr().out
    )
    (row,) = list(csv.DictReader(open(out / "summary.csv")))
    assert row["fixture_data"] == "True"
