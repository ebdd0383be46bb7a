"""In-memory image arrays (small datasets such as Fashion-MNIST) as fastai DataLoaders at the run's size."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.data.transforms import ItemTransform  # fasttransform's in fastai 2.8, re-exported

from . import get_dataset
from .augment import PER_IMAGE, BatchAugment, ImagePolicy, check_augment


@dataclass(frozen=True)
class ArraySplits:
    """Train and evaluation images (N, H, W[, C] uint8) with integer labels, and the class names."""

    train_x: np.ndarray
    train_y: np.ndarray
    valid_x: np.ndarray
    valid_y: np.ndarray
    class_names: tuple[str, ...]

    def counts(self) -> dict[str, np.ndarray]:
        """Items per class in each split."""
        n = len(self.class_names)
        return {"train": np.bincount(self.train_y, minlength=n), "valid": np.bincount(self.valid_y, minlength=n)}


def stratified_head(labels: np.ndarray, max_items: int | None, n_classes: int) -> np.ndarray:
    """Indices of at most ``max_items`` items, the first of each class in turn (balanced), in file order.
    Multi-label (an (N, C) 0/1 ``labels``): the first not yet chosen item with a positive in each column in turn,
    so every column with positives keeps one while ``max_items`` >= the number of such columns."""
    if max_items is None or max_items >= len(labels):
        return np.arange(len(labels))
    members = labels == 1 if labels.ndim == 2 else labels[:, None] == np.arange(n_classes)
    per_class = [deque(np.flatnonzero(members[:, c]).tolist()) for c in range(n_classes)]
    chosen: dict[int, None] = {}  # insertion-ordered set: an item with several labels counts once
    while len(chosen) < max_items and any(per_class):
        for queue in per_class:
            while queue and queue[0] in chosen:
                queue.popleft()
            if queue and len(chosen) < max_items:
                chosen[queue.popleft()] = None
    return np.sort(np.array(list(chosen), dtype=np.int64))


def load_splits(dataset: str, root: str | Path | None = None, max_items: int | None = None) -> ArraySplits:
    """Read in-memory ``dataset``'s train split and the split its metric is reported on, capped at ``max_items``."""
    spec = get_dataset(dataset)
    ds = spec.read(root)
    train, valid = ds["train"], ds[spec.eval_split]
    if train.images is None or valid.images is None:
        raise ValueError(f"{dataset} is a dataset of image files, not arrays; use tresnet_nb.data.highres.file_dls")
    n = len(ds.class_names)
    keep_train = stratified_head(train.labels, max_items, n)
    keep_valid = stratified_head(valid.labels, None if max_items is None else max(n, max_items // 2), n)
    return ArraySplits(
        train.images[keep_train],
        train.labels[keep_train],
        valid.images[keep_valid],
        valid.labels[keep_valid],
        ds.class_names,
    )


def to_tensor_images(images: np.ndarray, img_size: int) -> torch.Tensor:
    """uint8 (N, H, W) grey or (N, H, W, 3) colour images as a (N, 3, S, S) uint8 tensor resized once to ``img_size``."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x.unsqueeze(1).expand(-1, 3, -1, -1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    out = torch.empty((x.shape[0], 3, img_size, img_size), dtype=torch.uint8)
    for start in range(0, x.shape[0], 512):  # chunks keep the float copy small
        chunk = x[start : start + 512].float()
        resized = F.interpolate(chunk, size=(img_size, img_size), mode="bilinear", align_corners=False, antialias=True)
        out[start : start + 512] = resized.round().clamp(0, 255).to(torch.uint8)
    return out


class TensorItems(torch.utils.data.Dataset):
    """Items ``(image uint8 CxHxW, label)`` from two tensors."""

    def __init__(self, images: torch.Tensor, labels: np.ndarray) -> None:
        self.images, self.labels = images, torch.as_tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]


class Preprocess(ItemTransform):
    """Batch transform: uint8 to float in [0, 1], the model's mean/std, and (train only) augmentation: a
    :class:`tresnet_nb.data.augment.BatchAugment` policy (flip by default; build_learner sets the recipe's), an optional
    small shift, and random erasing after normalisation."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], augment: bool, max_shift: float = 0.1) -> None:
        super().__init__()
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.augment, self.max_shift = augment, max_shift
        self.aug = BatchAugment("flip") if augment else None

    def encodes(self, batch):  # untyped: fasttransform dispatches on annotations
        x, *y = batch  # images, then the labels (none for an unlabelled test set)
        x = x.float().div_(255)
        if self.aug is not None:
            x = self._shift(self.aug.images(x))
        x = x.sub_(self.mean.to(x.device)).div_(self.std.to(x.device))  # in place: x is this step's own tensor
        if self.aug is not None:
            x = self.aug.erase(x, inplace=True)
        return (x, *y)

    def _shift(self, x: torch.Tensor) -> torch.Tensor:
        if self.max_shift <= 0:
            return x
        # a random translation of up to max_shift of the side, zero padded (the classic small-image augmentation)
        h, w = x.shape[-2:]
        pad = max(1, int(round(h * self.max_shift)))
        padded = F.pad(x, (pad, pad, pad, pad))
        dy, dx = torch.randint(0, 2 * pad + 1, (2,)).tolist()
        return padded[:, :, dy : dy + h, dx : dx + w]


def array_dls(
    splits: ArraySplits,
    img_size: int,
    batch_size: int,
    data_cfg: dict[str, Any],
    device: torch.device,
    max_shift: float = 0.0,
) -> DataLoaders:
    """fastai DataLoaders over ``splits`` at ``img_size``, normalised as the model's ``data_cfg`` says; training
    batches are flipped at random and, if ``max_shift`` > 0, shifted by up to that fraction of the side."""
    train = TensorItems(to_tensor_images(splits.train_x, img_size), splits.train_y)
    valid = TensorItems(to_tensor_images(splits.valid_x, img_size), splits.valid_y)
    dls = tensor_dls(train, valid, batch_size, data_cfg, device, max_shift)
    dls.vocab = list(splits.class_names)
    return dls


def tensor_dls(
    train: TensorItems,
    valid: TensorItems,
    batch_size: int,
    data_cfg: dict[str, Any],
    device: torch.device,
    max_shift: float = 0.0,
) -> DataLoaders:
    """fastai DataLoaders over images already at the run's size (see :func:`array_dls`): training batches shuffled
    and augmented, evaluation batches in order."""
    mean, std = tuple(data_cfg["mean"]), tuple(data_cfg["std"])
    bs = min(batch_size, len(train))
    train_dl = DataLoader(
        train,
        bs=bs,
        shuffle=True,
        drop_last=len(train) >= 2 * bs,
        num_workers=0,
        device=device,
        after_batch=Preprocess(mean, std, augment=True, max_shift=max_shift),
    )
    valid_dl = DataLoader(
        valid, bs=batch_size * 2, shuffle=False, num_workers=0, device=device, after_batch=Preprocess(mean, std, False)
    )
    return DataLoaders(train_dl, valid_dl, device=device)


def _preprocess_steps(dls: DataLoaders) -> list:
    """The tresnet_nb Preprocess steps of the training loader of ``dls`` (none for loaders built otherwise)."""
    steps = getattr(dls.train.after_batch, "fs", [dls.train.after_batch])  # a fastai Pipeline, or the bare transform
    return [t for t in steps if isinstance(t, Preprocess)]


def set_augment(dls: DataLoaders, policy: str, erasing: float = 0.0, flip: bool = True) -> None:
    """Switch the training loader of ``dls`` (built by tresnet_nb's array or file loaders) to ``policy`` (with its
    left-right flips, or without them: ``flip=False``). Over image files (:class:`~tresnet_nb.data.highres.FileItems`)
    the per-image operations of autoaugment/randaugment run in the loader's workers, on uint8 images before
    collation (benchmarks/bench_input.py); flips and erasing stay batched on the device."""
    check_augment(policy, erasing)
    found = _preprocess_steps(dls)
    if not found:
        raise ValueError(
            "These DataLoaders have no tresnet_nb Preprocess step, so the recipe's augmentation cannot be set. Build "
            "them with tresnet_nb.array_dls or tresnet_nb.data.highres.file_dls, or pass augment='as_built' to "
            "build_learner to keep your own."
        )
    items = dls.train.dataset
    if hasattr(items, "policy"):  # FileItems: the per-image policies run in the loader's workers
        items.policy = ImagePolicy(policy, flip) if policy in PER_IMAGE else None
    in_workers = getattr(items, "policy", None) is not None
    for t in found:
        t.aug = BatchAugment(policy, erasing, flip, in_workers=in_workers)


def augment_of(dls: DataLoaders) -> tuple[str, float, bool]:
    """The (policy, erasing, flip) the training loader of ``dls`` applies ('as_built' if it has no tresnet_nb
    Preprocess), to carry it over to the loaders of a progressive phase."""
    found = [t.aug for t in _preprocess_steps(dls) if t.aug is not None]
    return (found[0].policy, found[0].erasing, found[0].flip) if found else ("as_built", 0.0, True)
