"""The in-memory shape of every dataset: splits of items (image path or array, label or label vector).

Readers (one module per on-disk format) return a :class:`Dataset`; everything downstream (verification,
the high-resolution cache, DataLoaders, metrics, submissions) works on this shape only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

TASKS = ("single-label", "multi-label")


class DatasetError(ValueError):
    """A dataset on disk does not have the layout or content its format requires; the message names the item."""


@dataclass(frozen=True)
class Split:
    """One split: item ids, labels (None when unlabelled), and either image paths or an image array.

    Single-label labels are int64 class indices (0-based); multi-label labels are a float32 (N, C) 0/1 matrix.
    ``boxes`` optionally holds one (x1, y1, x2, y2) crop box per item, in pixels (Stanford Cars).
    """

    ids: tuple[str, ...]
    labels: np.ndarray | None
    paths: tuple[Path, ...] | None = None
    images: np.ndarray | None = None  # (N, H, W) grey or (N, H, W, 3) RGB, uint8
    boxes: np.ndarray | None = None

    def __post_init__(self) -> None:
        if (self.paths is None) == (self.images is None):
            raise ValueError("a Split holds either paths or images")
        n = len(self.ids)
        for name in ("labels", "paths", "images", "boxes"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"Split has {n} ids but {len(value)} {name}")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    def load(self, i: int, crop: bool = False) -> Image.Image:
        """Item ``i`` as an RGB PIL image (cropped to its box when ``crop`` and the split has boxes)."""
        if self.images is not None:
            img = Image.fromarray(self.images[i]).convert("RGB")
        else:
            with Image.open(self.paths[i]) as f:
                img = f.convert("RGB")
        if crop and self.boxes is not None:
            x1, y1, x2, y2 = (int(v) for v in self.boxes[i])
            img = img.crop((x1, y1, x2, y2))
        return img

    def subset(self, index: Sequence[int] | np.ndarray) -> Split:
        """The items at ``index``, in that order."""
        index = np.asarray(index, dtype=np.int64)
        pick = lambda seq: None if seq is None else tuple(seq[i] for i in index)  # noqa: E731
        return Split(
            ids=pick(self.ids),
            labels=None if self.labels is None else self.labels[index],
            paths=pick(self.paths),
            images=None if self.images is None else self.images[index],
            boxes=None if self.boxes is None else self.boxes[index],
        )

    def class_counts(self, n_classes: int) -> np.ndarray:
        """Items per class (positives per label for multi-label)."""
        if self.labels is None:
            return np.zeros(n_classes, dtype=np.int64)
        if self.labels.ndim == 2:
            return self.labels.sum(0).astype(np.int64)
        return np.bincount(self.labels, minlength=n_classes)


@dataclass(frozen=True)
class Dataset:
    """A dataset read from disk: its class names, task and named splits ('train', 'valid', 'test')."""

    name: str
    class_names: tuple[str, ...]
    task: str
    splits: dict[str, Split]
    notes: tuple[str, ...] = field(default_factory=tuple)  # e.g. how the holdout was drawn
    meta: dict[str, Any] = field(default_factory=dict)  # format-specific facts, e.g. Herbarium's category ids

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task {self.task!r} is not one of {TASKS}")
        n = len(self.class_names)
        for split_name, split in self.splits.items():
            check_labels(split.labels, n, self.task, f"{self.name} {split_name}", split.ids)

    def summary(self) -> str:
        """The layout in a few lines: task, classes, and the items (labelled or not) of each split, with notes."""
        names = ", ".join(self.class_names[:6]) + (", ..." if len(self.class_names) > 6 else "")
        lines = [f"{self.name}: {self.task}, {len(self.class_names)} classes ({names})"]
        for split_name, split in self.splits.items():
            kind = "images in memory" if split.images is not None else "image files"
            lines.append(f"  {split_name}: {len(split)} {kind}{'' if split.labelled else ', unlabelled'}")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def __getitem__(self, split: str) -> Split:
        if split not in self.splits:
            raise KeyError(f"{self.name} has no split {split!r}; it has {sorted(self.splits)}")
        return self.splits[split]


def check_labels(labels: np.ndarray | None, n_classes: int, task: str, where: str, ids: Sequence[str]) -> None:
    """Raise :class:`DatasetError` naming the first item whose label is out of range or not a 0/1 vector."""
    if labels is None:
        return
    if task == "single-label":
        bad = np.flatnonzero((labels < 0) | (labels >= n_classes))
        if len(bad):
            i = int(bad[0])
            raise DatasetError(
                f"{where}: item {ids[i]!r} has label {int(labels[i])}, outside 0..{n_classes - 1} "
                f"({len(bad)} such items)"
            )
    else:
        if labels.ndim != 2 or labels.shape[1] != n_classes:
            raise DatasetError(f"{where}: multi-label matrix has shape {labels.shape}, expected (N, {n_classes})")
        bad = np.flatnonzero(~np.isin(labels, (0, 1)).all(1))
        if len(bad):
            i = int(bad[0])
            raise DatasetError(f"{where}: item {ids[i]!r} has label values {labels[i].tolist()}, expected 0 or 1")


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (train, holdout) with about ``fraction`` of each class held out (at least one item of
    every class with two or more items; classes with one item stay in train). Multi-label: stratified on the
    label combination."""
    if not 0 < fraction < 1:
        raise ValueError(f"holdout fraction must be between 0 and 1, not {fraction!r}")
    keys = labels if labels.ndim == 1 else np.unique(labels, axis=0, return_inverse=True)[1].reshape(-1)
    rng = np.random.default_rng(seed)
    held = []
    # each class's members in index order, from one stable sort (a scan per class is O(classes x items): seconds
    # for Herbarium's 32,093 classes over a million items)
    order = np.argsort(keys, kind="stable")
    _, starts, counts = np.unique(keys[order], return_index=True, return_counts=True)
    for start, count in zip(starts.tolist(), counts.tolist(), strict=True):
        members = order[start : start + count]
        if len(members) < 2:
            continue
        n = max(1, int(round(fraction * len(members))))
        held.extend(rng.choice(members, size=n, replace=False).tolist())
    held_arr = np.sort(np.array(held, dtype=np.int64))
    train = np.setdiff1d(np.arange(len(keys)), held_arr)
    return train, held_arr


def draw_holdout(train: Split, fraction: float, seed: int) -> tuple[Split, Split, str]:
    """Split ``train`` into (train, valid) holding out ``fraction`` of each class (seed ``seed``), and a note."""
    keep, held = stratified_holdout(train.labels, fraction, seed)
    keys = train.labels if train.labels.ndim == 1 else np.unique(train.labels, axis=0, return_inverse=True)[1]
    singles = int((np.unique(np.asarray(keys).reshape(-1), return_counts=True)[1] == 1).sum())
    one, kind = ("class", "classes") if train.labels.ndim == 1 else ("label combination", "label combinations")
    note = (
        f"valid: {len(held)} of {len(train)} training items held out, stratified by {one} "
        f"(fraction {fraction}, seed {seed}); {singles} {kind} with a single item stay in train only"
    )
    return train.subset(keep), train.subset(held), note


def class_balanced_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-item sampling weights, inversely proportional to the frequency of each item's class in ``labels`` (of
    ``n_classes``), summing to 1: every class present is drawn equally often."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels range over {labels.min()}..{labels.max()}, outside the classes 0..{n_classes - 1}")
    # for torch.utils.data.WeightedRandomSampler(weights, num_samples=len(weights), replacement=True)
    weights = 1.0 / np.bincount(labels, minlength=n_classes)[labels]
    return weights / weights.sum()


def flag(problems: list[str] | None, message: str) -> None:
    """Raise a :class:`DatasetError` with ``message``; or, when a reader collects its ``problems`` (``data verify``:
    one pass reports every bad row and missing file), add ``message`` to them, the caller leaving the item out."""
    if problems is None:
        raise DatasetError(message)
    problems.append(message)


def require(path: Path, what: str, layout: str) -> Path:
    """Return ``path`` if it exists, else raise a :class:`DatasetError` naming it and the expected ``layout``."""
    if not path.exists():
        raise DatasetError(f"{what} not found: {str(path)!r}. Expected layout: {layout}")
    return path
