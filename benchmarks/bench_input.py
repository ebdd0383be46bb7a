"""Images per second per CPU core of each stage of the training input, before and after the per-image policy moved
into the loader's workers and random erasing was vectorised, side by side in one run; and what 2 workers deliver
against 1.

Stages, each timed on one thread (as each loader worker runs; the main process's share too):
- decode: read and decode one cached JPEG at the run's size (``FileItems``: a 2048x1365 photo resized once into
  the cache first, as training does);
- policy: the per-image part of ``flip``, ``autoaugment`` or ``randaugment``. Before: ``BatchAugment.images`` on
  the collated [0, 1] float batch in the main process (uint8 round trip, one image after another). After: flips
  stay batched on the device, and AutoAugment/RandAugment run as ``ImagePolicy`` on each uint8 image in a worker,
  before collation;
- collate: ``default_collate`` of (uint8 image, label) pairs;
- normalise: to float, /255, the model's mean/std (before: a new tensor per operation; after: in place);
- erase: random erasing with probability 0.5 (the miil recipe's). Before: torchvision's ``RandomErasing`` one image
  at a time (``BatchAugment.erase_per_image``); after: ``erase_boxes``, the whole batch at once, in place, noise
  drawn only for the erased pixels;
- transfer: pinned host batch to the GPU (CUDA only; a CPU run says so).

The CPU side per core is the harmonic sum of its stages (1 / sum of seconds per image). The cores needed to feed a
GPU are its training rate over that: TResNet-M trains at 730 img/s at 224 px on a V100 (the paper, mixed precision).
Where the per-image policy should run on a GPU machine (in the workers, as here, or batched on the device) has not
been measured on a GPU yet: these figures are the CPU's.

The loader rows run the real thing: a torch DataLoader over ``FileItems`` with the miil recipe's AutoAugment in its
workers (persistent, started before the clock, one thread each), batches collated; the main process only receives
them (normalising and erasing run on the GPU there).

Usage: python benchmarks/bench_input.py [--sizes 224 448] [--images 16] [--batch-size 64] [--repeats 3]
       [--loader-batches 12]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from bench_highres import write_photos  # benchmarks/bench_highres.py: 2048x1365 photo-like JPEGs
from ratios import ratio_line  # benchmarks/ratios.py

from tresnet_nb.data.augment import BatchAugment, ImagePolicy, erase_boxes
from tresnet_nb.data.base import Split
from tresnet_nb.data.highres import FileItems, cache_split

POLICIES = ("flip", "autoaugment", "randaugment")
ERASING = 0.5  # the miil recipe's
V100_TRAIN_224 = 730.0  # TResNet-M training img/s at 224 px on a V100 (Ridnik et al., WACV 2021, table 1)
MEAN, STD = torch.tensor([0.0, 0.0, 0.0]).view(1, 3, 1, 1), torch.tensor([1.0, 1.0, 1.0]).view(1, 3, 1, 1)


def per_image_rate(work: Callable[[], object], images: int, repeats: int) -> float:
    """Images per second of ``work`` (which handles ``images`` images), the median of ``repeats`` timed calls after
    one untimed call."""
    work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return images / statistics.median(times)


def harmonic(rates: list[float]) -> float:
    """The rate of stages run one after another: 1 / sum(1 / rate)."""
    return 1.0 / sum(1.0 / r for r in rates)


def stage_rates(items: FileItems, batch: int, repeats: int) -> dict[str, float]:
    """Per-core img/s of every stage (and both variants of the changed ones) on ``items``."""
    n = len(items)
    torch.manual_seed(0)
    uint8 = [items[i % n][0] for i in range(batch)]
    labels = [torch.tensor(i % 10) for i in range(batch)]
    collated = torch.stack(uint8)
    floats = collated.float().div(255)
    rates = {
        "decode": per_image_rate(lambda: [items[i] for i in range(n)], n, repeats),
        "collate": per_image_rate(
            lambda: torch.utils.data.default_collate(list(zip(uint8, labels, strict=True))), batch, repeats
        ),
        # the Preprocess step's arithmetic as it was (a new tensor per operation) and as it is (in place)
        "normalise before": per_image_rate(lambda: (collated.float().div_(255) - MEAN) / STD, batch, repeats),
        "normalise after": per_image_rate(lambda: collated.float().div_(255).sub_(MEAN).div_(STD), batch, repeats),
        "erase before": per_image_rate(lambda: BatchAugment("none", ERASING).erase_per_image(floats), batch, repeats),
        "erase after": per_image_rate(lambda: erase_boxes(floats, ERASING, inplace=True), batch, repeats),
    }
    for policy in POLICIES:
        old = BatchAugment(policy)
        rates[f"{policy} before"] = per_image_rate(lambda old=old: old.images(floats.clone()), batch, repeats)
        if policy == "flip":  # flips stay batched: the same work before and after
            rates[f"{policy} after"] = rates[f"{policy} before"]
        else:
            new = ImagePolicy(policy)
            rates[f"{policy} after"] = per_image_rate(lambda new=new: [new(img) for img in uint8], batch, repeats)
    if torch.cuda.is_available():
        pinned = collated.pin_memory()
        rates["transfer"] = per_image_rate(
            lambda: pinned.to("cuda", non_blocking=True) and torch.cuda.synchronize(), batch, repeats
        )
    return rates


def loader_rate(items: FileItems, workers: int, batch: int, batches: int) -> float:
    """Images per second a torch DataLoader over ``items`` (its ImagePolicy in the workers) delivers with
    ``workers`` persistent workers, collated and erased, over ``batches`` batches after the workers started."""
    loader = torch.utils.data.DataLoader(
        items,
        batch_size=batch,
        num_workers=workers,
        persistent_workers=True,
        sampler=torch.utils.data.RandomSampler(items, replacement=True, num_samples=batch * (batches + 2)),
    )
    it = iter(loader)
    next(it)  # the workers are up and the first batch is out
    next(it)
    start = time.perf_counter()
    seen = 0
    for x, _ in it:  # the main process only receives: on a GPU machine normalising and erasing run on the device
        seen += len(x)
    return seen / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 448])
    p.add_argument("--images", type=int, default=16, help="distinct photos, cached at each size")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--loader-batches", type=int, default=12, help="timed batches per loader row")
    args = p.parse_args()
    torch.set_num_threads(1)  # one thread per core, as in each loader worker
    print(
        f"per core: one thread; batch {args.batch_size}; {args.images} photos 2048x1365, cached per size; erasing "
        f"p={ERASING}; {'CUDA' if torch.cuda.is_available() else 'no GPU: transfer not measured'}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "photos").mkdir()
        photos = write_photos(Path(tmp) / "photos", args.images)
        split = Split(
            ids=tuple(x.stem for x in photos), labels=np.zeros(len(photos), dtype=np.int64), paths=tuple(photos)
        )
        for size in args.sizes:
            items = FileItems(cache_split(split, size, Path(tmp) / "cache", workers=2), size)
            r = stage_rates(items, args.batch_size, args.repeats)
            print(f"\n{size} px, img/s per core: " + ", ".join(f"{k} {v:.0f}" for k, v in r.items()))
            shared = [r["decode"], r["collate"]] + ([r["transfer"]] if "transfer" in r else [])
            for policy in POLICIES:
                before = harmonic([*shared, r["normalise before"], r[f"{policy} before"], r["erase before"]])
                after = harmonic([*shared, r["normalise after"], r[f"{policy} after"], r["erase after"]])
                feed = (
                    (
                        f"; cores to feed TResNet-M's V100 training rate ({V100_TRAIN_224:.0f} img/s): "
                        f"{V100_TRAIN_224 / before:.1f} before, {V100_TRAIN_224 / after:.1f} after"
                    )
                    if size == 224
                    else ""
                )
                print(f"  {policy}+erasing CPU side: before {before:.0f}, after {after:.0f} img/s per core{feed}")
                print(ratio_line(f"{size} px {policy}+erasing: after / before per core", after, before, "img/s"))
        size = args.sizes[0]
        items = FileItems(cache_split(split, size, Path(tmp) / "cache", workers=2), size)
        items.policy = ImagePolicy("autoaugment")
        one = loader_rate(items, 1, args.batch_size, args.loader_batches)
        two = loader_rate(items, 2, args.batch_size, args.loader_batches)
        print(f"\nloader at {size} px, autoaugment in the workers: 1 worker {one:.0f} img/s, 2 workers {two:.0f}")
        print(ratio_line("2 workers / 1 worker", two, one, "img/s"))
        start = time.perf_counter()
        next(iter(torch.utils.data.DataLoader(items, batch_size=args.batch_size, num_workers=2)))
        print(
            f"a loader's start (2 workers up, first batch out): {time.perf_counter() - start:.2f} s; fastai's "
            "DataLoader pays it at every epoch (its workers are not persistent)"
        )


if __name__ == "__main__":
    main()
