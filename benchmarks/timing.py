"""Shared by the benchmarks: a fastai callback that times training phases only, and a timed plain training step."""

from __future__ import annotations

import time

import torch
from fastai.callback.core import Callback, CancelValidException


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so that a clock reading covers it (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_seconds(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    """Seconds of one plain training step (forward, cross-entropy, backward, optimizer step), the device
    synchronised before and after."""
    sync(x.device)
    start = time.perf_counter()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    opt.zero_grad()
    sync(x.device)
    return time.perf_counter() - start


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
