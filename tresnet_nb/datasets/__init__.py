"""Datasets: one module per on-disk format and the ``DATASETS`` table that names them.

Each format module provides ``read(root, **options) -> Dataset``, ``write_fixture(root, seed) -> root``, and the
texts ``LAYOUT`` (what the reader expects on disk) and ``GET_IT`` (how to obtain the data).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from .base import Dataset, DatasetError, Split


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: its format module and options, task, metric, the split the metric is reported on, and the
    paper's architecture, resolution and result (None where the paper has none)."""

    module_name: str
    task: str  # 'single-label' or 'multi-label' (a user's CSV may turn out multi-label: read() says)
    metric: str  # 'accuracy', 'macro_f1' or 'mean_roc_auc'
    eval_split: str
    paper_arch: str | None
    paper_img_size: int | None
    paper_target: float | None  # on the metric's 0..1 scale
    paper_result: str  # the paper's claim in words, for the "ours vs paper" table
    description: str
    options: dict[str, Any] = field(default_factory=dict)  # fixed read() options (e.g. the CIFAR variant)

    @property
    def module(self) -> ModuleType:
        return importlib.import_module(f"{__name__}.{self.module_name}")

    @property
    def layout(self) -> str:
        return self.module.LAYOUT

    @property
    def get_it(self) -> str:
        return self.module.GET_IT

    def read(self, root: Path | str | None, **options: Any) -> Dataset:
        """Read the dataset at ``root`` (``options`` add to the entry's own)."""
        if root is None and self.module_name != "fashion_mnist":
            raise DatasetError(f"DATA_ROOT is not set. Expected layout: {self.layout}. How to get it: {self.get_it}")
        return self.module.read(None if root is None else Path(root), **{**self.options, **options})

    def write_fixture(self, root: Path | str, seed: int = 0) -> Path:
        """Write a tiny copy in the official format under ``root``; returns the folder ``read`` takes."""
        return self.module.write_fixture(Path(root), seed=seed)


# Paper numbers: official TResNet README (Alibaba-MIIL/TResNet): ImageNet-1K pretraining, top-1.
DATASETS: dict[str, DatasetSpec] = {
    "fashion_mnist": DatasetSpec(
        "fashion_mnist", "single-label", "accuracy", "test", None, None, None, "-",
        "Fashion-MNIST idx files; DATA_ROOT=None reads the balanced subset embedded in data/",
    ),
    "cifar10": DatasetSpec(
        "cifar", "single-label", "accuracy", "test", "tresnet_xl", 224, 0.990, "99.0 top-1 (TResNet-XL, 224)",
        "CIFAR-10, python version (pickled batches)", {"variant": "cifar10"},
    ),
    "cifar100": DatasetSpec(
        "cifar", "single-label", "accuracy", "test", "tresnet_xl", 224, 0.915, "91.5 top-1 (TResNet-XL, 224)",
        "CIFAR-100, python version (pickled batches)", {"variant": "cifar100"},
    ),
    "stanford_cars": DatasetSpec(
        "stanford_cars", "single-label", "accuracy", "test", "tresnet_l", 368, 0.960, "96.0 top-1 (TResNet-L, 368)",
        "Stanford Cars, devkit layout (.mat annotations), 196 classes, bounding boxes",
    ),
    "flowers102": DatasetSpec(
        "flowers102", "single-label", "accuracy", "test", "tresnet_l", 368, 0.991, "99.1 top-1 (TResNet-L, 368)",
        "Oxford Flowers-102 (jpg/, imagelabels.mat, setid.mat)",
    ),
    "herbarium2020": DatasetSpec(
        "herbarium2020", "single-label", "macro_f1", "valid", None, None, None, "2nd of 153 teams (Kaggle)",
        "Herbarium 2020 (FGVC7, Kaggle): COCO-like metadata.json, 32,093 species, long-tailed",
    ),
    "plant_pathology": DatasetSpec(
        "plant_pathology", "multi-label", "mean_roc_auc", "valid", None, None, None,
        "7th of 1317 teams (Kaggle)", "Plant Pathology 2020 (FGVC7, Kaggle): images/ and one-hot train.csv",
    ),
    "folder": DatasetSpec(
        "folder", "single-label", "accuracy", "valid", None, None, None, "-",
        "your images: one sub-folder per class (optionally under train/ and valid/)",
    ),
    "csv": DatasetSpec(
        "table", "single-label", "accuracy", "valid", None, None, None, "-",
        "your images listed in a CSV: path,label or path plus one 0/1 column per label (multi-label)",
    ),
}  # fmt: skip


def get_dataset(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` called ``name``."""
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name]


__all__ = ["DATASETS", "Dataset", "DatasetError", "DatasetSpec", "Split", "get_dataset"]
