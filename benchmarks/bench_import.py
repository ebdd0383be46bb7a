"""Seconds a fresh process takes to import the train job (torch, fastai, timm and the package), with the bytecode the
Makefile compiles at install against without it.

Where PYTHONDONTWRITEBYTECODE is set, Python never writes the bytecode it compiles, so a process finds none unless it
was compiled ahead (the Makefile's ``compileall``) and compiles every module it imports again. "without" points
Python's bytecode cache at an empty folder (``-X pycache_prefix``), which it then reads instead of ``__pycache__/``:
the state of a venv installed with ``pip install --no-compile`` and nothing more. Both sides run in interleaved
rounds with PYTHONDONTWRITEBYTECODE=1; the medians are compared.

Usage: python benchmarks/bench_import.py [--module tresnet_nb.steps.job] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from ratios import ratio_line  # benchmarks/ratios.py


def import_seconds(module: str, empty_cache: str | None) -> float:
    """Wall seconds of a fresh interpreter importing ``module`` (reading bytecode from ``empty_cache`` if given)."""
    flags = ["-X", f"pycache_prefix={empty_cache}"] if empty_cache else []
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    start = time.perf_counter()
    subprocess.run([sys.executable, *flags, "-c", f"import {module}"], check=True, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", default="tresnet_nb.steps.job")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with_bytecode, without = [], []
    with tempfile.TemporaryDirectory() as empty:
        for i in range(args.rounds):
            without.append(import_seconds(args.module, empty))
            with_bytecode.append(import_seconds(args.module, None))
            print(f"round {i + 1}: without {without[-1]:.2f} s, with {with_bytecode[-1]:.2f} s", flush=True)
    print(
        ratio_line(
            "without / with bytecode",
            statistics.median(without),
            statistics.median(with_bytecode),
            "s",
            f"import {args.module} in a fresh process, median of {args.rounds} interleaved rounds",
        )
    )


if __name__ == "__main__":
    main()
