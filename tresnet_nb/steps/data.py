"""The data steps of a notebook run: open the dataset of a RunConfig as the model takes it (in memory for image
arrays, resized once into the cache for image files, by all ranks together), and what the notebooks show of it
(sample grids, items per class)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from fastai.data.core import DataLoaders
from torch import nn

from ..config import RunConfig
from ..data import Dataset, DatasetSpec, get_dataset
from ..data.arrays import array_dls, load_splits
from ..data.highres import decode_resized, prepare_file_dls
from ..model.load import data_config

TASK_METRIC = {"single-label": "accuracy", "multi-label": "mean_roc_auc"}  # when the data's task is not the spec's


def dataset_metric(spec: DatasetSpec, ds: Dataset) -> str:
    """The metric a run on ``ds`` reports: the dataset's, or the task's where the data's task is not the spec's (a
    folder or CSV with one 0/1 column per label is multi-label)."""
    return spec.metric if ds.task == spec.task else TASK_METRIC[ds.task]


@dataclass
class Data:
    """A dataset opened for a run: its table entry, the items, and DataLoaders at the run's size."""

    cfg: RunConfig
    spec: DatasetSpec
    ds: Dataset
    data_cfg: dict[str, Any]
    device: torch.device
    dls: DataLoaders = field(init=False)

    def __post_init__(self) -> None:
        self.dls = self.dls_for(self.cfg.img_size, self.cfg.batch_size)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.ds.class_names)

    @property
    def task(self) -> str:
        return self.ds.task

    @property
    def metric(self) -> str:
        return dataset_metric(self.spec, self.ds)

    def dls_for(self, size: int, batch_size: int) -> DataLoaders:
        """DataLoaders at ``size`` px and ``batch_size``: in memory for image arrays (capped and stratified by
        MAX_ITEMS), else the checked image files, resized once into the cache (the work shared by the ranks)."""
        data_cfg = data_config_at(self.data_cfg, size)
        if self.ds["train"].images is not None:
            splits = load_splits(self.cfg.dataset, self.cfg.data_root, self.cfg.max_items)
            return array_dls(splits, size, batch_size, data_cfg, self.device)
        # every rank at once: prepare_file_dls shares the screening and caching over them (not main_first)
        return prepare_file_dls(
            self.ds,
            self.spec.eval_split,
            size,
            batch_size,
            data_cfg,
            self.device,
            self.cfg.out,
            max_items=self.cfg.max_items,
            seed=self.cfg.seed,
            balanced=self.cfg.options.balanced,
        )

    def images(self, which: str, indices: np.ndarray | list[int]) -> np.ndarray:
        """uint8 (n, S, S, 3) images of the ``which`` ('train' or 'valid') loader's items at ``indices``."""
        dataset = (self.dls.train if which == "train" else self.dls.valid).dataset
        if hasattr(dataset, "images"):  # in memory
            return dataset.images[list(indices)].permute(0, 2, 3, 1).numpy()
        size = dataset.size
        return np.stack([np.asarray(decode_resized(dataset.split.paths[i], size, None)) for i in indices])

    def valid_image(self, i: int) -> np.ndarray:
        """The evaluation loader's item ``i`` as a uint8 (S, S, 3) image (for the prediction browser)."""
        return self.images("valid", [i])[0]


def data_config_at(data_cfg: dict[str, Any], size: int) -> dict[str, Any]:
    """``data_cfg`` (the model's preprocessing) with its input size set to ``size``."""
    return {**data_cfg, "input_size": (3, size, size)}


def open_data(cfg: RunConfig, model: nn.Module, device: torch.device, ds: Dataset | None = None) -> Data:
    """The dataset of ``cfg`` read from DATA_ROOT (unless ``ds`` is given) and opened for ``model``."""
    spec = get_dataset(cfg.dataset)
    if ds is None:
        ds = spec.read(cfg.data_root)
    return Data(cfg, spec, ds, data_config(model, cfg.img_size), device)


def samples(ds: Dataset, split: str = "train", n: int = 16, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images of ``split`` (one class after another, so the grid shows many classes) as uint8 (n, size,
    size[, 3]) arrays, with their labels."""
    part = ds[split]
    labels = part.labels
    if labels is not None and labels.ndim == 1:
        first = [np.flatnonzero(labels == c)[:n] for c in range(len(ds.class_names))]
        order = []
        for depth in range(n):
            order += [int(ids[depth]) for ids in first if depth < len(ids)]
        order = order[:n]
    else:
        order = list(range(min(n, len(part))))
    if part.images is not None:
        return part.images[order], (labels[order] if labels is not None else np.zeros(len(order), int))
    images = np.stack([np.asarray(part.load(i).resize((size, size))) for i in order])
    return images, (labels[order] if labels is not None else np.zeros(len(order), int))


def split_counts(ds: Dataset) -> dict[str, np.ndarray]:
    """Items per class in each labelled split of ``ds`` (label sums for multi-label)."""
    return {name: part.class_counts(len(ds.class_names)) for name, part in ds.splits.items() if part.labelled}
