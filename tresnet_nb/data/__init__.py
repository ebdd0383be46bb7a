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

from ..paper import PaperResult, transfer
from .base import Dataset, DatasetError, Split


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: its format module and options, task, metric, the split the metric is reported on; the paper's
    architecture, resolution and result on it come from :mod:`tresnet_nb.paper` (None where the paper has none)."""

    name: str
    module_name: str
    task: str  # 'single-label' or 'multi-label' (a user's CSV may turn out multi-label: read() says)
    metric: str  # 'accuracy', 'macro_f1' or 'mean_roc_auc'
    eval_split: str
    description: str
    options: dict[str, Any] = field(default_factory=dict)  # fixed read() options (e.g. the CIFAR variant)
    # whether a left-right mirror image keeps the class, so that the recipes' default policies may flip: photos of
    # clothes, objects, cars, flowers, herbarium sheets and leaves do; a user's own images are unknown (digits,
    # letters, signs, text do not), so those train without flips unless AUGMENT names a policy
    flips_keep_class: bool = True

    @property
    def paper(self) -> PaperResult:
        """The paper's architecture, resolution and result on this dataset (tresnet_nb.paper)."""
        return transfer(self.name)

    @property
    def paper_arch(self) -> str | None:
        return self.paper.arch

    @property
    def paper_img_size(self) -> int | None:
        return self.paper.img_size

    @property
    def paper_target(self) -> float | None:  # on the metric's 0..1 scale
        return self.paper.target

    @property
    def paper_result(self) -> str:  # the paper's claim in words, for the "ours vs paper" table
        return self.paper.text

    @property
    def module(self) -> ModuleType:
        return importlib.import_module(f"{__name__}.{self.module_name}")

    @property
    def layout(self) -> str:
        return self.module.LAYOUT

    @property
    def get_it(self) -> str:
        return self.module.GET_IT

    @property
    def needs_root(self) -> bool:
        """False for Fashion-MNIST, whose subset is embedded (DATA_ROOT None reads it)."""
        return self.module_name != "fashion_mnist"

    def read(self, root: Path | str | None, **options: Any) -> Dataset:
        """Read the dataset at ``root`` (``options`` add to the entry's own)."""
        if root is None and self.needs_root:
            raise DatasetError(f"DATA_ROOT is not set. Expected layout: {self.layout}. How to get it: {self.get_it}")
        return self.module.read(None if root is None else Path(root), **{**self.options, **options})

    def write_fixture(self, root: Path | str, seed: int = 0) -> Path:
        """Write a tiny copy in the official format under ``root``; returns the folder ``read`` takes."""
        return self.module.write_fixture(Path(root), seed=seed)


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("fashion_mnist", "fashion_mnist", "single-label", "accuracy", "test",
                    "Fashion-MNIST idx files; DATA_ROOT=None reads the balanced subset embedded in data/"),
        DatasetSpec("cifar10", "cifar", "single-label", "accuracy", "test",
                    "CIFAR-10, python version (pickled batches)", {"variant": "cifar10"}),
        DatasetSpec("cifar100", "cifar", "single-label", "accuracy", "test",
                    "CIFAR-100, python version (pickled batches)", {"variant": "cifar100"}),
        DatasetSpec("stanford_cars", "stanford_cars", "single-label", "accuracy", "test",
                    "Stanford Cars, devkit layout (.mat annotations), 196 classes, bounding boxes"),
        DatasetSpec("flowers102", "flowers102", "single-label", "accuracy", "test",
                    "Oxford Flowers-102 (jpg/, imagelabels.mat, setid.mat)"),
        DatasetSpec("herbarium2020", "herbarium2020", "single-label", "macro_f1", "valid",
                    "Herbarium 2020 (FGVC7, Kaggle): COCO-like metadata.json, 32,093 species, long-tailed"),
        DatasetSpec("plant_pathology", "plant_pathology", "single-label", "mean_roc_auc", "valid",
                    "Plant Pathology 2020 (FGVC7, Kaggle): images/ and one-hot train.csv (one class per row)"),
        DatasetSpec("folder", "folder", "single-label", "accuracy", "valid",
                    "your images: one sub-folder per class (optionally under train/ and valid/)",
                    flips_keep_class=False),
        DatasetSpec("csv", "table", "single-label", "accuracy", "valid",
                    "your images listed in a CSV: path,label or path plus one 0/1 column per label (multi-label)",
                    flips_keep_class=False),
    )
}  # fmt: skip


def get_dataset(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` called ``name``."""
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name]


__all__ = ["DATASETS", "Dataset", "DatasetError", "DatasetSpec", "Split", "get_dataset"]
