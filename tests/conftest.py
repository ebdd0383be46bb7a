"""Shared fixtures: a closed Hugging Face hub (no network, empty cache) and repository paths."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def pytest_configure(config):
    """Under pytest-xdist (``make test``), each worker gets its share of the usable cores as torch threads, it and
    every process its tests start (kernels, torchrun, the command line): with two workers on two cores, two threads
    each made OpenMP spin against the other process and the suite slower than one process."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not workers:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = str(max(1, cores // int(workers)))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = threads
    if "torch" in sys.modules:  # imported before this hook ran: its pool is sized already
        sys.modules["torch"].set_num_threads(int(threads))


# The files that take longest (minutes each on 2 cores: training, kernels, a browser, subprocesses), longest first.
# Under pytest-xdist they start first, so that no long file begins when the other workers are nearly done.
LONG_FILES = (
    "test_benchmarks.py",
    "test_notebook_series.py",
    "test_browser.py",
    "test_real_weights.py",
    "test_trust_notebook.py",
    "test_gpu_check.py",
    "test_distributed.py",
    "test_tracking.py",
    "test_train.py",
    "test_resume.py",
    "test_export.py",
    "test_notebooks.py",
)


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist, LONG_FILES first (the same order in every worker: a stable sort); tests marked `cuda`
    skip, with the reason, where torch sees no CUDA device (torch is imported only when one such test was
    collected)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        rank = {name: i for i, name in enumerate(LONG_FILES)}
        items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))
    marked = [item for item in items if item.get_closest_marker("cuda") is not None]
    if not marked:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device: torch.cuda.is_available() is False on this machine")
    for item in marked:
        item.add_marker(skip)


@pytest.fixture
def closed_hub(tmp_path, monkeypatch):
    """An empty HF cache and an endpoint that refuses connections at once (loopback port 9), with no proxy between
    (tests/hubserver.py), for this process and for kernels it starts; returns the cache folder."""
    from hubserver import PROXY_VARS, point_hub_at, reset_hub_session
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    point_hub_at(monkeypatch, "http://127.0.0.1:9")
    for var in [*PROXY_VARS, "HF_HUB_OFFLINE"]:
        monkeypatch.delenv(var, raising=False)
    reset_hub_session()  # a session made under other proxy variables would keep them (httpx reads them once)
    yield cache
    reset_hub_session()
