"""Shared fixtures: a closed Hugging Face hub (no network, empty cache) and repository paths."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` skip, with the reason, where torch sees no CUDA device (torch is imported only when one
    such test was collected)."""
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
