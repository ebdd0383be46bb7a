"""Notebook 09 on real photos with planted faults: do the label errors, the copies and the calibration come out?

The data: an image folder (``train/<class>/``, ``valid/<class>/``, PNG) of real Fashion-MNIST photos from the
embedded subset (the first items of each class: 2,400 train, 600 valid by default), then
- 5% of the training labels flipped: the file moved to another class's folder, chosen at random;
- copies of validation images placed among the training files: ``--near`` near copies (enlarged 28 -> 36 px and
  saved as JPEG at quality 75, so neither the bytes nor the pixels match) and ``--exact`` byte-identical ones,
  each under the class of the original.

Then the notebook itself runs headless (``python -m tresnet_nb run`` does the same) from random initialisation at
64 px with its cross-fit, and the benchmark reads its files and prints:
- of the flipped items, the share among the first ``n_flipped`` rows of ``label_issues.csv`` (goal: at least half);
- of the planted copies, the share among the first 2 x ``n_copies`` rows of ``duplicates.csv`` with the right kind,
  ``near`` or ``exact`` (goal: at least 90%; the rows rank all pairs, within train and across splits, and
  Fashion-MNIST has near-identical items of its own);
- the NLL before and after temperature scaling, each evaluation half scaled by the temperature fitted on the other
  (goal: lower after; each half's numbers too), and the notebook's wall time with what each step cost. Rerun with
  the same ``--work`` and ``--keep``, the notebook reuses the run and the cross-fit's folds it finds there.

Usage: python benchmarks/bench_error_analysis.py [--train 2400] [--valid 600] [--near 30] [--exact 10]
       [--epochs 2] [--folds 4] [--seed 0] [--work DIR] [--keep]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from tresnet_nb.data import get_dataset
from tresnet_nb.data.arrays import stratified_head
from tresnet_nb.runner import run_notebooks

ROOT = Path(__file__).resolve().parents[1]
STEM = "09_error_analysis"


def write_folder(root: Path, args: argparse.Namespace) -> dict:
    """The planted image folder under ``root``; returns what was planted (paths resolved)."""
    ds = get_dataset("fashion_mnist").read(None)
    names = ds.class_names
    n = len(names)
    rng = np.random.default_rng(args.seed)
    train, test = ds["train"], ds["test"]
    keep_t = stratified_head(train.labels, args.train, n)
    keep_v = stratified_head(test.labels, args.valid, n)
    folder = lambda c: f"{c:02d}_{''.join(ch if ch.isalnum() else '_' for ch in names[c])}"  # noqa: E731
    for split in ("train", "valid"):
        for c in range(n):
            (root / split / folder(c)).mkdir(parents=True, exist_ok=True)
    flipped = set(rng.choice(len(keep_t), int(round(0.05 * len(keep_t))), replace=False).tolist())
    planted = {"flipped": [], "near": [], "exact": []}
    for j, i in enumerate(keep_t):
        given = int(train.labels[i])
        if j in flipped:
            given = int((given + rng.integers(1, n)) % n)
        path = root / "train" / folder(given) / f"train_{i:05d}.png"
        Image.fromarray(train.images[i]).save(path)
        if j in flipped:
            planted["flipped"].append(str(path.resolve()))
    valid_paths = []
    for i in keep_v:
        path = root / "valid" / folder(int(test.labels[i])) / f"test_{i:05d}.png"
        Image.fromarray(test.images[i]).save(path)
        valid_paths.append((path, int(test.labels[i])))
    chosen = rng.choice(len(valid_paths), args.near + args.exact, replace=False)
    for k, v in enumerate(chosen):
        source, label = valid_paths[v]
        if k < args.near:
            copy = root / "train" / folder(label) / f"copy_near_{k:03d}.jpg"
            Image.open(source).resize((36, 36), Image.BILINEAR).save(copy, quality=75)
            planted["near"].append((str(copy.resolve()), str(source.resolve())))
        else:
            copy = root / "train" / folder(label) / f"copy_exact_{k:03d}.png"
            shutil.copyfile(source, copy)
            planted["exact"].append((str(copy.resolve()), str(source.resolve())))
    return planted


def found_copies(rows: list[dict], planted: dict, n_copies: int) -> tuple[int, int]:
    """(found, found with the right kind) of the planted pairs among the first 2 x ``n_copies`` rows."""
    top = {frozenset((r["path_a"], r["path_b"])): r["kind"] for r in rows[: 2 * n_copies]}
    found = right = 0
    for kind in ("near", "exact"):
        for a, b in planted[kind]:
            got = top.get(frozenset((a, b)))
            found += got is not None
            right += got == kind
    return found, right


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", type=int, default=2400)
    p.add_argument("--valid", type=int, default=600)
    p.add_argument("--near", type=int, default=30)
    p.add_argument("--exact", type=int, default=10)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=None)
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    args = p.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_error_analysis_"))
    try:
        root = work / "data"
        planted = write_folder(root, args)
        n_flipped, n_copies = len(planted["flipped"]), len(planted["near"]) + len(planted["exact"])
        print(
            f"folder: {args.train} train + {n_copies} planted copies, {args.valid} valid; {n_flipped} labels "
            f"flipped; {args.epochs} epochs at 64 px from random init, {args.folds}-fold cross-fit"
        )
        start = time.perf_counter()
        params = {
            "DATASET": "folder",
            "DATA_ROOT": str(root),
            "WEIGHTS": "none",
            "IMG_SIZE": 64,
            "BATCH_SIZE": 32,
            "EPOCHS": args.epochs,
            "SEED": args.seed,
            "FOLDS": args.folds,
            "N_SHOW": 18,
        }
        (outcome,) = run_notebooks([ROOT / "notebooks" / f"{STEM}.ipynb"], work / "runs", "cpu", params)
        wall = time.perf_counter() - start
        if outcome.status != "ok":
            print(f"notebook failed: {outcome.error}")
            return 1
        out = work / "runs" / STEM
        with open(out / "label_issues.csv") as f:
            issues = list(csv.DictReader(f))
        with open(out / "duplicates.csv") as f:
            dups = list(csv.DictReader(f))
        cal = json.loads((out / "calibration.json").read_text())
        record = json.loads((out / "metrics.json").read_text())
        flips_top = len({r["path"] for r in issues[:n_flipped]} & set(planted["flipped"]))
        found, right = found_copies(dups, planted, n_copies)
        print(
            f"\nrun: {record['metric_name']} {record['metric_value']:.4f}; without evaluation items that have a "
            f"copy in train {record['metric_value_deduplicated']:.4f}; train {record['train_seconds']:.0f} s"
        )
        print(
            f"label issues: {len(issues)} flagged; {flips_top}/{n_flipped} flips among the first {n_flipped} rows "
            f"({flips_top / n_flipped:.0%}; goal >= 50%): {'met' if flips_top >= n_flipped / 2 else 'MISSED'}"
        )
        print(
            f"duplicates: {len(dups)} pairs; {found}/{n_copies} planted copies among the first {2 * n_copies} rows, "
            f"{right} with the right kind ({right / n_copies:.0%}; goal >= 90%): "
            f"{'met' if right >= 0.9 * n_copies else 'MISSED'}"
        )
        halves = "; ".join(
            f"T={h['temperature']:.3f} fitted on {h['n_fit']}, NLL on the other {h['n_eval']} "
            f"{h['nll_before']:.4f} -> {h['nll_after']:.4f}"
            for h in cal["halves"]
        )
        print(
            f"calibration: kept T={cal['temperature']:.3f} (fitted on all {cal['n_eval']}); cross-fitted over the "
            f"{cal['n_eval']} items: NLL {cal['nll_before']:.4f} -> {cal['nll_after']:.4f} "
            f"({'lower: met' if cal['nll_after'] < cal['nll_before'] else 'MISSED'}), ECE {cal['ece_before']:.4f} -> "
            f"{cal['ece_after']:.4f}; halves: {halves}"
        )
        print(f"wall: {wall:.0f} s for the notebook (training, {args.folds}-fold cross-fit, features, Grad-CAM)")
        for line in record.get("step_seconds", {}).items():
            print(f"  {line[0]}: {line[1]:.0f} s")
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
