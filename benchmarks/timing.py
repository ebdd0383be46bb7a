"""Shared by the benchmarks: a fastai callback that times training phases only."""

from __future__ import annotations

import time

import torch
from fastai.callback.core import Callback, CancelValidException


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so that a clock reading covers it (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TrainTimer(Callback):
    """Seconds of each training phase (``before_train`` to ``after_train``: batch fetching and collation inside,
    validation and fit set-up outside); validation is skipped, since nothing here needs it."""

    order = -100  # start before, and stop before, every other callback's train events

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def before_train(self) -> None:
        sync(self.dls.device)
        self._start = time.perf_counter()

    def after_train(self) -> None:
        sync(self.dls.device)
        self.seconds.append(time.perf_counter() - self._start)

    def before_validate(self) -> None:
        raise CancelValidException
