"""Duplicates and leakage (tresnet_nb.trust.hashing, tresnet_nb.trust.neighbours): content hashes, dHash, the exact and
approximate nearest-neighbour searches against a brute-force oracle, and the ranked pairs table with planted copies."""

from __future__ import annotations

import io
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tresnet_nb.trust import neighbours
from tresnet_nb.trust.hashing import (
    content_hash,
    content_hashes,
    dhash,
    dhashes,
    duplicate_groups,
    hamming,
    hash_matches,
    signatures,
    thumbnail,
)
from tresnet_nb.trust.neighbours import AnnParams, exact_neighbours, nearest_neighbours
from tresnet_nb.trust.pairs import PairSettings, duplicate_pairs, leaked_items


def clustered(n: int, dim: int, clusters: int, seed: int, spread: float = 0.5, rank: int | None = None) -> np.ndarray:
    """Non-negative features around random centres: each item's nearest neighbours are in its cluster. With
    ``rank``, the variation within clusters lies in a shared ``rank``-d subspace plus 5% noise (as pooled CNN
    features: few directions carry most of it), else it is isotropic."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)) * 2
    if rank is None:
        spread_ = spread * rng.standard_normal((n, dim))
    else:
        basis = rng.standard_normal((rank, dim))
        spread_ = spread * rng.standard_normal((n, rank)) @ basis + 0.05 * rng.standard_normal((n, dim))
    return np.maximum(centres[rng.integers(0, clusters, n)] + spread_, 0).astype(np.float32) + 0.01


def brute_force(x: np.ndarray, q: np.ndarray, k: int, within: bool) -> tuple[np.ndarray, np.ndarray]:
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    sims = qn.astype(np.float64) @ xn.T.astype(np.float64)
    if within:
        np.fill_diagonal(sims, -np.inf)
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, idx, 1), idx


def photo(seed: int, size: int = 128) -> Image.Image:
    """A smooth, photo-like RGB image (blurred noise plus a gradient), different for each seed."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
    ramp = np.linspace(0, 60, size, dtype=np.float32)[None, :, None]
    return Image.fromarray(np.clip(np.asarray(image, np.float32) * 0.8 + ramp, 0, 255).astype(np.uint8))


def recompressed(image: Image.Image) -> Image.Image:
    """``image`` shrunk to 96 x 96 and saved as JPEG at quality 70: a near copy, neither its bytes nor pixels equal."""
    buffer = io.BytesIO()
    image.resize((96, 96), Image.Resampling.BILINEAR).save(buffer, format="JPEG", quality=70)
    return Image.open(io.BytesIO(buffer.getvalue()))


def test_content_hash_groups_byte_identical_files_and_equal_arrays_only(tmp_path):
    photo(0).save(tmp_path / "a.png")
    shutil.copy(tmp_path / "a.png", tmp_path / "copy.png")
    changed = np.asarray(photo(0)).copy()
    changed[5, 5, 0] ^= 1  # one bit of one pixel
    Image.fromarray(changed).save(tmp_path / "changed.png")
    files = [tmp_path / "a.png", tmp_path / "copy.png", tmp_path / "changed.png"]
    array = np.arange(16, dtype=np.uint8).reshape(4, 4)
    arrays = [array, array.copy(), array.reshape(2, 8), array.astype(np.int8), array.T.copy(), array.T]
    hashes = content_hashes([*files, *arrays])
    # the copy; the equal array; a transposed view hashed as its values, equal to its contiguous copy
    assert duplicate_groups(hashes) == [[0, 1], [3, 4], [7, 8]]
    assert content_hash(Image.fromarray(array)) == content_hash(array)
    with pytest.raises(TypeError, match="path, a numpy array or a PIL image"):
        content_hash(b"bytes")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_dhash_keeps_a_resized_recompressed_copy_close_and_an_unrelated_image_far(seed, tmp_path):
    original, copy = photo(seed), recompressed(photo(seed))
    original.save(tmp_path / "original.png")
    h = dhash(tmp_path / "original.png")
    assert h == dhash(np.asarray(original)) == dhash(original)  # the path, the array and the image hash alike
    assert 0 <= h < 2**64
    assert hamming(h, dhash(copy)) <= 6
    assert hamming(h, dhash(photo(seed + 100))) >= 16
    hashes = dhashes([original, copy, photo(seed + 100)])
    assert hashes.dtype == np.uint64 and hamming(hashes[0], hashes[1]) == hamming(h, dhash(copy))


def test_dhash_rejects_an_array_it_cannot_read_as_an_image():
    with pytest.raises(ValueError, match=r"uint8 arrays.*float32 \(4, 4\).*astype\(np.uint8\)"):
        dhash(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="channel axis last"):
        dhash(np.zeros((3, 8, 8), np.uint8))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_thumbnail_cosine_keeps_a_resized_recompressed_copy_above_0_99_and_an_unrelated_image_below(seed, tmp_path):
    original, copy = photo(seed), recompressed(photo(seed))
    original.save(tmp_path / "original.png")
    t = thumbnail(tmp_path / "original.png")
    np.testing.assert_array_equal(t, thumbnail(np.asarray(original)))  # path, array and image alike
    assert t.shape == (64,) and t.dtype == np.float32 and abs(float(t @ t) - 1) < 1e-5 and abs(float(t.sum())) < 1e-4
    assert float(t @ thumbnail(copy)) > 0.99
    assert float(t @ thumbnail(photo(seed + 100))) < 0.9
    assert not thumbnail(np.full((20, 20), 7, np.uint8)).any()  # a flat image: no direction, cosine 0 with all
    hashes, thumbs = signatures([original, copy, photo(seed + 100)], thumbnail_size=12)
    assert thumbs.shape == (3, 144) and hashes.tolist() == dhashes([original, copy, photo(seed + 100)]).tolist()
    np.testing.assert_allclose(thumbs[1], thumbnail(copy, 12), atol=1e-6)
    with pytest.raises(ValueError, match="size must be 2-64"):
        thumbnail(original, 1)


def test_thumbnails_find_and_rank_copies_that_weak_features_miss():
    """Features of a weak model (each item's near copy as far as any same-cluster item) with thumbnails that see the
    copies: the pairs come from the thumbnails' search, similarity is the weighted mean of the two cosines."""
    x, splits, hashes, exact, near = planted_splits()
    rng = np.random.default_rng(3)
    weak = clustered(400, 32, 1, seed=11, spread=0.3)  # one cluster: every pair alike, copies no closer
    thumbs = rng.standard_normal((400, 64)).astype(np.float32)
    for copy, original in near:
        thumbs[copy] = thumbs[original] + 0.05 * rng.standard_normal(64).astype(np.float32)
    thumbs /= np.linalg.norm(thumbs, axis=1, keepdims=True)
    kw = {"min_similarity": 0.0, "max_pairs": None, "progress": False}
    features_only = duplicate_pairs(weak, splits, hashes, **kw)
    got = {frozenset(p) for p in zip(features_only.index_a, features_only.index_b, strict=True)}
    assert sum(frozenset(p) in got for p in near) < len(near)  # the weak features' search misses copies
    pairs = duplicate_pairs(weak, splits, hashes, thumbnails=thumbs, **kw)
    assert list(pairs.columns)[-2:] == ["feature_similarity", "pixel_similarity"]
    top = [frozenset(p) for p in zip(pairs.index_a[3:10], pairs.index_b[3:10], strict=True)]
    assert set(top) == {frozenset(p) for p in near}  # after the three exact ones: every near copy
    mean = 0.5 * pairs.feature_similarity + 0.5 * pairs.pixel_similarity
    np.testing.assert_allclose(pairs.similarity, mean, atol=1e-6)
    np.testing.assert_allclose(
        pairs.pixel_similarity, (thumbs[pairs.index_a] * thumbs[pairs.index_b]).sum(1), atol=1e-5
    )
    weak_n = weak / np.linalg.norm(weak, axis=1, keepdims=True)
    np.testing.assert_allclose(
        pairs.feature_similarity, (weak_n[pairs.index_a] * weak_n[pairs.index_b]).sum(1), atol=1e-5
    )
    pixels_only = duplicate_pairs(weak, splits, hashes, thumbnails=thumbs, pixel_weight=1.0, **kw)
    np.testing.assert_allclose(pixels_only.similarity, pixels_only.pixel_similarity, atol=1e-6)
    with pytest.raises(ValueError, match=r"pixel_weight is a weight in \[0, 1\], not 1.5"):
        duplicate_pairs(weak, splits, thumbnails=thumbs, pixel_weight=1.5)
    with pytest.raises(ValueError, match="thumbnails has 399 entries but features have 400 rows"):
        duplicate_pairs(weak, splits, thumbnails=thumbs[:-1])


@pytest.mark.parametrize("radius", [0, 2, 5])
def test_hash_matches_finds_exactly_the_pairs_a_brute_force_finds(radius):
    rng = np.random.default_rng(radius)
    base = rng.integers(0, 2**63, 300, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, 300, dtype=np.uint64)
    flips = [np.uint64(sum(1 << int(b) for b in rng.choice(64, rng.integers(0, 8), replace=False))) for _ in range(60)]
    hashes = np.concatenate([base, base[:60] ^ np.array(flips, dtype=np.uint64)])
    distance = hamming(hashes[:, None], hashes[None, :])
    i, j = np.nonzero(np.triu(distance <= radius, 1))
    expected = np.stack([i, j], 1)
    assert len(expected) > 0 or radius == 0
    np.testing.assert_array_equal(hash_matches(hashes, radius), expected)


def test_exact_search_matches_brute_force_within_a_set_and_for_queries():
    x = clustered(700, 24, 12, seed=0)
    sims, idx = exact_neighbours(x, 4)
    ref_sims, ref_idx = brute_force(x, x, 4, within=True)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(sims, ref_sims, atol=1e-5)
    assert sims.dtype == np.float32 and idx.dtype == np.int64
    assert not (idx == np.arange(len(x))[:, None]).any()  # never its own neighbour
    q = clustered(50, 24, 12, seed=1)
    sims, idx = nearest_neighbours(x, 3, queries=q, method="exact")
    np.testing.assert_array_equal(idx, brute_force(x, q, 3, within=False)[1])


def test_exact_search_keeps_identical_items_as_each_others_neighbours_but_not_their_own():
    x = clustered(200, 8, 4, seed=2)
    x[150] = x[10]  # an exact copy: similarity 1 to item 10, which is not itself
    sims, idx = exact_neighbours(x, 1)
    assert idx[10, 0] == 150 and idx[150, 0] == 10 and sims[10, 0] == pytest.approx(1.0, abs=1e-6)


def test_ann_agrees_with_exact_search_and_reports_exact_similarities():
    x = clustered(3000, 96, 30, seed=3, spread=0.5, rank=8)
    params = AnnParams(dim=48, nlist=20, nprobe=4, candidates=16, train_size=3000)
    sims, idx = nearest_neighbours(x, 5, method="ann", params=params, progress=False)
    ref_sims, ref_idx = brute_force(x, x, 5, within=True)
    assert np.mean(idx[:, 0] == ref_idx[:, 0]) >= 0.9
    assert not (idx == np.arange(len(x))[:, None]).any()
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(sims, np.einsum("nd,nkd->nk", xn, xn[idx]), atol=1e-5)  # re-ranked exactly
    assert (np.diff(sims, axis=1) <= 1e-6).all()  # most similar first
    q = clustered(200, 96, 30, seed=3, spread=0.5, rank=8)
    _, qidx = nearest_neighbours(x, 3, queries=q, method="ann", params=params, progress=False)
    assert np.mean(qidx[:, 0] == brute_force(x, q, 1, within=False)[1][:, 0]) >= 0.9


def test_ann_fills_queries_its_cells_leave_short_from_the_exact_search(monkeypatch):
    # 8 cells probed one at a time over 40 items: some cells hold fewer than k + 1 items
    x = clustered(40, 16, 8, seed=5)
    searched = []
    exact_subset = neighbours._exact_subset

    def recording(x, q, rows, k, within):
        searched.extend(rows.tolist())
        return exact_subset(x, q, rows, k, within)

    monkeypatch.setattr(neighbours, "_exact_subset", recording)
    sims, idx = nearest_neighbours(x, 6, method="ann", params=AnnParams(dim=4, nlist=8, nprobe=1), progress=False)
    assert searched  # some queries were short
    ref_sims, ref_idx = brute_force(x, x, 6, within=True)
    np.testing.assert_array_equal(idx[searched], ref_idx[searched])
    np.testing.assert_allclose(sims[searched], ref_sims[searched], atol=1e-5)
    assert (idx >= 0).all() and np.isfinite(sims).all()
    assert not (idx == np.arange(len(x))[:, None]).any()


def test_auto_searches_exactly_below_its_limit_and_approximately_above(monkeypatch):
    x = clustered(60, 8, 3, seed=0)
    used = []
    monkeypatch.setattr(neighbours, "exact_neighbours", lambda *a, **k: used.append("exact"))
    monkeypatch.setattr(neighbours, "ann_neighbours", lambda *a, **k: used.append("ann"))
    nearest_neighbours(x, 2)
    monkeypatch.setattr(neighbours, "AUTO_EXACT_MAX_MACS", 60 * 60 * 8 - 1)
    nearest_neighbours(x, 2)
    nearest_neighbours(x, 2, queries=x[:59])
    assert used == ["exact", "ann", "exact"]


def test_ann_without_faiss_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        nearest_neighbours(clustered(50, 8, 2, seed=0), 2, method="ann")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda x: nearest_neighbours(x[0], 2), r"2-D array.*shape \(16,\)"),
        (lambda x: nearest_neighbours(x, 30), "k must be 1-29"),
        (lambda x: nearest_neighbours(x, 0), "k must be 1-29"),
        (lambda x: nearest_neighbours(x, 31, queries=x[:2]), "k must be 1-30"),
        (lambda x: nearest_neighbours(x, 2, method="hnsw"), "Unknown method 'hnsw'.*'exact', 'ann'"),
        (lambda x: nearest_neighbours(x, 2, queries=x[:, :8]), "queries have dim 8 but features have dim 16"),
        (lambda x: nearest_neighbours(x.astype(np.int64), 2), r"floats, not int64.*astype\(np.float32\)"),
        (lambda x: duplicate_pairs(x, ["train"] * 29), "splits has 29 entries but features have 30 rows"),
        (lambda x: duplicate_pairs(x, ["valid"] * 30), r"no item is in split 'train' \(splits: \['valid'\]\)"),
    ],
)
def test_bad_input_is_a_clear_error(call, message):
    x = clustered(30, 16, 3, seed=6)
    with pytest.raises(ValueError, match=message):
        call(x)


def planted_splits(seed: int = 7):
    """400 clustered items (300 train, 60 valid, 40 test) with planted copies: three byte-identical test items in
    train (exact), five valid items and two train items copied into train with 1% noise (near)."""
    rng = np.random.default_rng(seed)
    x = clustered(400, 32, 8, seed=seed, spread=1.0)
    splits = np.array(["train"] * 300 + ["valid"] * 60 + ["test"] * 40)
    hashes = [f"h{i}" for i in range(400)]
    exact = [(10, 370), (11, 380), (12, 399)]  # (train copy, test original)
    near = [(20, 300), (21, 310), (22, 320), (23, 330), (24, 340), (30, 200), (31, 201)]
    for copy, original in exact:
        x[copy], hashes[copy] = x[original], hashes[original]
    for copy, original in near:
        x[copy] = x[original] * (1 + 0.01 * rng.standard_normal(32)).astype(np.float32)
    return x, splits, hashes, exact, near


def test_planted_copies_across_splits_rank_first_with_their_kinds():
    x, splits, hashes, exact, near = planted_splits()
    pairs = duplicate_pairs(x, splits, hashes, min_similarity=0.0, max_pairs=None, progress=False)
    assert list(pairs.columns) == ["index_a", "split_a", "index_b", "split_b", "similarity", "kind"]
    top = [(a, b) for a, b in zip(pairs["index_a"], pairs["index_b"], strict=True)]
    # a is the train item of a cross-split pair, else the lower index
    assert set(top[:3]) == set(exact) and (pairs["kind"][:3] == "exact").all()
    assert set(top[3:10]) == {(c, o) if splits[o] != "train" else (min(c, o), max(c, o)) for c, o in near}
    assert (pairs["kind"][3:] == "near").all() and (pairs["similarity"][3:10] > pairs["similarity"][10]).all()
    assert len({frozenset(p) for p in top}) == len(top)  # each unordered pair once
    assert not ((pairs["split_a"] != "train") & (pairs["split_b"] != "train")).any()  # no evaluation-only pairs
    assert (pairs["similarity"].diff()[4:].dropna() <= 1e-6).all()  # by cosine after the exact ones
    leaked = leaked_items(pairs, threshold=0.99)
    np.testing.assert_array_equal(leaked, sorted([o for _, o in exact] + [o for _, o in near if splits[o] != "train"]))


def test_pairs_floor_cap_evaluation_pairs_and_the_perceptual_hash():
    x, splits, hashes, exact, near = planted_splits()
    pairs = duplicate_pairs(x, splits, hashes, min_similarity=0.99, max_pairs=5, progress=False)
    assert len(pairs) == 5 and (pairs["similarity"] >= 0.99).all()
    settings = PairSettings(min_similarity=0.99, max_pairs=5, progress=False)  # the same, as one object
    pd.testing.assert_frame_equal(duplicate_pairs(x, splits, hashes, settings=settings), pairs)
    assert len(duplicate_pairs(x, splits, hashes, settings=settings, max_pairs=3)) == 3  # a keyword overrides it
    with pytest.raises(ValueError, match="pixel"):
        PairSettings(pixel_weight=1.5)
    x[350] = x[355]  # two valid items alike: only with evaluation_pairs
    both = duplicate_pairs(
        x, splits, hashes, min_similarity=0.99, max_pairs=None, evaluation_pairs=True, progress=False
    )
    assert ((both["index_a"] == 350) & (both["index_b"] == 355)).any()
    # a perceptual-hash match between dissimilar features (a weak model's features, say) is kept below the floor;
    # with hash_first it ranks above every near pair found by cosine alone, below the exact ones
    rng = np.random.default_rng(0)
    perceptual = rng.integers(0, 2**63, 400, dtype=np.uint64)
    perceptual[150] = perceptual[330] ^ np.uint64(0b101)  # two bits apart
    by_cosine = duplicate_pairs(x, splits, hashes, dhashes=perceptual, max_pairs=None, progress=False)
    row = by_cosine.index[(by_cosine["index_a"] == 150) & (by_cosine["index_b"] == 330)]
    assert len(row) == 1 and row[0] > 10 and by_cosine.loc[row[0], "hamming"] == 2  # below the planted copies
    assert (by_cosine["similarity"].diff()[4:].dropna() <= 1e-6).all()
    pairs = duplicate_pairs(x, splits, hashes, dhashes=perceptual, hash_first=True, max_pairs=None, progress=False)
    assert (pairs.loc[3, ["index_a", "index_b", "kind", "hamming"]].tolist()) == [150, 330, "near", 2]
    assert pairs.loc[3, "similarity"] < 0.9 and (pairs["hamming"][4:] > 4).all()
    assert len(pairs) == len(by_cosine) and set(pairs["hamming"]) == set(by_cosine["hamming"])
    assert leaked_items(pairs, threshold=1.1, max_hamming=4).tolist() == [330, 370, 380, 399]
