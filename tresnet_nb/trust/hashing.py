"""Duplicates and leaks: content hashes (a SHA-256 of the file's bytes, or of an in-memory image's array with its shape
and dtype) for exact copies; for near ones, a difference hash (dHash) compared in Hamming distance and a small
greyscale thumbnail compared by cosine (both from one decode of each image). The ranked table of duplicate pairs that
uses them is in :mod:`tresnet_nb.trust.pairs`."""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..runtime import progress as show_progress

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
    for i in show_progress(range(len(items)), progress and len(items) >= IMAGES_PROGRESS_FROM):
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
