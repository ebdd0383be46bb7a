"""Images per second delivered at 448 px from 2048x1365 JPEGs: naive decode+resize vs the resize-once cache.

Both sides run the same torch DataLoader (2 workers, batches of uint8 tensors); the cache is timed after its first
epoch (the build is reported separately). Usage: python benchmarks/bench_highres.py [--images 64] [--size 448]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from ratios import ratio_line  # benchmarks/ratios.py

from tresnet_nb.data.base import Split
from tresnet_nb.data.highres import FileItems, cache_split


def write_photos(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` 2048x1365 JPEGs with photo-like content (smooth shapes plus fine texture), quality 90."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        base = Image.fromarray(rng.integers(0, 256, (24, 36, 3), dtype=np.uint8)).resize((2048, 1365), Image.BICUBIC)
        texture = rng.normal(0, 12, (1365, 2048, 3))
        pixels = np.clip(np.asarray(base, dtype=np.float32) + texture, 0, 255).astype(np.uint8)
        path = folder / f"photo_{i:04d}.jpg"
        Image.fromarray(pixels).save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def delivered_per_second(items: FileItems, workers: int, batch_size: int, epochs: int = 1) -> float:
    """Images per second over ``epochs`` passes, workers started before the clock (persistent, as in training)."""
    loader = torch.utils.data.DataLoader(items, batch_size=batch_size, num_workers=workers, persistent_workers=True)
    iter(loader)  # start the workers
    start = time.perf_counter()
    n = sum(len(x) for _ in range(epochs) for x, _ in loader)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_photos(Path(tmp), args.images)
        split = Split(ids=tuple(p.stem for p in paths), labels=np.zeros(len(paths), dtype=np.int64), paths=tuple(paths))
        naive = delivered_per_second(FileItems(split, args.size, draft=False), args.workers, 16)
        start = time.perf_counter()
        cached = cache_split(split, args.size, Path(tmp) / "cache", workers=args.workers)
        build = len(paths) / (time.perf_counter() - start)
        fast = delivered_per_second(FileItems(cached, args.size), args.workers, 16, epochs=3)
    print(f"{args.images} JPEGs 2048x1365 -> {args.size} px, {args.workers} workers")
    print(f"naive decode+resize      {naive:7.1f} img/s")
    print(f"cache build (draft mode) {build:7.1f} img/s (first epoch only)")
    print(f"cached, later epochs     {fast:7.1f} img/s")
    print(ratio_line("cached / naive", fast, naive, "img/s"))


if __name__ == "__main__":
    main()
