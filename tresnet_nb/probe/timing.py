"""Timing a step: warm-up, then rounds of steps with the device synchronised around each (:func:`time_steps`), and
the seconds per step of each round (:class:`Timing`: median, img/s, spread)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..model.steps import synchronize


@dataclass(frozen=True)
class Timing:
    """Seconds per step of each timed round (each the mean over ``steps`` steps) at ``batch_size``."""

    batch_size: int
    seconds: tuple[float, ...]
    steps: int

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def ms_per_step(self) -> float:
        return 1000 * self.median_s

    @property
    def images_per_second(self) -> float:
        return self.batch_size / self.median_s

    @property
    def spread(self) -> float:
        """(slowest - fastest round) / median: 0.05 means the rounds agree within 5%."""
        return (max(self.seconds) - min(self.seconds)) / self.median_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "steps": self.steps,
            "seconds": list(self.seconds),
            "ms_per_step": self.ms_per_step,
            "images_per_second": self.images_per_second,
            "spread": self.spread,
        }


def time_steps(
    step: Callable[[], Any], batch_size: int, device: torch.device, warmup: int = 2, repeats: int = 5, steps: int = 1
) -> Timing:
    """Run ``step`` ``warmup`` times, then time ``repeats`` rounds of ``steps`` calls at ``batch_size`` on
    ``device``, synchronising it before and after each round so that queued CUDA kernels are counted in the round
    that launched them."""
    if repeats < 1 or steps < 1 or warmup < 0:
        raise ValueError(f"Need repeats >= 1, steps >= 1, warmup >= 0; got {repeats!r}, {steps!r}, {warmup!r}")
    for _ in range(warmup):
        step()
    rounds = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(device)
        rounds.append((time.perf_counter() - start) / steps)
    return Timing(batch_size, tuple(rounds), steps)
