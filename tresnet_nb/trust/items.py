"""The items a run trained and was scored on, as the analysis after training sees them: what to call each one in
the output tables (the image file's absolute path, or the item's index in its split for array datasets), loaders
over them without augmentation, loaders for one fold of a cross-fit, and the model's pooled features."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from fastai.data.core import DataLoaders
from fastprogress.fastprogress import progress_bar
from torch import nn

from ..data.arrays import TensorItems, stratified_head, tensor_dls
from ..data.highres import FileItems, file_dls
from ..steps.data import Data, data_config_at


@dataclass(frozen=True)
class Items:
    """One split of a run as the loaders hold it: ``refs`` names each item (absolute path, or the index in the
    dataset's split for arrays), ``labels`` (class indices, or a 0/1 matrix for multi-label), ``split`` its name."""

    split: str
    refs: tuple[str, ...]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.refs)


def loader_items(data: Data, which: str) -> FileItems | TensorItems:
    """The item dataset behind the run's ``which`` ('train' or 'valid') loader."""
    if which not in ("train", "valid"):
        raise ValueError(f"which must be 'train' or 'valid', not {which!r}")
    return (data.dls.train if which == "train" else data.dls.valid).dataset


def split_items(data: Data, which: str) -> Items:
    """The ``which`` loader's items with their names: a file's absolute path (found by item id in the dataset as
    read, since the loaders hold the resized copies in the cache), or for arrays the item's index in the dataset's
    split (after MAX_ITEMS kept the first of each class)."""
    items = loader_items(data, which)
    name = "train" if which == "train" else data.spec.eval_split
    part = data.ds[name]
    labels = np.asarray(items.labels.numpy() if items.labels is not None else np.zeros(len(items), np.int64))
    if isinstance(items, FileItems):
        where = dict(zip(part.ids, part.paths, strict=True))
        missing = [i for i in items.split.ids if i not in where]
        if missing:
            raise ValueError(f"items {missing[:3]} of the {which} loader are not in the dataset's {name!r} split")
        refs = tuple(str(Path(where[i]).resolve()) for i in items.split.ids)
        return Items(name, refs, labels)
    n = len(data.class_names)
    cap = (
        data.cfg.max_items
        if which == "train"
        else (None if data.cfg.max_items is None else max(n, data.cfg.max_items // 2))
    )
    keep = stratified_head(part.labels, cap, n)
    if len(keep) != len(items):
        raise ValueError(
            f"{len(items)} items in the {which} loader but {len(keep)} kept from {name!r}: not this run's data"
        )
    return Items(name, tuple(str(int(i)) for i in keep), labels)


def plain_dl(data: Data, which: str):
    """A loader over the ``which`` items in order, without augmentation (the evaluation loader's preprocessing)."""
    items = loader_items(data, which)
    if isinstance(items, FileItems):  # a fresh one: the training items may carry a per-image augmentation policy
        items = FileItems(items.split, items.size, items.crop, items.draft)
    return data.dls.valid.new(dataset=items, shuffle=False, drop_last=False)


def fold_dls(data: Data, keep: np.ndarray, held: np.ndarray) -> DataLoaders:
    """DataLoaders that train on the run's training items at ``keep`` and evaluate on those at ``held`` (one fold
    of a cross-fit), built as the run's own are: same size, batch size, preprocessing and balancing."""
    items = loader_items(data, "train")
    cfg = data.cfg
    data_cfg = data_config_at(data.data_cfg, items.size if isinstance(items, FileItems) else cfg.img_size)
    if isinstance(items, FileItems):
        return file_dls(
            items.split.subset(keep),
            items.split.subset(held),
            items.size,
            cfg.batch_size,
            data_cfg,
            data.device,
            balanced=cfg.options.balanced,
            seed=cfg.seed,
        )
    labels = items.labels.numpy()
    train = TensorItems(items.images[torch.as_tensor(keep)], labels[keep])
    valid = TensorItems(items.images[torch.as_tensor(held)], labels[held])
    return tensor_dls(train, valid, cfg.batch_size, data_cfg, data.device)


@torch.no_grad()
def pooled_features(model: nn.Module, dl, label: str = "features") -> np.ndarray:
    """The model's pooled features (timm's ``forward_head(pre_logits=True)``: what the classifier sees) of every
    batch of ``dl``, float32 (items, features), with a progress bar."""
    was_training = model.training
    model.eval()
    out = []
    try:
        device = next(model.parameters()).device
        bar = progress_bar(dl, leave=False)
        bar.comment = label
        for batch in bar:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            x = x.to(device)
            if x.dtype == torch.uint8:  # a loader without normalisation would be a silent mistake
                raise ValueError("the loader yields uint8 images; use one with the model's preprocessing")
            out.append(model.forward_head(model.forward_features(x.float()), pre_logits=True).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, model.num_features), np.float32)
