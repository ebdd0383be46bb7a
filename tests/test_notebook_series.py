"""The dataset notebooks (02-06, 08) run headless under the smoke preset on fixtures written in each dataset's
official format, from a fresh kernel, and report honestly; they match their generator (tools/notebooks.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tresnet_nb.data import get_dataset
from tresnet_nb.evaluation.submissions import HERBARIUM_COLUMNS, PLANT_PATHOLOGY_COLUMNS, check_submission
from tresnet_nb.report.plots import MAX_NAMED_CLASSES
from tresnet_nb.report.record import REQUIRED_KEYS
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


def test_notebooks_match_their_generator():
    result = subprocess.run([sys.executable, "tools/notebooks.py", "--check"], cwd=ROOT, capture_output=True,
                            text=True)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("stem", "dataset"), list(SERIES.items()))
def test_notebook_smoke_run_on_a_fixture(stem, dataset, tmp_path, closed_hub, monkeypatch):
    monkeypatch.setenv("TRESNET_NB_CACHE", str(tmp_path / "cache"))
    spec = get_dataset(dataset)
    root = spec.write_fixture(tmp_path / "data")
    out = tmp_path / "runs"
    (outcome,) = run_notebooks([ROOT / "notebooks" / f"{stem}.ipynb"], out, "smoke", {"DATA_ROOT": str(root),
                                                                                      "DATASET": dataset})  # fmt: skip
    assert outcome.status == "ok", outcome.error
    run_dir = out / stem
    record = json.loads((run_dir / "metrics.json").read_text())
    assert set(REQUIRED_KEYS) <= set(record)
    assert record["notebook"] == stem and record["dataset"] == dataset and record["preset"] == "smoke"
    assert record["pretrained"] is False and record["weights_source"] == "random"  # smoke: random weights, said so
    ds = spec.read(root)
    expected_metric = spec.metric if ds.task == spec.task else {"multi-label": "mean_roc_auc"}.get(ds.task, "accuracy")
    assert record["metric_name"] == expected_metric and 0.0 <= record["metric_value"] <= 1.0
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
