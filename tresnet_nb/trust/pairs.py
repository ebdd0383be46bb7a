"""The ranked table of duplicate pairs within train and between train and the evaluation splits: candidates from
the nearest neighbours of the model's features and of small thumbnails (``neighbours``), equal content hashes and
close difference hashes (``hashing``), then scored and ranked; and the evaluation items that leak."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from .hashing import check_pixel_weight, duplicate_groups, hamming, hash_matches
from .neighbours import AnnParams, _matrix, nearest_neighbours


def _rows(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``x[rows]``, a view without a copy when ``rows`` is a run of consecutive indices (train first, as usual)."""
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1:
        return x[rows[0] : rows[-1] + 1]
    return x[rows]


def _cosines(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of rows ``a[i]`` and ``b[i]`` of ``x``, in blocks."""
    out = np.empty(len(a), np.float32)
    for s in range(0, len(a), 8192):
        xa, xb = x[a[s : s + 8192]], x[b[s : s + 8192]]
        norms = np.linalg.norm(xa, axis=1) * np.linalg.norm(xb, axis=1)
        out[s : s + 8192] = np.divide((xa * xb).sum(1), norms, out=np.zeros_like(norms), where=norms > 0)
    return out


@dataclass(frozen=True, kw_only=True)
class PairSettings:
    """How :func:`duplicate_pairs` searches, keeps and ranks pairs.

    ``train``: the split the others are compared with. ``k``: nearest train items searched for each item (with
    ``method`` and ``params`` of :func:`nearest_neighbours`, a progress bar with ``progress``). ``evaluation_pairs``:
    also pairs within and between the other splits. Kept: exact pairs, pairs with ``similarity`` >=
    ``min_similarity`` and pairs within ``max_hamming`` dHash bits; ranked exact first, then (with ``hash_first``)
    those within ``max_hamming`` bits, then by ``similarity``; the first ``max_pairs`` (None: all). With thumbnails,
    ``similarity`` is ``(1 - pixel_weight)`` x the features' cosine + ``pixel_weight`` x the thumbnails'."""

    train: str = "train"
    k: int = 5
    min_similarity: float = 0.9
    max_pairs: int | None = 10_000
    max_hamming: int = 4
    hash_first: bool = False
    evaluation_pairs: bool = False
    method: str = "auto"
    params: AnnParams | None = None
    progress: bool = True
    pixel_weight: float = 0.5

    def __post_init__(self) -> None:
        check_pixel_weight(self.pixel_weight)


def duplicate_pairs(
    features, splits, hashes=None, dhashes=None, thumbnails=None, settings: PairSettings | None = None, **overrides
) -> pd.DataFrame:
    """Pairs of likely duplicates among items with ``features`` (n, d) and ``splits`` (n names), within the train
    split and between it and each other split, as :class:`PairSettings` ``settings`` (or its fields given as
    keywords) say.

    Candidates (:func:`candidate_pairs`): each train item's and each evaluation item's ``k`` nearest train items by
    the cosine of ``features`` and, given ``thumbnails`` (n, t: ``signatures``), by the cosine of those too; pairs
    sharing a content hash (``hashes``); pairs whose ``dhashes`` are at most ``max_hamming`` bits apart. Columns
    ``index_a, split_a, index_b, split_b, similarity, kind`` (+ ``hamming`` with ``dhashes``; + ``feature_similarity``
    and ``pixel_similarity`` with ``thumbnails``): a copy scores high on both cosines, two look-alikes rarely do (a
    weak model puts same-class items close; small thumbnails of different photos can agree). kind "exact" for equal
    content hashes, else "near"; a is the train item of a pair across splits, else the lower index; each unordered
    pair once. Small low-texture images share dHashes: 1,022 pairs of 3,000 distinct Fashion-MNIST test images are
    within 4 bits, 71 have equal dHashes, so ``hash_first`` suits textured photos only."""
    s = replace(settings or PairSettings(), **overrides)
    x = _matrix(features, "features")
    splits = np.asarray(splits, dtype=str)
    thumbs = None if thumbnails is None else _matrix(thumbnails, "thumbnails")
    for name, given in (("splits", splits), ("hashes", hashes), ("dhashes", dhashes), ("thumbnails", thumbs)):
        if given is not None and len(given) != len(x):
            raise ValueError(f"{name} has {len(given)} entries but features have {len(x)} rows; give one per item")
    is_train = splits == s.train
    if not is_train.any():
        raise ValueError(f"no item is in split {s.train!r} (splits: {sorted(set(splits.tolist()))}); pass train=")
    dhashes = None if dhashes is None else np.asarray(dhashes, dtype=np.uint64)
    items = Items(x, splits, is_train, thumbs, hashes, dhashes)
    a, b, sim = candidate_pairs(items, s)
    table, exact, near_hash = score_pairs(items, a, b, sim, s)
    return rank_pairs(table, exact, near_hash, s)


@dataclass(frozen=True)
class Items:
    """The items' features (n, d), splits and whether each is a train item, with their optional signatures:
    thumbnails (n, t), content hashes and dHashes."""

    x: np.ndarray
    splits: np.ndarray
    is_train: np.ndarray
    thumbs: np.ndarray | None
    hashes: Sequence[str] | None
    dhashes: np.ndarray | None


def candidate_pairs(items: Items, s: PairSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, cosine of ``x``) of every candidate pair once: the nearest-neighbour searches over the features and
    the thumbnails, equal content hashes and close dHashes; the cosine is computed for pairs the feature search did
    not find."""
    x, is_train, thumbs, hashes, dhashes = items.x, items.is_train, items.thumbs, items.hashes, items.dhashes
    search = {"method": s.method, "params": s.params, "progress": s.progress}
    found = _searched_pairs(x, is_train, s.k, s.evaluation_pairs, search)
    if thumbs is not None:  # found by the thumbnails: their features' cosine is computed below
        found += [
            (a, b, np.full(len(a), np.nan, np.float32))
            for a, b, _ in _searched_pairs(thumbs, is_train, s.k, s.evaluation_pairs, search)
        ]
    if hashes is not None:
        for group in map(np.array, duplicate_groups([str(h) for h in hashes])):
            i, j = np.triu_indices(len(group), 1)
            found.append((group[i], group[j], np.full(len(i), np.nan, np.float32)))
    if dhashes is not None:
        close = hash_matches(dhashes, s.max_hamming)
        found.append((close[:, 0], close[:, 1], np.full(len(close), np.nan, np.float32)))
    a, b, sim = _one_per_pair(found, is_train, s.evaluation_pairs)
    missing = np.isnan(sim)  # pairs the feature searches did not find
    sim[missing] = _cosines(x, a[missing], b[missing])
    return a, b, sim


def score_pairs(items: Items, a: np.ndarray, b: np.ndarray, sim: np.ndarray, s: PairSettings):
    """The columns of the pairs (a, b) with the features' cosine ``sim``: the similarity (mixed with the thumbnails'
    cosine when given), kind, Hamming distance; and which pairs are exact copies and within ``max_hamming`` bits."""
    splits, thumbs, hashes, dhashes = items.splits, items.thumbs, items.hashes, items.dhashes
    held = np.asarray(hashes, dtype=object) if hashes is not None else None
    exact = held[a] == held[b] if held is not None else np.zeros(len(a), bool)
    table = {"index_a": a, "split_a": splits[a], "index_b": b, "split_b": splits[b], "similarity": sim}
    if thumbs is not None:
        pixel = _cosines(thumbs, a, b)
        table["similarity"] = ((1 - s.pixel_weight) * sim + s.pixel_weight * pixel).astype(np.float32)
    table["kind"] = np.where(exact, "exact", "near")
    near_hash = np.zeros(len(a), bool)
    if dhashes is not None:
        table["hamming"] = hamming(dhashes[a], dhashes[b])
        near_hash = table["hamming"] <= s.max_hamming
    if thumbs is not None:
        table["feature_similarity"], table["pixel_similarity"] = sim, pixel
    return table, exact, near_hash


def rank_pairs(table: dict, exact: np.ndarray, near_hash: np.ndarray, s: PairSettings) -> pd.DataFrame:
    """The pairs kept (exact, within ``max_hamming`` bits, or ``similarity`` >= ``min_similarity``), ranked exact
    first, then (``hash_first``) close dHashes, then by similarity; the first ``max_pairs``."""
    keep = exact | near_hash | (table["similarity"] >= s.min_similarity)
    df = pd.DataFrame({key: value[keep] for key, value in table.items()})
    df["_rank"] = exact[keep].astype(int) * 2 + (near_hash[keep] & s.hash_first)
    df = df.sort_values(["_rank", "similarity", "index_a", "index_b"], ascending=[False, False, True, True])
    df = df.drop(columns="_rank").reset_index(drop=True)
    return df if s.max_pairs is None else df.head(s.max_pairs)


def _searched_pairs(x: np.ndarray, is_train: np.ndarray, k: int, evaluation_pairs: bool, search: dict) -> list:
    """(a, b, cosine) arrays of each train item's and each evaluation item's ``k`` nearest train items (and with
    ``evaluation_pairs``, each evaluation item's nearest evaluation items)."""
    tr, ev = np.flatnonzero(is_train), np.flatnonzero(~is_train)
    found = []
    if len(tr) > 1:
        sims, idx = nearest_neighbours(_rows(x, tr), min(k, len(tr) - 1), **search)
        found.append((np.repeat(tr, idx.shape[1]), tr[idx.ravel()], sims.ravel()))
    if len(ev):
        sims, idx = nearest_neighbours(_rows(x, tr), min(k, len(tr)), queries=_rows(x, ev), **search)
        found.append((tr[idx.ravel()], np.repeat(ev, idx.shape[1]), sims.ravel()))
    if evaluation_pairs and len(ev) > 1:
        sims, idx = nearest_neighbours(_rows(x, ev), min(k, len(ev) - 1), **search)
        found.append((np.repeat(ev, idx.shape[1]), ev[idx.ravel()], sims.ravel()))
    return found


def _one_per_pair(found: list, is_train: np.ndarray, evaluation_pairs: bool):
    """The pairs of ``found`` oriented (the train item first across splits, else the lower index), in scope (a train
    item in each, unless ``evaluation_pairs``), each once (a searched cosine kept over a hash match's NaN)."""
    a, b, sim = (np.concatenate([f[i] for f in found]) if found else np.zeros(0) for i in range(3))
    a, b, sim = a.astype(np.int64), b.astype(np.int64), sim.astype(np.float32)
    swap = (~is_train[a] & is_train[b]) | ((is_train[a] == is_train[b]) & (a > b))
    a, b = np.where(swap, b, a), np.where(swap, a, b)
    keep = (a != b) & (is_train[a] | evaluation_pairs)
    a, b, sim = a[keep], b[keep], sim[keep]
    order = np.lexsort((np.isnan(sim), b, a))
    a, b, sim = a[order], b[order], sim[order]
    first = np.ones(len(a), bool)
    first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    return a[first], b[first], sim[first]


def leaked_items(
    pairs: pd.DataFrame, threshold: float = 0.95, train: str = "train", max_hamming: int | None = None
) -> np.ndarray:
    """Sorted indices of the evaluation items that ``pairs`` (``duplicate_pairs``) pairs with a ``train`` item by an
    exact copy, a cosine of at least ``threshold``, or (given ``max_hamming`` and a ``hamming`` column) a perceptual
    hash at most ``max_hamming`` bits away: the items to leave out for a metric without leaks."""
    cross = (pairs["split_a"] == train) & (pairs["split_b"] != train)
    hit = (pairs["kind"] == "exact") | (pairs["similarity"] >= threshold)
    if max_hamming is not None:
        if "hamming" not in pairs:
            raise ValueError("max_hamming needs a 'hamming' column: give duplicate_pairs the dhashes")
        hit |= pairs["hamming"] <= max_hamming
    return np.unique(pairs.loc[cross & hit, "index_b"].to_numpy(np.int64))
