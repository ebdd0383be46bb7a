"""Notebook 07 (ImageNet-21K heads) matches its generator, and runs headless under the smoke preset (random weights,
the embedded Fashion-MNIST) saying plainly that its predictions and comparison mean nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tresnet_nb.report.record import REQUIRED_KEYS
from tresnet_nb.runner import run_notebooks

ROOT = Path(__file__).resolve().parents[1]
STEM = "07_imagenet21k_heads"


def test_notebook07_matches_its_generator():
    result = subprocess.run(
        [sys.executable, "tools/notebook07.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_notebook07_smoke_run(tmp_path, closed_hub):
    out = tmp_path / "runs"
    (outcome,) = run_notebooks([ROOT / "notebooks" / f"{STEM}.ipynb"], out, "smoke")
    assert outcome.status == "ok", outcome.error
    run_dir = out / STEM
    record = json.loads((run_dir / "metrics.json").read_text())
    assert set(REQUIRED_KEYS) <= set(record)
    assert record["notebook"] == STEM and record["preset"] == "smoke" and record["dataset"] == "fashion_mnist"
    assert record["pretrained"] is False and record["comparison_meaningful"] is False
    assert record["metric_name"] == "transplant_coverage" and record["label_set"] == "fall11"
    cover = record["coverage"]
    assert cover["classes"] == 10 and record["metric_value"] == (cover["matched"] + cover["via ancestor"]) / 10
    assert [arm["epochs"] for arm in record["arms"]] == [0, 1, 1] and record["img_size"] == 64
    for name in ("predictions21k.png", "senses.csv", "run_config.json"):
        assert (run_dir / name).is_file(), name
    executed = (run_dir / f"{STEM}.ipynb").read_text()
    assert "Weights: RANDOM initialisation" in executed  # the banner and the predictions' warning
    assert "these predictions are meaningless" in executed and "This comparison is NOT meaningful" in executed
    assert "hierarchy: WordNet 3.0 hypernyms" in executed
