"""Nearest neighbours of feature vectors by cosine similarity: exact (blocked matrix products) or approximate (PCA,
faiss k-means cells searched a cell at a time by matrix products, then the candidates re-ranked by exact cosine in the
full dimension)."""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from ..runtime import progress as show_progress

METHODS = ("auto", "exact", "ann")
BLOCK_BYTES = 64 << 20  # one block of similarities (queries x items, float32) at most; bounds the exact search's memory
PROGRESS_FROM = 20_000  # queries from which a progress bar is shown
# "auto" searches exactly while queries x items x dim stays at most this many multiply-adds: on a shared 2-core CPU
# (benchmarks/bench_neighbours.py --crossover, 2,048-d) the exact search took 0.62x the approximate one's time at 5k
# items (5.1e10) and 2.3x at 10k (2.0e11)
AUTO_EXACT_MAX_MACS = 1e11


@dataclass(frozen=True)
class AnnParams:
    """The approximate search's settings: ``dim`` PCA components (no PCA when the features have no more), ``nlist``
    k-means cells (None: 2 sqrt(n)), ``nprobe`` cells searched for each query (its own and the nearest others),
    ``candidates`` per query re-ranked by exact cosine, ``train_size`` items sampled to fit the PCA, ``niter``
    k-means iterations, ``seed`` of the samples. The defaults met the goals of benchmarks/bench_neighbours.py."""

    dim: int = 256
    nlist: int | None = None
    nprobe: int = 8
    candidates: int = 16
    train_size: int = 50_000
    niter: int = 8
    seed: int = 0


def _threads() -> int:
    """CPUs this process may use (its affinity mask, which containers and job schedulers set)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextmanager
def _one_torch_thread():
    """torch on one thread inside: small operations, whose threads synchronise at each one, ran 4-10x slower on
    two threads than on one on a shared 2-core CPU (the caller runs one such worker per CPU where it can)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _matrix(x: object, name: str) -> np.ndarray:
    """``x`` as a 2-D float32 array (no copy when it already is one), or ValueError naming ``name``."""
    array = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x)
    if array.ndim != 2 or min(array.shape) == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (items, dim), not shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name} must hold floats, not {array.dtype}; convert with .astype(np.float32)")
    return np.asarray(array, dtype=np.float32)


def _inverse_norms(x: np.ndarray) -> np.ndarray:
    """1 / L2 norm of each row, computed in blocks; an all-zero row gets 0 (its cosine with anything is 0)."""
    out = np.empty(len(x), np.float32)
    step = max(1, (BLOCK_BYTES // 4) // x.shape[1])
    for start in range(0, len(x), step):
        norms = np.linalg.norm(x[start : start + step], axis=1)
        out[start : start + step] = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return out


def _normalised(x: np.ndarray, inv: np.ndarray, rows: np.ndarray | slice) -> torch.Tensor:
    return torch.from_numpy(x[rows] * inv[rows, None])


def _merge(best: tuple[torch.Tensor, torch.Tensor], sims: torch.Tensor, idx: torch.Tensor, k: int):
    """The ``k`` highest of the running best and new (similarity, index) columns, per row."""
    all_sims, all_idx = torch.cat([best[0], sims], 1), torch.cat([best[1], idx], 1)
    top, where = all_sims.topk(k, dim=1)
    return top, all_idx.gather(1, where)


def exact_neighbours(features, k: int, queries=None, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most cosine-similar rows of ``features`` (n, d) to each row of ``queries`` (m, d) (None: the rows of
    ``features``, each excluding itself), by blocked matrix products; similarities (m, k) float32 and indices (m, k)
    int64, most similar first."""
    x, q, inv, qinv, within = _checked(features, k, queries)
    q_block = min(len(q), 1024)
    x_block = max(k + 1, (BLOCK_BYTES // 4) // q_block)
    sims_out, idx_out = np.empty((len(q), k), np.float32), np.empty((len(q), k), np.int64)
    starts = range(0, len(q), q_block)
    for qs in show_progress(starts, progress and len(q) >= PROGRESS_FROM):
        qn = _normalised(q, qinv, slice(qs, qs + q_block))
        rows = torch.arange(qs, qs + len(qn))
        best = (torch.full((len(qn), k), -math.inf), torch.full((len(qn), k), -1, dtype=torch.int64))
        for xs in range(0, len(x), x_block):
            sims = qn @ _normalised(x, inv, slice(xs, xs + x_block)).T
            cols = torch.arange(xs, xs + sims.shape[1])
            if within and xs < qs + len(qn) and qs < xs + len(cols):  # an item is not its own neighbour
                sims[rows[:, None] == cols[None, :]] = -math.inf
            best = _merge(best, sims, cols.expand(len(qn), -1), k)
        sims_out[qs : qs + len(qn)], idx_out[qs : qs + len(qn)] = best[0].numpy(), best[1].numpy()
    return sims_out, idx_out


def _checked(features, k: int, queries):
    x = _matrix(features, "features")
    q = x if queries is None else _matrix(queries, "queries")
    if q.shape[1] != x.shape[1]:
        raise ValueError(f"queries have dim {q.shape[1]} but features have dim {x.shape[1]}; use the same extractor")
    available = len(x) - (queries is None)
    if not 1 <= k <= available:
        raise ValueError(f"k must be 1-{available} (the items a query can have as neighbours), not {k}")
    inv = _inverse_norms(x)
    return x, q, inv, inv if queries is None else _inverse_norms(q), queries is None


def _pca(x: np.ndarray, inv: np.ndarray, sample: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and top-``dim`` principal axes (d, dim) of the normalised rows ``sample`` of ``x``."""
    mean = torch.zeros(x.shape[1], dtype=torch.float64)
    cov = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)
    step = max(1, (BLOCK_BYTES // 4) // x.shape[1])
    for s in range(0, len(sample), step):
        block = _normalised(x, inv, sample[s : s + step])
        mean += block.sum(0, dtype=torch.float64)
        cov += (block.T @ block).double()
    mean /= len(sample)
    cov = cov / len(sample) - torch.outer(mean, mean)
    # the top axes by subspace iteration: a full eigendecomposition of a 2,048-d covariance took 15-23 s on the
    # 2-core CPU this was measured on, a few products with a (d, dim + 16) basis take well under a second
    with _one_torch_thread():
        basis = torch.randn(
            len(cov), min(len(cov), dim + 16), generator=torch.Generator().manual_seed(0), dtype=torch.float64
        )
        for _ in range(6):
            basis, _ = torch.linalg.qr(cov @ basis)
        _, vectors = torch.linalg.eigh(basis.T @ cov @ basis)  # ascending eigenvalues
    return mean.float().numpy(), (basis @ vectors[:, -dim:].flip(1)).float().contiguous().numpy()


def _project(x, inv, mean, axes, progress: bool) -> np.ndarray:
    """Rows of ``x``, normalised, centred and projected on ``axes``, computed in blocks."""
    out = np.empty((len(x), axes.shape[1]), np.float32)
    step = max(1, (BLOCK_BYTES // 4) // x.shape[1])
    axes_t, mean_t = torch.from_numpy(axes), torch.from_numpy(mean)
    for s in show_progress(range(0, len(x), step), progress and len(x) >= PROGRESS_FROM):
        out[s : s + step] = ((_normalised(x, inv, slice(s, s + step)) - mean_t) @ axes_t).numpy()
    return out


def _cells(base: np.ndarray, params: AnnParams, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """k-means centroids (faiss) of a sample of ``base`` and each row's nearest centroid."""
    import faiss

    nlist = params.nlist or max(1, min(len(base) // 39, round(2 * math.sqrt(len(base)))))
    # a coarse partition that is only visited, never scored: few points per centroid and iterations suffice
    kmeans = faiss.Kmeans(base.shape[1], nlist, niter=params.niter, seed=params.seed, max_points_per_centroid=64)
    kmeans.train(base[np.sort(rng.choice(len(base), min(len(base), 40 * nlist), replace=False))])
    return kmeans.centroids, kmeans.index.search(base, 1)[1][:, 0]


def _candidates(reduced: list, centroids, cell, probe_cell, nprobe: int, want: int, within: bool, progress: bool):
    """Up to ``want`` nearest rows of ``base`` (L2) to each row of ``probe`` (``reduced`` = [base, probe or None
    within base], emptied here so that ``base`` is freed once sorted by cell), searched among the rows of the
    ``nprobe`` cells nearest each query's cell (its own first): one matrix product per cell, not one scan per query
    (faiss's IndexIVFFlat scan, bound by memory traffic, was 4-10x slower at 100k items); -1 pads."""
    base, probe = reduced
    reduced.clear()
    order = np.argsort(cell, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(cell, minlength=len(centroids)))])
    cells, ids_all = torch.from_numpy(base[order]), torch.from_numpy(order)
    n_queries = len(base) if within else len(probe)
    del base  # 1 GB at 1M items x 256 dims
    squares = (cells * cells).sum(1)
    cent = torch.from_numpy(centroids)
    gaps = (cent * cent).sum(1)[None, :] - 2 * cent @ cent.T
    gaps.fill_diagonal_(-math.inf)  # a cell is probed first by its own queries: their own rows come first
    near = gaps.topk(min(nprobe, len(cent)), dim=1, largest=False).indices.numpy()
    out = np.full((n_queries, want), -1, np.int64)
    q_order = order if within else np.argsort(probe_cell, kind="stable")
    q_bounds = bounds if within else np.concatenate([[0], np.cumsum(np.bincount(probe_cell, minlength=len(cent)))])

    def search_cell(c: int) -> None:
        cols = torch.cat([torch.arange(bounds[j], bounds[j + 1]) for j in near[c]])
        vectors, ids, squared = cells[cols], ids_all[cols], squares[cols]
        take = min(want, len(cols))
        step = max(1, (BLOCK_BYTES // 4) // max(1, len(cols)))
        for qs in range(q_bounds[c], q_bounds[c + 1], step):
            end = min(qs + step, q_bounds[c + 1])
            rows = q_order[qs:end]
            queries = cells[qs:end] if within else torch.from_numpy(probe[rows])  # within: the cell's own rows
            dist = torch.addmm(squared, queries, vectors.T, alpha=-2)  # |q|^2 left out: the same along a row
            if within:  # the queries are the first columns: not their own neighbours
                first = qs - q_bounds[c]
                dist[torch.arange(len(rows)), torch.arange(first, first + len(rows))] = math.inf
            top = dist.topk(take, dim=1, largest=False)
            out[rows, :take] = ids[top.indices].masked_fill(top.values.isinf(), -1).numpy()

    busy = [c for c in range(len(cent)) if q_bounds[c + 1] > q_bounds[c]]
    with _one_torch_thread(), ThreadPoolExecutor(_threads()) as pool:
        show = progress and n_queries >= PROGRESS_FROM
        for _ in show_progress(pool.map(search_cell, busy), show, total=len(busy)):
            pass
    return out


def _rerank(x, q, inv, qinv, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` candidates of each query with the highest exact cosine in the full dimension (-1 entries skipped)."""
    sims_out, idx_out = np.empty((len(q), k), np.float32), np.empty((len(q), k), np.int64)
    step = max(1, (4 * BLOCK_BYTES) // (cand.shape[1] * x.shape[1] * 4))  # candidates' full rows gathered at once
    buffer = torch.empty(step * cand.shape[1], x.shape[1])  # reused: fresh pages cost more than the copy itself
    xt, invt = torch.from_numpy(x), torch.from_numpy(inv)
    for s in range(0, len(q), step):
        c = torch.from_numpy(cand[s : s + step])
        flat = c.clamp(min=0).reshape(-1)
        gathered = torch.index_select(xt, 0, flat, out=buffer[: len(flat)]).reshape(*c.shape, -1)
        sims = torch.einsum("md,mcd->mc", _normalised(q, qinv, slice(s, s + len(c))), gathered)
        sims = (sims * invt[flat].reshape(c.shape)).masked_fill(c < 0, -math.inf)
        top, where = sims.topk(k, dim=1)
        sims_out[s : s + len(c)], idx_out[s : s + len(c)] = top.numpy(), c.gather(1, where).numpy()
    return sims_out, idx_out


def ann_neighbours(
    features, k: int, queries=None, params: AnnParams | None = None, progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """As ``exact_neighbours``, approximately: rows L2-normalised and PCA-reduced to ``params.dim``; candidates by L2
    distance (for unit vectors, the order of cosine) among the rows of the ``params.nprobe`` k-means cells (faiss)
    nearest each query's cell; the best ``params.candidates`` re-ranked by exact cosine in the full dimension, so
    every similarity returned is exact. Queries left with fewer than ``k`` candidates are searched exactly."""
    try:
        import faiss
    except ImportError as error:
        raise ImportError("method='ann' needs faiss: pip install faiss-cpu (or use method='exact')") from error
    params = params or AnnParams()
    x, q, inv, qinv, within = _checked(features, k, queries)
    faiss.omp_set_num_threads(_threads())
    rng = np.random.default_rng(params.seed)
    if params.dim < x.shape[1]:
        sample = np.sort(rng.choice(len(x), min(len(x), params.train_size), replace=False))
        mean, axes = _pca(x, inv, sample, params.dim)
        base = _project(x, inv, mean, axes, progress)
        probe = base if within else _project(q, qinv, mean, axes, progress)
    else:
        base = x * inv[:, None]
        probe = base if within else q * qinv[:, None]
    reduced = [base, None if within else probe]
    del base, probe  # held by ``reduced`` alone, which _candidates empties
    centroids, cell = _cells(reduced[0], params, rng)
    probe_cell = cell if within else faiss.IndexFlatL2(centroids.shape[1])
    if not within:
        probe_cell.add(centroids)
        probe_cell = probe_cell.search(reduced[1], 1)[1][:, 0]
    want = min(len(x) - within, params.candidates)
    cand = _candidates(reduced, centroids, cell, probe_cell, params.nprobe, want, within, progress)
    sims, idx = _rerank(x, q, inv, qinv, cand, k)
    short = np.flatnonzero((cand >= 0).sum(1) < k)
    if len(short):
        sims[short], idx[short] = _exact_subset(x, q, short, k, within)
    return sims, idx


def _exact_subset(x: np.ndarray, q: np.ndarray, rows: np.ndarray, k: int, within: bool):
    """Exact neighbours of the query rows ``rows`` (the few an inverted-file search left short)."""
    if not within:
        return exact_neighbours(x, k, q[rows], progress=False)
    sims, idx = exact_neighbours(x, k + 1, q[rows], progress=False)
    keep = idx != rows[:, None]
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # drop the query itself, keep the order
    return np.take_along_axis(sims, order, 1), np.take_along_axis(idx, order, 1)


def nearest_neighbours(
    features, k: int, queries=None, method: str = "auto", params: AnnParams | None = None, progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most cosine-similar rows of ``features`` (n, d) to each row of ``queries`` (m, d; None: each row of
    ``features``, never itself): similarities (m, k) float32 and indices (m, k) int64, most similar first.
    ``method``: "exact", "ann" (``ann_neighbours`` with ``params``) or "auto" (exact below AUTO_EXACT_MAX_MACS)."""
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose one of {METHODS}")
    if method == "auto":
        n, d = np.shape(features)[0], np.shape(features)[-1]
        m = n if queries is None else np.shape(queries)[0]
        method = "exact" if float(n) * m * d <= AUTO_EXACT_MAX_MACS else "ann"
    if method == "exact":
        return exact_neighbours(features, k, queries, progress)
    return ann_neighbours(features, k, queries, params, progress)
