"""Training-loop benchmarks run with tiny arguments and print their ratio lines (numbers are read, not asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_loop_overhead_benchmark_runs_and_prints_the_ratio():
    result = run("benchmarks/bench_loop_overhead.py", "--items", "32", "--batch-size", "16", "--repeats", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ours / bare: x" in result.stdout


@pytest.mark.slow
def test_grad_checkpointing_benchmark_runs_and_prints_the_ratios():
    result = run("benchmarks/bench_grad_checkpointing.py", "--img-size", "64", "--batch-size", "2", "--steps", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "checkpointed / plain: saved bytes x" in result.stdout
    assert "step time x" in result.stdout
