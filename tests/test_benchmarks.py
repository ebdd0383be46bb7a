"""Benchmarks run (their numbers are read by people, not asserted here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_precision_benchmark_runs_and_prints_ratios():
    result = subprocess.run(
        [sys.executable, "benchmarks/bench_precision.py", "--items", "32", "--batch-size", "16", "--repeats", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "bf16+channels_last / fp32+channels_last: train x" in result.stdout


@pytest.mark.slow
def test_highres_benchmark_runs_and_prints_the_ratio():
    result = subprocess.run(
        [sys.executable, "benchmarks/bench_highres.py", "--images", "6", "--size", "224"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "cached / naive: x" in result.stdout
