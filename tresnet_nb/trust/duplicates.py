"""Duplicates and leakage in a run's data: exact copies (content hash of the file, or of the array) and near copies
(the mean of two cosines: of the model's pooled features, centred over the run's items, and of 8 x 8 greyscale
thumbnails; a perceptual hash where it agrees), within train and between train and the evaluation split, ranked over
all pairs; then the metric without the evaluation items that have a copy in train. Writes duplicates.csv and
duplicates.png."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..evaluation.scores import score
from .hashing import check_pixel_weight, content_hashes, signatures
from .items import Items, plain_dl, pooled_features, split_items
from .pairs import PairSettings, duplicate_pairs, leaked_items
from .plots import plot_pairs
from .run import AnalysedRun

DUPLICATE_COLUMNS = ["path_a", "split_a", "path_b", "split_b", "similarity", "kind"]
# after the contract's columns: the two cosines that make up ``similarity``, and the dHashes' distance in bits
DETAIL_COLUMNS = ["feature_similarity", "pixel_similarity", "hamming"]
NEAR = 0.99  # the similarity from which an evaluation item counts as having a copy in train


@dataclass
class Duplicates:
    """The ranked pairs (duplicates.csv's columns, plus the item indices), the evaluation items with a copy in
    train at ``near`` or above, and the run's metric without them."""

    table: pd.DataFrame
    leaked: np.ndarray  # indices into the evaluation split
    near: float
    metric_name: str
    metric_value: float
    metric_value_deduplicated: float | None


def originals(run: AnalysedRun, items: Items) -> list:
    """What to hash for each item: the original file, or the dataset's array as read (not the resized copy)."""
    part = run.data.ds[items.split]
    if part.paths is not None:
        return list(items.refs)
    return [part.images[int(r)] for r in items.refs]


def duplicate_step(
    run: AnalysedRun,
    near: float = NEAR,
    n_show: int = 18,
    max_pairs: int | None = 10_000,
    pixel_weight: float = 0.5,
) -> Duplicates:
    """Find the copies, write duplicates.csv (most similar first) and a gallery of the top pairs, and recompute the
    metric without evaluation items that have a copy (exact, or similarity >= ``near``) in train. ``similarity``
    is (1 - ``pixel_weight``) x the features' cosine + ``pixel_weight`` x the thumbnails' (``duplicate_pairs``)."""
    if not 0 < near <= 1:
        raise ValueError(f"NEAR is a similarity in (0, 1]; got {near!r} ({NEAR} is the default)")
    check_pixel_weight(pixel_weight)  # before the features are computed, not after
    with run.timed("duplicates"):
        return _duplicates(run, near, n_show, max_pairs, pixel_weight)


def centred_features(run: AnalysedRun) -> np.ndarray:
    """The model's pooled features of the training then the evaluation items, less their mean: pooled features
    after a ReLU share a large common part, which puts the raw cosine of almost any two items near 1; without it
    the cosine says little about copies."""
    data = run.data
    features = np.concatenate([pooled_features(run.model, plain_dl(data, "train"), "train features"),
                               pooled_features(run.model, plain_dl(data, "valid"), "evaluation features")])  # fmt: skip
    return features - features.mean(0, keepdims=True)


def _duplicates(run: AnalysedRun, near: float, n_show: int, max_pairs: int | None, pixel_weight: float) -> Duplicates:
    data = run.data
    train, valid = split_items(data, "train"), split_items(data, "valid")
    sources = originals(run, train) + originals(run, valid)
    splits = [train.split] * len(train) + [valid.split] * len(valid)
    perceptual, thumbnails = signatures(sources)
    settings = PairSettings(train=train.split, max_pairs=max_pairs, pixel_weight=pixel_weight)
    pairs = duplicate_pairs(centred_features(run), splits, content_hashes(sources), perceptual, thumbnails, settings)
    refs = list(train.refs) + list(valid.refs)
    table = pd.DataFrame(
        {
            "path_a": [refs[i] for i in pairs.index_a],
            "split_a": pairs.split_a,
            "path_b": [refs[i] for i in pairs.index_b],
            "split_b": pairs.split_b,
            "similarity": pairs.similarity.astype(float),
            "kind": pairs.kind,
            **{name: pairs[name] for name in DETAIL_COLUMNS},
            "index_a": pairs.index_a,
            "index_b": pairs.index_b,
        }
    )
    out = run.cfg.out
    table[DUPLICATE_COLUMNS + DETAIL_COLUMNS].to_csv(out / "duplicates.csv", index=False, float_format="%.6g")
    leaked = leaked_items(pairs, near, train=train.split) - len(train)  # evaluation items come after train's
    ev = run.evaluation
    keep = np.setdiff1d(np.arange(len(ev.targets)), leaked)
    dedup = None
    if len(keep):
        dedup = score(ev.probs[keep], ev.targets[keep], data.class_names, data.task, data.metric).metric_value
    print(
        f"{len(table)} pairs ranked ({int((table.kind == 'exact').sum())} exact); {len(leaked)} of {len(ev.targets)} "
        f"evaluation items have a copy in train (exact, or similarity >= {near}); {ev.metric_name} "
        f"{ev.metric_value:.4f} with them, {'n/a' if dedup is None else f'{dedup:.4f}'} without"
    )
    top = table.head(n_show)
    if len(top):

        def images(idx):
            return [
                data.images("train", [i])[0] if i < len(train) else data.images("valid", [i - len(train)])[0]
                for i in idx
            ]

        titles = [
            f"{k} {s:.3f}: {a} / {b}"
            for k, s, a, b in zip(top.kind, top.similarity, top.split_a, top.split_b, strict=True)
        ]
        plot_pairs(images(top.index_a), images(top.index_b), titles, out / "duplicates.png")
    return Duplicates(table, leaked, near, ev.metric_name, ev.metric_value, dedup)
