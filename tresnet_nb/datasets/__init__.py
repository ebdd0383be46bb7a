"""Datasets: one module per on-disk format and the ``DATASETS`` table that names them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import fashion_mnist

ArrayReader = Callable[[Path | None, str], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: its reader, classes, task, metric, and the paper's resolution and result (None if none)."""

    reader: ArrayReader
    class_names: tuple[str, ...]
    task: str  # 'single-label' or 'multi-label'
    metric: str
    train_split: str
    eval_split: str
    paper_img_size: int | None
    paper_target: float | None
    description: str


DATASETS: dict[str, DatasetSpec] = {
    "fashion_mnist": DatasetSpec(
        reader=fashion_mnist.read_split,
        class_names=fashion_mnist.CLASS_NAMES,
        task="single-label",
        metric="accuracy",
        train_split="train",
        eval_split="test",
        paper_img_size=None,
        paper_target=None,
        description="Fashion-MNIST (idx files); DATA_ROOT=None reads the balanced subset embedded in data/",
    ),
}


def get_dataset(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` called ``name``."""
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name]
