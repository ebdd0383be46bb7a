"""Nearest neighbours of 2,048-d features at 100k and 1M items: tresnet_nb.trust.neighbours' approximate search
(PCA, faiss k-means cells searched by matrix products, exact re-ranking) against its exact blocked search, on
synthetic pooled-CNN-like features.

The features imitate a CNN's pooled output rather than isotropic noise (in which nothing has a meaningful
neighbour): non-negative (post-ReLU) vectors around ``--clusters`` centres that share a positive mean and spread over
a 256-d subspace with decaying scales, with within-cluster variation in a shared 96-d subspace (pose, background,
light) plus a private 4-d one per cluster, plus small isotropic noise, cluster sizes log-normal; then
``--copies`` planted near copies (an item times 1 + 5% noise, plus noise: cosine about 0.998 to its source, as a
recompressed copy). The printed figures say what this gives: the median cosine of an item's nearest neighbour and
(at the first size) of two random items.

Measured, each size generated in chunks into one float32 array (1M x 2,048: 8.2 GB):
- the wall time of every item's ``--k`` nearest neighbours within the set (each item a query, never its own
  neighbour), approximate search (goal at 1M: within 10 minutes on a 2-core CPU);
- recall@1 at the first size: the approximate top neighbour against the exact one, over ``--queries-sample`` random
  queries (goal >= 0.95), and the exact search's time on that sample (the full exact search extrapolated from it);
- the planted copies found: each copy's and each source's partner as its top neighbour (both directions);
- peak resident memory of the process (``resource.getrusage``), after each size.
With ``--crossover N ...`` it instead times the exact and the approximate search of every item's neighbours at each
size N, to place the exact search's limit in ``nearest_neighbours(method="auto")`` (AUTO_EXACT_MAX_MACS).
Usage: python benchmarks/bench_neighbours.py [--sizes 100000 1000000] [--dim 2048] [--k 5] [--seed 0]
       [--queries-sample 5000] [--clusters 4000] [--copies 300] [--crossover 2000 5000 10000 20000]
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
from ratios import ratio_line  # benchmarks/ratios.py

from tresnet_nb.trust.neighbours import AnnParams, ann_neighbours, exact_neighbours

GOAL_SECONDS, GOAL_RECALL = 600.0, 0.95
CENTRE_RANK, SHARED_RANK, PRIVATE_RANK = 256, 96, 4
CHUNK = 8192  # rows generated at once


def synthetic_features(n: int, dim: int, clusters: int, copies: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) float32 pooled-CNN-like features (see the module docstring) and the (copies, 2) planted pairs
    (source, copy)."""
    rng = np.random.default_rng(seed)

    def basis(rank: int, top: float) -> np.ndarray:  # random near-orthogonal directions, scales decaying from top
        scales = top / np.sqrt(1 + np.arange(rank) / 4) * np.sqrt(dim) / 8
        return (rng.standard_normal((rank, dim), dtype=np.float32) / np.sqrt(dim) * scales[:, None]).astype(np.float32)

    mean = np.abs(rng.standard_normal(dim, dtype=np.float32)) * 0.6 + 0.2
    centres = mean + rng.standard_normal((clusters, CENTRE_RANK), dtype=np.float32) @ basis(CENTRE_RANK, 3.0)
    shared = basis(SHARED_RANK, 1.6)
    private = rng.standard_normal((clusters, PRIVATE_RANK, dim), dtype=np.float32) * np.float32(0.25)
    weights = rng.lognormal(0.0, 0.7, clusters)
    labels = rng.choice(clusters, size=n, p=weights / weights.sum())
    x = np.empty((n, dim), np.float32)
    for s in range(0, n, CHUNK):
        c = labels[s : s + CHUNK]
        block = centres[c] + rng.standard_normal((len(c), SHARED_RANK), dtype=np.float32) @ shared
        block += np.einsum("nr,nrd->nd", rng.standard_normal((len(c), PRIVATE_RANK), dtype=np.float32), private[c])
        block += rng.standard_normal(block.shape, dtype=np.float32) * np.float32(0.15)
        x[s : s + CHUNK] = np.maximum(block, 0)
    pairs = rng.choice(n, size=(copies, 2), replace=False)
    noise = rng.standard_normal((copies, dim), dtype=np.float32)
    x[pairs[:, 1]] = np.maximum(x[pairs[:, 0]] * (1 + 0.05 * noise) + 0.05 * rng.standard_normal(noise.shape), 0)
    return x, pairs


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # ru_maxrss is in KiB on Linux


def crossover(sizes: list[int], dim: int, k: int, seed: int) -> None:
    """Exact and approximate search of every item's ``k`` neighbours at each of ``sizes`` (``n // 25`` clusters: 25
    items a cluster, as at 100k), one after the other, and the exact search's time over the approximate one's."""
    for n in sizes:
        x, _ = synthetic_features(n, dim, max(1, n // 25), min(300, n // 4), seed)
        start = time.perf_counter()
        _, eidx = exact_neighbours(x, k, progress=False)
        exact_s = time.perf_counter() - start
        start = time.perf_counter()
        _, aidx = ann_neighbours(x, k, progress=False)
        ann_s = time.perf_counter() - start
        recall = float(np.mean(aidx[:, 0] == eidx[:, 0]))
        macs = float(n) * n * dim
        print(
            ratio_line(
                f"exact / ann: {n} items", exact_s, ann_s, "s", f"{macs:.3g} multiply-adds; recall@1 {recall:.4f}"
            )
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--queries-sample", type=int, default=5000, help="random queries for recall against exact search")
    p.add_argument("--clusters", type=int, default=4000)
    p.add_argument("--copies", type=int, default=300)
    p.add_argument("--crossover", type=int, nargs="+", default=None, help="instead: exact vs ann time at these sizes")
    args = p.parse_args()
    if args.crossover:
        return crossover(args.crossover, args.dim, args.k, args.seed)
    print(f"{len(os.sched_getaffinity(0))} CPUs; load average {os.getloadavg()[0]:.2f} at the start; {AnnParams()}")
    rows = []
    for i, n in enumerate(args.sizes):
        start = time.perf_counter()
        x, pairs = synthetic_features(n, args.dim, args.clusters, min(args.copies, n // 4), args.seed)
        made = time.perf_counter() - start
        start = time.perf_counter()
        sims, idx = ann_neighbours(x, args.k)
        seconds = time.perf_counter() - start
        row = {"items": n, "generate s": round(made, 1), "ann s": round(seconds, 1)}
        found = np.concatenate([idx[pairs[:, 1], 0] == pairs[:, 0], idx[pairs[:, 0], 0] == pairs[:, 1]])
        row["planted found"] = f"{found.sum()}/{len(found)}"
        row["median top-1 cos"] = round(float(np.median(sims[:, 0])), 3)
        if i == 0:  # recall against the exact search, on a random sample of queries
            rng = np.random.default_rng(args.seed + 1)
            sample = np.sort(rng.choice(n, min(n, args.queries_sample), replace=False))
            start = time.perf_counter()
            esims, eidx = exact_neighbours(x, args.k + 1, x[sample])
            exact_s = time.perf_counter() - start
            # the exact search over queries given apart finds each query itself first: drop it
            own = eidx == sample[:, None]
            order = np.argsort(own, axis=1, kind="stable")[:, : args.k]
            eidx, esims = np.take_along_axis(eidx, order, 1), np.take_along_axis(esims, order, 1)
            row["recall@1"] = round(float(np.mean(idx[sample, 0] == eidx[:, 0])), 4)
            row[f"exact s ({len(sample)} queries)"] = round(exact_s, 1)
            row["exact s extrapolated"] = round(exact_s * n / len(sample), 0)
            pair = rng.choice(n, size=(2000, 2))
            xn = x[pair] / np.linalg.norm(x[pair], axis=2, keepdims=True)
            row["median random cos"] = round(float(np.median((xn[:, 0] * xn[:, 1]).sum(1))), 3)
        row["peak GB"] = round(peak_gb(), 2)
        print(row, flush=True)
        rows.append(row)
        del x, sims, idx
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    keys = list(dict.fromkeys(k for row in rows for k in row))
    print("\n| " + " | ".join(keys) + " |\n|" + " --- |" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row.get(k, "")) for k in keys) + " |")
    last, first = rows[-1], rows[0]
    print(
        f"\ngoal: {last['items']:,} items within {GOAL_SECONDS:.0f} s: "
        f"{'met' if last['ann s'] <= GOAL_SECONDS else 'NOT met'} ({last['ann s']} s)"
    )
    print(
        f"goal: recall@1 >= {GOAL_RECALL} at {first['items']:,} items: "
        f"{'met' if first['recall@1'] >= GOAL_RECALL else 'NOT met'} ({first['recall@1']})"
    )


if __name__ == "__main__":
    main()
