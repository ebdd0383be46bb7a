"""Benchmarks run with tiny arguments and print their ratio lines (the numbers are read by people, not asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "args", "ratio_lines"),
    [
        ("bench_precision.py", ("--img-size", "64", "--items", "32", "--repeats", "1"),
         ("bf16+channels_last / fp32 NCHW: train x", "bf16+channels_last / fp32+channels_last: train x")),
        ("bench_highres.py", ("--images", "6", "--size", "224"), ("cached / naive: x",)),
        ("bench_loop_overhead.py", ("--items", "32", "--batch-size", "16", "--repeats", "1"), ("ours / bare: x",)),
        ("bench_grad_checkpointing.py", ("--img-size", "64", "--batch-size", "2", "--steps", "1"),
         ("checkpointed / plain: saved bytes x", "step time x")),
        ("bench_iabn.py", ("--img-size", "64", "--batch-size", "2", "--steps", "1"),
         ("iabn / bn: saved bytes x", "step time x")),
        ("bench_probe.py", ("--img-size", "32", "--batch-size", "2", "--rounds", "1", "--steps", "1", "--warmup", "1"),
         ("probe / reference: infer x", "probe / reference: train x", "reference inference_mode / no_grad: x")),
        ("bench_optimizer.py", ("--steps", "1", "--warmup", "1", "--wd-mode", "adamw"),
         ("ForeachAdam / torch fused: x", "ForeachAdam foreach / torch foreach: x", "OptimWrapper / torch foreach: x")),
    ],
)  # fmt: skip
def test_benchmark_runs_and_prints_its_ratios(script, args, ratio_lines):
    result = run(f"benchmarks/{script}", *args)
    assert result.returncode == 0, result.stderr[-2000:]
    for line in ratio_lines:
        assert line in result.stdout, result.stdout
