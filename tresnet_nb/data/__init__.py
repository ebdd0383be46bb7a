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

from ..hints import did_you_mean
from ..paper import PaperResult, transfer
from .base import Dataset, DatasetError, Split


@dataclass(frozen=True, kw_only=True)
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


# fmt: off
DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="fashion_mnist", module_name="fashion_mnist", task="single-label", metric="accuracy",
            eval_split="test",
            description="Fashion-MNIST idx files; DATA_ROOT=None reads the balanced subset embedded in data/",
        ),
        DatasetSpec(
            name="cifar10", module_name="cifar", task="single-label", metric="accuracy", eval_split="test",
            description="CIFAR-10, python version (pickled batches)", options={"variant": "cifar10"},
        ),
        DatasetSpec(
            name="cifar100", module_name="cifar", task="single-label", metric="accuracy", eval_split="test",
            description="CIFAR-100, python version (pickled batches)", options={"variant": "cifar100"},
        ),
        DatasetSpec(
            name="stanford_cars", module_name="stanford_cars", task="single-label", metric="accuracy",
            eval_split="test",
            description="Stanford Cars, devkit layout (.mat annotations), 196 classes, bounding boxes",
        ),
        DatasetSpec(
            name="flowers102", module_name="flowers102", task="single-label", metric="accuracy", eval_split="test",
            description="Oxford Flowers-102 (jpg/, imagelabels.mat, setid.mat)",
        ),
        DatasetSpec(
            name="herbarium2020", module_name="herbarium2020", task="single-label", metric="macro_f1",
            eval_split="valid",
            description="Herbarium 2020 (FGVC7, Kaggle): COCO-like metadata.json, 32,093 species, long-tailed",
        ),
        DatasetSpec(
            name="plant_pathology", module_name="plant_pathology", task="single-label", metric="mean_roc_auc",
            eval_split="valid",
            description="Plant Pathology 2020 (FGVC7, Kaggle): images/ and one-hot train.csv (one class per row)",
        ),
        DatasetSpec(
            name="folder", module_name="folder", task="single-label", metric="accuracy", eval_split="valid",
            description="your images: one sub-folder per class (optionally under train/ and valid/)",
            flips_keep_class=False,
        ),
        DatasetSpec(
            name="csv", module_name="table", task="single-label", metric="accuracy", eval_split="valid",
            description="your images listed in a CSV: path,label or path plus one 0/1 column per label (multi-label)",
            flips_keep_class=False,
        ),
    )
}
# fmt: on


def get_dataset(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` called ``name``."""
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}{did_you_mean(name, DATASETS)}; choose one of {sorted(DATASETS)}")
    return DATASETS[name]


__all__ = ["DATASETS", "Dataset", "DatasetError", "DatasetSpec", "Split", "get_dataset"]
