"""Herbarium 2020 at full size in its official schema: the time and peak memory of every step before training.

Writes the competition's layout (``nybg2020/train/metadata.json`` with images, annotations, 32,093 long-tailed
categories with family and genus, regions and licenses; ``nybg2020/test/metadata.json`` with images only; 1,030,747
train and 138,292 test image files in the official folders), the image files being hard links to a few thousand
small distinct JPEGs (ext4 allows ~65,000 links per file; here at most ``ceil(items / distinct)``). Then each step
runs in a fresh child process, which reports its wall time and the peak resident memory of itself and of the largest
of its own children (loader workers, screening processes):

- read: ``herbarium2020.read`` (both metadata files, labels, the stratified holdout, a stat of every file);
- sampler: one epoch's class-balanced order over the training split (``balanced_indices``);
- verify 1 / verify 2: ``python -m tresnet_nb data verify herbarium2020`` on the new dataset, then again unchanged
  (the screening cache lets the second skip what was checked; goal: at most 60 s and 4 GB on a 2-core CPU);
- cache build: every training and validation image resized once to ``--size`` (the first notebook run's work);
- first batch: a training notebook's rerun, ``prepare_file_dls`` (read, screening, cache planning, loaders) up to
  its first training batch (goal: at most 90 s).

Usage: python benchmarks/bench_fullscale.py [--root DIR] [--scale 1.0] [--distinct 2000] [--size 64]
       [--steps read sampler verify1 verify2 cache first_batch] [--keep] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

TRAIN, TEST, CATEGORIES = 1_030_747, 138_292, 32_093  # the competition's counts (Kaggle data page)
STEPS = ("read", "sampler", "verify1", "verify2", "cache", "first_batch")
GOALS = {"verify2": (60.0, 4.0), "first_batch": (90.0, None)}  # seconds, GB


def long_tail(total: int, classes: int, rng: np.random.Generator) -> np.ndarray:
    """Per-class counts summing to ``total``, every class at least one image, power-law long-tailed (at full size
    the largest class has about a thousand times the images of the smallest: 4,186 and 4), in a random class order."""
    weights = 1.0 / (np.arange(classes) + 50.0) ** 1.1
    counts = 1 + np.floor(weights / weights.sum() * (total - classes)).astype(np.int64)
    counts[: total - int(counts.sum())] += 1  # the rounding remainder to the largest classes
    return rng.permutation(counts)


def write_dataset(root: Path, scale: float, distinct: int, seed: int = 0) -> dict[str, float]:
    """The dataset under ``root`` at ``scale`` of the official counts; returns what it wrote and how long it took."""
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    n_train, n_test = max(1, round(TRAIN * scale)), max(1, round(TEST * scale))
    n_classes = min(n_train, max(1, round(CATEGORIES * scale)))
    base = root / "nybg2020"
    pool = root / "distinct"
    pool.mkdir(parents=True, exist_ok=True)
    sources = []
    for k in range(distinct):  # small sheets, a colour each, with texture: real JPEGs to decode
        pixels = rng.integers(0, 256, (12, 8, 3), dtype=np.uint8)
        img = Image.fromarray(pixels).resize((64, 96), Image.BILINEAR)
        sources.append(pool / f"sheet{k:05d}.jpg")
        img.save(sources[-1], quality=85)
    category_ids = np.sort(rng.choice(40_000, size=n_classes, replace=False))
    counts = long_tail(n_train, n_classes, rng)
    labels = np.repeat(category_ids, counts)
    image_ids = rng.choice(3 * (n_train + n_test), size=n_train + n_test, replace=False)
    train_ids, test_ids = image_ids[:n_train], image_ids[n_train:]
    info = {
        "year": 2020,
        "version": "full-size benchmark",
        "description": "tresnet_nb bench_fullscale",
        "contributor": "",
        "url": "",
        "date_created": "2020-01-01 00:00:00",
    }
    licenses = [{"id": 0, "name": "benchmark", "url": ""}]
    train_names = [
        f"images/{c // 100:03d}/{c % 100:02d}/{i}.jpg" for c, i in zip(labels.tolist(), train_ids.tolist(), strict=True)
    ]
    test_names = [f"images/{i // 10_000:03d}/{i}.jpg" for i in test_ids.tolist()]
    train_meta = {
        "annotations": [
            {"id": i, "image_id": i, "category_id": c, "region_id": i % 7}
            for i, c in zip(train_ids.tolist(), labels.tolist(), strict=True)
        ],
        "categories": [
            {"id": c, "name": f"Species {c}", "family": f"Family {c % 300}", "genus": f"Genus {c % 4000}"}
            for c in category_ids.tolist()
        ],
        "images": [
            {"id": i, "file_name": n, "height": 96, "width": 64, "license": 0}
            for i, n in zip(train_ids.tolist(), train_names, strict=True)
        ],
        "info": info,
        "licenses": licenses,
        "regions": [{"id": r, "name": f"region {r}"} for r in range(7)],
    }
    test_meta = {
        "images": [
            {"id": i, "file_name": n, "height": 96, "width": 64, "license": 0}
            for i, n in zip(test_ids.tolist(), test_names, strict=True)
        ],
        "info": info,
        "licenses": licenses,
    }
    for split, meta in (("train", train_meta), ("test", test_meta)):
        (base / split).mkdir(parents=True, exist_ok=True)
        with open(base / split / "metadata.json", "w", encoding="utf-8") as f:
            json.dump(meta, f)
    meta_s = time.perf_counter() - start
    links = 0
    for split, names in (("train", train_names), ("test", test_names)):
        folder = base / split
        for d in sorted({n.rpartition("/")[0] for n in names}):
            (folder / d).mkdir(parents=True, exist_ok=True)
        for k, name in enumerate(names):
            os.link(sources[k % distinct], folder / name)
            links += 1
    return {
        "train": n_train,
        "test": n_test,
        "categories": n_classes,
        "largest class": int(counts.max()),
        "median class": float(np.median(counts)),
        "smallest class": int(counts.min()),
        "links per file": math.ceil(links / distinct),
        "metadata MB": round(sum((base / s / "metadata.json").stat().st_size for s in ("train", "test")) / 1e6, 1),
        "write metadata s": round(meta_s, 1),
        "write s": round(time.perf_counter() - start, 1),
    }


# ---------------------------------------------------------------------------------------- steps (child processes)


def step(name: str, root: Path, size: int) -> dict[str, object]:
    """Run step ``name`` in this process and return what it measured."""
    from tresnet_nb.data import get_dataset

    out: dict[str, object] = {}
    if name == "read":
        ds = get_dataset("herbarium2020").read(root)
        out = {split: len(ds[split]) for split in ds.splits}
    elif name == "sampler":
        from tresnet_nb.data.highres import balanced_indices

        ds = get_dataset("herbarium2020").read(root, check_files=False)
        t0 = time.perf_counter()
        order = balanced_indices(ds["train"].labels, seed=0)()
        out = {
            "draws": len(order),
            "classes drawn": int(len(np.unique(ds["train"].labels[order]))),
            "order s": round(time.perf_counter() - t0, 2),
        }
    elif name in ("verify1", "verify2"):
        cmd = [sys.executable, "-m", "tresnet_nb", "data", "verify", "herbarium2020", "--root", str(root)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in (done.stdout + done.stderr).splitlines() if "unchanged since" in ln or "checked" in ln]
        out = {"exit": done.returncode, "said": lines[-3:]}
    elif name == "cache":
        from tresnet_nb.data.highres import cache_split

        ds = get_dataset("herbarium2020").read(root, check_files=False)
        for split in ("train", "valid"):
            cache_split(ds[split], size)
        out = {"cached": len(ds["train"]) + len(ds["valid"]), "size": size}
    elif name == "first_batch":
        import torch

        from tresnet_nb.data.highres import prepare_file_dls

        ds = get_dataset("herbarium2020").read(root)
        mean = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
        with tempfile.TemporaryDirectory() as tmp:
            dls = prepare_file_dls(ds, "valid", size, 32, mean, torch.device("cpu"), Path(tmp), balanced=True)
            x, _ = next(iter(dls.train))
        out = {"batch": list(x.shape)}
    else:
        raise ValueError(f"unknown step {name!r}; choose from {STEPS}")
    return out


def run_child(name: str, root: Path, size: int) -> dict[str, object]:
    """Step ``name`` in a fresh interpreter: its wall seconds, peak RSS (itself, its largest child) and details."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "step.json"
        start = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                name,
                "--root",
                str(root),
                "--size",
                str(size),
                "--result",
                str(result),
            ],
            capture_output=True,
            text=True,
            env=env,
        )
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"step {name} failed:\n{done.stderr[-3000:]}")
        record = json.loads(result.read_text())
    return {"step": name, "seconds": round(seconds, 1), **record}


def child_main(name: str, root: Path, size: int, result: Path) -> None:
    details = step(name, root, size)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # ru_maxrss is in KiB on Linux
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9
    result.write_text(json.dumps({"peak GB": round(own, 2), "children peak GB": round(kids, 2), **details}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=None, help="where to write it (default: a temporary folder)")
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the official counts (1.0: full size)")
    p.add_argument("--distinct", type=int, default=2000, help="distinct JPEGs behind the hard links")
    p.add_argument("--size", type=int, default=64, help="cache and loader size (the cpu preset's 64)")
    p.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS)
    p.add_argument("--keep", action="store_true", help="keep the dataset (and reuse it if --root holds one)")
    p.add_argument("--cache", type=Path, default=None, help="TRESNET_NB_CACHE to use and keep (default: a fresh one)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child_main(args.child, args.root, args.size, args.result)
    root = args.root or Path(tempfile.mkdtemp(prefix="bench_fullscale-"))
    cache = args.cache or Path(tempfile.mkdtemp(prefix="bench_fullscale-cache-"))
    os.environ["TRESNET_NB_CACHE"] = str(cache)  # screening and resize caches: fresh for this run
    try:
        if (root / "nybg2020" / "train" / "metadata.json").exists() and args.keep:
            print(f"reusing the dataset at {root}")
        else:
            wrote = write_dataset(root, args.scale, args.distinct)
            print(f"wrote Herbarium 2020 at scale {args.scale} under {root}: " + json.dumps(wrote))
        rows = []
        for name in args.steps:
            row = run_child(name, root, args.size)
            rows.append(row)
            print(json.dumps(row), flush=True)
        print("\n| step | seconds | peak GB | children peak GB | goal |\n| --- | --- | --- | --- | --- |")
        for row in rows:
            goal = GOALS.get(str(row["step"]))
            verdict = ""
            if goal:
                secs, gb = goal
                ok = row["seconds"] <= secs and (gb is None or max(row["peak GB"], row["children peak GB"]) <= gb)
                verdict = f"<= {secs:.0f} s{f', <= {gb:.0f} GB' if gb else ''}: {'met' if ok else 'NOT met'}"
            print(f"| {row['step']} | {row['seconds']} | {row['peak GB']} | {row['children peak GB']} | {verdict} |")
    finally:
        if args.cache is None:
            shutil.rmtree(cache, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
