"""Duplicates and leaks: content hashes (a SHA-256 of the file's bytes, or of an in-memory image's array with its shape
and dtype) for exact copies; for near ones, a difference hash (dHash) compared in Hamming distance and a small
greyscale thumbnail compared by cosine (both from one decode of each image); and the ranked table of duplicate pairs
within train and between train and the evaluation splits, which adds the nearest neighbours of the model's features
(``neighbours``)."""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from fastprogress.fastprogress import progress_bar
from PIL import Image

from .neighbours import AnnParams, _matrix, nearest_neighbours

ImageLike = str | os.PathLike | np.ndarray | Image.Image
CHUNK = 1 << 20  # bytes read at a time, so that a large file is never held whole
THUMBNAIL = 8  # pixels a side of the thumbnail compared by cosine
IMAGES_PROGRESS_FROM = 2_000  # images from which decoding them shows a progress bar


def content_hash(item: ImageLike) -> str:
    """SHA-256 hex digest of ``item``: a file's bytes, or an array's dtype, shape and C-ordered bytes (a PIL image
    is hashed as its array). Byte-identical files, and arrays equal in dtype, shape and values, hash alike."""
    if isinstance(item, str | os.PathLike):
        digest = hashlib.sha256()
        with open(item, "rb") as f:
            while block := f.read(CHUNK):
                digest.update(block)
        return digest.hexdigest()
    if isinstance(item, Image.Image):
        item = np.asarray(item)
    if not isinstance(item, np.ndarray):
        raise TypeError(f"content_hash takes a path, a numpy array or a PIL image, not {type(item).__name__}")
    # dtype and shape go first, so that a (2, 8) uint8 array and a (4, 4) one with the same bytes differ
    digest = hashlib.sha256(f"{item.dtype.str}{item.shape}".encode())
    digest.update(np.ascontiguousarray(item).tobytes())
    return digest.hexdigest()


def content_hashes(items: Iterable[ImageLike]) -> list[str]:
    """``content_hash`` of each of ``items``, in order."""
    return [content_hash(item) for item in items]


def duplicate_groups(hashes: Sequence[str]) -> list[list[int]]:
    """Indices of ``hashes`` that share a hash, one sorted group per hash held by two or more items, groups in the
    order of their first index."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(hashes):
        groups[h].append(i)
    return [g for g in groups.values() if len(g) > 1]


def _grey(item: ImageLike) -> Image.Image:
    """``item`` as an 8-bit greyscale PIL image; arrays must be uint8 (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)."""
    if isinstance(item, str | os.PathLike):
        with Image.open(Path(item)) as image:
            return image.convert("L")
    if isinstance(item, Image.Image):
        return item.convert("L")
    if not isinstance(item, np.ndarray):
        raise TypeError(f"dhash takes a path, a numpy array or a PIL image, not {type(item).__name__}")
    if item.dtype != np.uint8 or not (item.ndim == 2 or (item.ndim == 3 and item.shape[2] in (1, 3, 4))):
        raise ValueError(
            f"dhash takes uint8 arrays of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), not {item.dtype} "
            f"{item.shape}; convert first (e.g. (x * 255).round().astype(np.uint8) for [0, 1] floats, or move the "
            "channel axis last)"
        )
    return Image.fromarray(item[..., 0] if item.ndim == 3 and item.shape[2] == 1 else item).convert("L")


def _dhash_of_grey(grey: Image.Image, size: int) -> int:
    # BOX averages every source pixel into its cell, so a resized copy lands on nearly the same cells
    pixels = np.asarray(grey.resize((size + 1, size), Image.Resampling.BOX), dtype=np.int16)
    bits = (pixels[:, :-1] > pixels[:, 1:]).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def _thumbnail_of_grey(grey: Image.Image, size: int) -> np.ndarray:
    pixels = np.asarray(grey.resize((size, size), Image.Resampling.BOX), dtype=np.float32).ravel()
    pixels -= pixels.mean()
    norm = float(np.linalg.norm(pixels))
    return pixels / norm if norm > 0 else pixels


def check_pixel_weight(pixel_weight: float) -> None:
    """ValueError unless ``pixel_weight`` (the thumbnails' share of a pair's similarity) is in [0, 1]."""
    if not 0 <= pixel_weight <= 1:
        raise ValueError(f"pixel_weight is a weight in [0, 1], not {pixel_weight!r} (0: features only; 0.5 usual)")


def _check_size(size: int, low: int, high: int, why: str) -> None:
    if not low <= size <= high:
        raise ValueError(f"size must be {low}-{high} ({why}), not {size}")


def dhash(item: ImageLike, size: int = 8) -> int:
    """The difference hash of ``item`` (a path, uint8 array or PIL image): greyscale, area-resized to ``size`` + 1
    columns by ``size`` rows, one bit per pair of horizontal neighbours (1 where the left is brighter), read row by
    row into a ``size`` x ``size``-bit integer (64 bits by default). Resizing and recompression move few bits."""
    _check_size(size, 2, 8, "at most 64 bits, what dhashes and hamming hold")
    return _dhash_of_grey(_grey(item), size)


def dhashes(items: Iterable[ImageLike]) -> np.ndarray:
    """``dhash`` of each of ``items`` as a uint64 array."""
    return np.array([dhash(item) for item in items], dtype=np.uint64)


def thumbnail(item: ImageLike, size: int = THUMBNAIL) -> np.ndarray:
    """``item`` (a path, uint8 array or PIL image) in greyscale, area-resized to ``size`` x ``size``, its mean removed
    and scaled to unit length: a float32 vector of ``size``**2 whose dot product with another is their cosine (0 for
    a flat image). At 8 x 8 a copy enlarged and saved as JPEG keeps a cosine above 0.99 with its original, where
    finer thumbnails follow the compression noise (Fashion-MNIST, 28 -> 36 px, quality 75: lowest cosine of 30 such
    copies 0.997 at 8 x 8, 0.954 at 16 x 16, on ``benchmarks/bench_error_analysis.py``'s planted folder)."""
    _check_size(size, 2, 64, "pixels a side")
    return _thumbnail_of_grey(_grey(item), size)


def signatures(
    items: Sequence[ImageLike], size: int = 8, thumbnail_size: int = THUMBNAIL, progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """``dhashes`` (uint64, n) and ``thumbnail`` vectors (float32, n x ``thumbnail_size``**2) of ``items``, each
    image decoded once."""
    _check_size(size, 2, 8, "at most 64 bits, what dhashes and hamming hold")
    _check_size(thumbnail_size, 2, 64, "pixels a side")
    hashes = np.empty(len(items), np.uint64)
    thumbs = np.empty((len(items), thumbnail_size**2), np.float32)
    for i in progress_bar(range(len(items)), display=progress and len(items) >= IMAGES_PROGRESS_FROM):
        grey = _grey(items[i])
        hashes[i], thumbs[i] = _dhash_of_grey(grey, size), _thumbnail_of_grey(grey, thumbnail_size)
    return hashes, thumbs


def hamming(a: int | np.ndarray, b: int | np.ndarray) -> int | np.ndarray:
    """Bits in which 64-bit hashes ``a`` and ``b`` differ (ints, or uint64 arrays that broadcast)."""
    if isinstance(a, int) and isinstance(b, int):
        return (a ^ b).bit_count()
    xor = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    # numpy >= 2.0 counts bits natively; before that, unpack each byte
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(xor).astype(np.int64)
    flat = np.ascontiguousarray(xor).reshape(-1)
    return np.unpackbits(flat.view(np.uint8)).reshape(-1, 64).sum(1).reshape(xor.shape).astype(np.int64)


def hash_matches(hashes: np.ndarray, radius: int) -> np.ndarray:
    """Pairs ``(i, j)``, ``i < j``, of 64-bit ``hashes`` at most ``radius`` bits apart, as an (m, 2) int64 array.
    Pigeonhole: two hashes within ``radius`` bits agree exactly on at least one of ``radius`` + 1 disjoint bit
    ranges, so only items sharing a range's value are compared (Norouzi et al., multi-index hashing, CVPR 2012)."""
    if not 0 <= radius <= 15:
        raise ValueError(f"radius must be 0-15 bits, not {radius}")
    hashes = np.asarray(hashes, dtype=np.uint64)
    edges = np.linspace(0, 64, radius + 2).round().astype(int)
    found = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        part = (hashes >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1)
        order = np.argsort(part, kind="stable")
        bounds = np.flatnonzero(np.diff(part[order])) + 1
        for group in np.split(order, bounds):
            if len(group) > 1:
                i, j = np.triu_indices(len(group), 1)
                a, b = group[i], group[j]
                close = hamming(hashes[a], hashes[b]) <= radius
                found.append(np.stack([np.minimum(a, b), np.maximum(a, b)], 1)[close])
    if not found:
        return np.zeros((0, 2), np.int64)
    return np.unique(np.concatenate(found).astype(np.int64), axis=0)


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


def duplicate_pairs(
    features,
    splits,
    hashes=None,
    dhashes=None,
    train: str = "train",
    k: int = 5,
    min_similarity: float = 0.9,
    max_pairs: int | None = 10_000,
    max_hamming: int = 4,
    hash_first: bool = False,
    evaluation_pairs: bool = False,
    method: str = "auto",
    params: AnnParams | None = None,
    progress: bool = True,
    thumbnails=None,
    pixel_weight: float = 0.5,
) -> pd.DataFrame:
    """Pairs of likely duplicates among items with ``features`` (n, d) and ``splits`` (n names), within ``train`` and
    between ``train`` and each other split (with ``evaluation_pairs``, also within and between those).

    Candidates: each train item's and each evaluation item's ``k`` nearest train items by the cosine of
    ``features`` (``nearest_neighbours`` with ``method``, ``params``) and, given ``thumbnails`` (n, t: ``signatures``),
    by the cosine of those too; pairs sharing a content hash (``hashes``); pairs whose ``dhashes`` are at most
    ``max_hamming`` bits apart. Columns ``index_a, split_a, index_b, split_b, similarity, kind`` (+ ``hamming`` with
    ``dhashes``; + ``feature_similarity`` and ``pixel_similarity`` with ``thumbnails``): ``similarity`` is the
    features' cosine, or with ``thumbnails`` ``(1 - pixel_weight)`` x that + ``pixel_weight`` x the thumbnails'
    cosine: a copy scores high on both, two look-alikes rarely do (a weak model puts same-class items close; small
    thumbnails of different photos can agree). kind "exact" for equal content hashes, else "near"; a is the train
    item of a pair across splits, else the lower index; each unordered pair once. Kept: exact pairs, pairs with
    ``similarity`` >= ``min_similarity`` and pairs within ``max_hamming`` bits; ranked exact first, then (with
    ``hash_first``) those within ``max_hamming`` bits, then by ``similarity``; the first ``max_pairs`` (None: all).
    Small low-texture images share dHashes: 1,022 pairs of 3,000 distinct Fashion-MNIST test images are within 4
    bits, 71 have equal dHashes, so ``hash_first`` suits textured photos only."""
    x = _matrix(features, "features")
    splits = np.asarray(splits, dtype=str)
    thumbs = None if thumbnails is None else _matrix(thumbnails, "thumbnails")
    for name, given in (("splits", splits), ("hashes", hashes), ("dhashes", dhashes), ("thumbnails", thumbs)):
        if given is not None and len(given) != len(x):
            raise ValueError(f"{name} has {len(given)} entries but features have {len(x)} rows; give one per item")
    check_pixel_weight(pixel_weight)
    is_train = splits == train
    if not is_train.any():
        raise ValueError(f"no item is in split {train!r} (splits: {sorted(set(splits.tolist()))}); pass train=")
    search = {"method": method, "params": params, "progress": progress}
    found = _searched_pairs(x, is_train, k, evaluation_pairs, search)
    if thumbs is not None:  # found by the thumbnails: their features' cosine is computed below
        found += [(a, b, np.full(len(a), np.nan, np.float32))
                  for a, b, _ in _searched_pairs(thumbs, is_train, k, evaluation_pairs, search)]  # fmt: skip
    if hashes is not None:
        for group in map(np.array, duplicate_groups([str(h) for h in hashes])):
            i, j = np.triu_indices(len(group), 1)
            found.append((group[i], group[j], np.full(len(i), np.nan, np.float32)))
    if dhashes is not None:
        dhashes = np.asarray(dhashes, dtype=np.uint64)
        close = hash_matches(dhashes, max_hamming)
        found.append((close[:, 0], close[:, 1], np.full(len(close), np.nan, np.float32)))
    a, b, sim = _one_per_pair(found, is_train, evaluation_pairs)
    missing = np.isnan(sim)  # pairs the feature searches did not find
    sim[missing] = _cosines(x, a[missing], b[missing])
    held = np.asarray(hashes, dtype=object) if hashes is not None else None
    exact = held[a] == held[b] if held is not None else np.zeros(len(a), bool)
    table = {"index_a": a, "split_a": splits[a], "index_b": b, "split_b": splits[b], "similarity": sim}
    if thumbs is not None:
        pixel = _cosines(thumbs, a, b)
        table["similarity"] = ((1 - pixel_weight) * sim + pixel_weight * pixel).astype(np.float32)
    table["kind"] = np.where(exact, "exact", "near")
    near_hash = np.zeros(len(a), bool)
    if dhashes is not None:
        table["hamming"] = hamming(dhashes[a], dhashes[b])
        near_hash = table["hamming"] <= max_hamming
    if thumbs is not None:
        table["feature_similarity"], table["pixel_similarity"] = sim, pixel
    keep = exact | near_hash | (table["similarity"] >= min_similarity)
    df = pd.DataFrame({key: value[keep] for key, value in table.items()})
    df["_rank"] = exact[keep].astype(int) * 2 + (near_hash[keep] & hash_first)
    df = df.sort_values(["_rank", "similarity", "index_a", "index_b"], ascending=[False, False, True, True])
    df = df.drop(columns="_rank").reset_index(drop=True)
    return df if max_pairs is None else df.head(max_pairs)


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
