"""High-resolution input: a resize-once JPEG cache with draft-mode decoding, and DataLoaders over image files.

Transfer results in the paper use 368-448 px and Kaggle images are large (Plant Pathology 2048x1365), so on a
2-core machine decoding, not the network, is the bottleneck. Each source image is decoded once, with PIL's JPEG
draft mode (the decoder downscales by 1/2, 1/4 or 1/8 while decoding), squished to the run's size, and stored as
a small JPEG; later epochs decode only that. Measured here with PIL alone (FACTS.md): naive decode+resize of a
2048x1365 JPEG to 448 px about 37 img/s per core, draft mode about 110, decoding a cached 448 px JPEG about 830.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from PIL import Image

from .. import files
from ..runtime import every_rank, is_main, loader_workers, machine_share, progress, worker_count
from .arrays import Preprocess, stratified_head
from .base import Dataset, DatasetError, Split, class_balanced_weights
from .verify import PROGRESS_FROM, bad_images, screen_images

CACHE_QUALITY = 93  # JPEG quality of cached images: visually lossless at these sizes, about 40 KB at 448 px
# Cached copies are JPEG only where that pays: training images scaled down from larger ones (decoding a cached 448 px
# JPEG is about 5x faster than a PNG). Evaluation splits, and images not scaled down (small sources such as 28 px
# Fashion-MNIST or 8 px digits, whose decoding costs little anyway), are cached losslessly as PNG: through JPEG a
# 2-epoch EfficientNet-Lite0 changed its top-1 on 35% of 200 Fashion-MNIST validation photos, and training on JPEG
# copies of the 64 px digits while validating on the images themselves cost it 0.575 against 0.706 accuracy
# (benchmarks/bench_vs_fastai.py --arch tf_efficientnet_lite0 --weights LITE0 --datasets digits, seed 0).
LOSSLESS_SUFFIX = ".png"  # an evaluation split's copies; training copies are '.img', PNG or JPEG as above
# Bilinear for every network: TResNet's pretrained cfgs use it (timm tresnet.py); for weights whose cfg says bicubic
# (tf_efficientnet_lite0) bicubic resizing did worse here (benchmarks/bench_vs_fastai.py --datasets digits_redrawn,
# 3 seeds, ImageNet weights: mean accuracy 0.7454 bicubic against 0.7926 bilinear), so the loaders do not follow it.
RESAMPLE = Image.Resampling.BILINEAR


def decode_resized(
    path: Path, size: int, box: tuple[int, int, int, int] | None = None, draft: bool = True
) -> Image.Image:
    """Open the image at ``path``, crop to ``box`` if given, and squish it to ``size`` x ``size`` RGB; with
    ``draft`` the JPEG decoder produces the smallest scale that is still at least ``size``."""
    with Image.open(path) as img:
        if draft and img.format == "JPEG" and box is None:
            img.draft("RGB", (size, size))  # never below the requested size: draft keeps scale >= requested
        img = img.convert("RGB")
        if box is not None:
            img = img.crop(box)
        return img.resize((size, size), RESAMPLE, reducing_gap=None)


def cache_key(path: Path | str, size: int, box: tuple[int, ...] | None, dirs: dict[str, str] | None = None) -> str:
    """A name for the cached copy that changes when the source file, the size or the crop box changes: a hash of
    the file's resolved path, size, modification time, ``size`` and ``box``. ``dirs`` remembers resolved folders
    across calls, so that a million files cost one ``lstat`` each rather than one per path component (the key is
    the same: a file that is not a symbolic link resolves to its resolved folder and its name)."""
    text = os.fspath(path)
    st = os.lstat(text)
    if stat.S_ISLNK(st.st_mode):
        resolved = os.path.realpath(text)  # what Path.resolve() returns
        st = os.stat(resolved)
    else:
        folder, name = os.path.split(text)
        parent = dirs.get(folder) if dirs is not None else None
        if parent is None:
            parent = os.path.realpath(folder or ".")
            if dirs is not None:
                dirs[folder] = parent
        resolved = os.path.join(parent, name)
    return hashlib.sha1(f"{resolved}|{st.st_size}|{st.st_mtime_ns}|{size}|{box}".encode()).hexdigest()


def _cache_one(job: tuple[Path, Path, int, tuple[int, int, int, int] | None]) -> str | None:
    source, target, size, box = job
    if target.exists():
        return None
    try:
        with Image.open(source) as header:  # the header only: is the image scaled down?
            width, height = header.size if box is None else (box[2] - box[0], box[3] - box[1])
        img = decode_resized(source, size, box)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        return f"{source}: {type(err).__name__}: {err}"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    if target.suffix == LOSSLESS_SUFFIX or min(width, height) <= size:  # not scaled down: PNG
        img.save(tmp, "PNG", compress_level=1)
    else:
        img.save(tmp, "JPEG", quality=CACHE_QUALITY)
    os.replace(tmp, target)  # atomic: an interrupted build never leaves a half-written file behind
    return None


def cache_split(
    split: Split,
    size: int,
    cache_dir: Path | None = None,
    crop: bool = False,
    workers: int | None = None,
    lossless: bool = False,
) -> Split:
    """``split`` with every image resized once to ``size`` px into ``cache_dir`` (reused across runs; safe to
    interrupt), cropped to its boxes when ``crop``; stored as PNG when ``lossless`` (evaluation splits, so that the
    metric is that of the images as decoded, not of a recompressed copy) or not scaled down, else as JPEG. Raises
    naming every image that could not be decoded."""
    if split.paths is None:
        return split
    jobs = _cache_jobs(split, size, cache_dir, crop, lossless)
    _write_cache(jobs, workers)
    return Split(ids=split.ids, labels=split.labels, paths=tuple(job[1] for job in jobs), boxes=None)


CacheJob = tuple[Path, Path, int, "tuple[int, int, int, int] | None"]  # source, cached copy, size, crop box


def _cache_jobs(split: Split, size: int, cache_dir: Path | None, crop: bool, lossless: bool = False) -> list[CacheJob]:
    root = os.path.join(Path(cache_dir) if cache_dir is not None else files.cache_dir(), str(size))
    jobs, dirs = [], {}
    for i, source in enumerate(split.paths):
        box = tuple(int(v) for v in split.boxes[i]) if crop and split.boxes is not None else None
        key = cache_key(source, size, box, dirs)  # string paths here: pathlib's parsing costs seconds on a million
        jobs.append((source, Path(f"{root}/{key[:2]}/{key}{LOSSLESS_SUFFIX if lossless else '.img'}"), size, box))
    return jobs


def _write_cache(jobs: list[CacheJob], workers: int | None = None, show: bool = True) -> None:
    """Write the cached copies of ``jobs`` that do not exist yet; raise naming every image that did not decode."""
    todo = [job for job in jobs if not job[1].exists()]
    errors: list[str] = []
    if todo:
        workers = workers or min(len(todo), worker_count())
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = pool.map(_cache_one, todo, chunksize=16)
            for message in progress(results, show and len(todo) >= PROGRESS_FROM, total=len(todo)):
                if message:
                    errors.append(message)
    if errors:
        shown = "\n  ".join(errors[:20])
        raise DatasetError(
            f"{len(errors)} images could not be decoded:\n  {shown}\nFix or remove them, or verify "
            f"the dataset with `python -m tresnet_nb data verify`"
        )


def shared_bad_images(split: Split, label: str = "") -> list[tuple[int, str]]:
    """:func:`~tresnet_nb.data.verify.bad_images` of ``split`` (under ``label``), the work shared by the processes
    of a data-parallel job: rank r of W checks items r, r + W, ..., and every rank gets all findings."""

    def share(rank: int, world: int) -> list[tuple[int, str]]:
        mine = np.arange(rank, len(split), world)
        part = split if world == 1 else split.subset(mine)
        return [(int(mine[j]), message) for j, message in bad_images(part, label=label)]

    return sorted(found for part in every_rank(share) for found in part)


def shared_cache_split(
    split: Split, size: int, cache_dir: Path | None = None, crop: bool = False, lossless: bool = False
) -> Split:
    """:func:`cache_split`, the writing shared by the processes of the job on this machine (they fill its cache
    folder together: process i of n writes images i, i + n, ...); every process gets the whole cached split."""
    if split.paths is None:
        return split
    jobs = _cache_jobs(split, size, cache_dir, crop, lossless)
    index, count = machine_share()
    every_rank(lambda rank, world: _write_cache(jobs[index::count], show=rank == 0))
    # Then each writes what is still missing here: nothing, unless two machines share a host name but not a cache
    # (containers), whose processes wrote on another machine's disk. It costs one existence check per image.
    every_rank(lambda rank, world: _write_cache(jobs, show=rank == 0))
    return Split(ids=split.ids, labels=split.labels, paths=tuple(job[1] for job in jobs), boxes=None)


class FileItems(torch.utils.data.Dataset):
    """Items ``(uint8 3xSxS tensor, label)`` from image files already at the run's size (see :func:`cache_split`);
    files of another size are squished on the fly, so an uncached split works too, only slower. ``policy`` (set by
    :func:`~tresnet_nb.data.arrays.set_augment`) is a per-image augmentation applied to each uint8 image, in the
    loader's worker processes."""

    def __init__(self, split: Split, size: int, crop: bool = False, draft: bool = True) -> None:
        self.split, self.size, self.crop, self.draft = split, size, crop, draft
        self.policy: Callable[[torch.Tensor], torch.Tensor] | None = None
        # an unlabelled split (a Kaggle test set) yields images alone: fastai then predicts without a loss
        labels = split.labels
        self.labels = (
            None if labels is None else torch.as_tensor(labels, dtype=torch.float32 if labels.ndim == 2 else torch.long)
        )

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        box = None
        if self.crop and self.split.boxes is not None:
            box = tuple(int(v) for v in self.split.boxes[i])
        img = decode_resized(self.split.paths[i], self.size, box, self.draft)
        image = torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()
        if self.policy is not None:
            image = self.policy(image)
        return (image,) if self.labels is None else (image, self.labels[i])


def file_dls(
    train: Split,
    valid: Split,
    size: int,
    batch_size: int,
    data_cfg: dict[str, Any],
    device: torch.device,
    num_workers: int | None = None,
    balanced: bool = False,
    seed: int = 0,
) -> DataLoaders:
    """fastai DataLoaders over image-file splits at ``size`` (flip augmentation on train, the model's mean/std);
    ``balanced`` draws training items class-balanced (long-tailed sets such as Herbarium 2020). Worker processes:
    ``num_workers``, else :func:`~tresnet_nb.runtime.loader_workers`; on CUDA batches go through pinned memory."""
    workers = loader_workers(device) if num_workers is None else num_workers
    pin = {"pin_memory": True} if device.type == "cuda" else {}
    mean, std = tuple(data_cfg["mean"]), tuple(data_cfg["std"])
    train_items, valid_items = FileItems(train, size), FileItems(valid, size)
    bs = min(batch_size, len(train_items))
    extra = {"get_idxs": balanced_indices(train.labels, seed)} if balanced else {"shuffle": True}
    train_dl = DataLoader(
        train_items,
        bs=bs,
        drop_last=len(train_items) >= 2 * bs,
        num_workers=workers,
        device=device,
        after_batch=Preprocess(mean, std, augment=True),
        **extra,
        **pin,
    )
    valid_dl = DataLoader(
        valid_items,
        bs=batch_size * 2,
        num_workers=workers,
        device=device,
        after_batch=Preprocess(mean, std, augment=False),
        **pin,
    )
    return DataLoaders(train_dl, valid_dl, device=device)


def predict_dl(
    split: Split,
    size: int,
    batch_size: int,
    data_cfg: dict[str, Any],
    device: torch.device,
    cache_dir: Path | None = None,
    crop: bool = False,
    num_workers: int | None = None,
) -> DataLoader:
    """A DataLoader over every image of ``split`` (labelled or not, e.g. a Kaggle test set) in split order,
    resized once into the cache, for tresnet_nb.predict(learn, dl=...)."""
    workers = loader_workers(device) if num_workers is None else num_workers
    items = FileItems(cache_split(split, size, cache_dir, crop=crop, lossless=True), size)
    mean, std = tuple(data_cfg["mean"]), tuple(data_cfg["std"])
    return DataLoader(
        items,
        bs=batch_size,
        shuffle=False,
        num_workers=workers,
        device=device,
        after_batch=Preprocess(mean, std, augment=False),
        pin_memory=device.type == "cuda",
    )


def balanced_indices(labels: np.ndarray, seed: int) -> Callable[[], list[int]]:
    """An epoch-order function for fastai's DataLoader: len(labels) draws with replacement, each class equally
    likely (single-label ``labels``), from a generator seeded with ``seed``."""
    if labels is None or labels.ndim != 1:
        raise ValueError("class-balanced sampling needs single-label training labels")
    weights = class_balanced_weights(labels, int(labels.max()) + 1)
    rng = np.random.default_rng(seed)
    return lambda: rng.choice(len(labels), size=len(labels), replace=True, p=weights).tolist()


def cap_items(split: Split, max_items: int | None, n_classes: int) -> Split:
    """At most ``max_items`` items of ``split``: balanced over classes (single-label) or labels (multi-label: every
    label with positives keeps some), the first ones when unlabelled."""
    if max_items is None or max_items >= len(split):
        return split
    if split.labels is not None:
        return split.subset(stratified_head(split.labels, max_items, n_classes))
    return split.subset(np.arange(max_items))


def prepare_file_dls(
    ds: Dataset,
    eval_split: str,
    size: int,
    batch_size: int,
    data_cfg: dict[str, Any],
    device: torch.device,
    out_dir: Path,
    on_bad_image: str = "error",
    max_items: int | None = None,
    crop: bool = False,
    cache_dir: Path | None = None,
    balanced: bool = False,
    seed: int = 0,
) -> DataLoaders:
    """DataLoaders for ``ds`` (train and ``eval_split``): every image checked first (``on_bad_image`` 'error' or
    'skip', skipped files listed in ``out_dir``/skipped_images.txt), then resized once into the cache."""
    n = len(ds.class_names)
    splits = {}
    for name in ("train", eval_split):
        split = cap_items(ds[name], max_items if name == "train" else eval_cap(max_items, n), n)
        log = Path(out_dir) / f"skipped_images_{name}.txt" if is_main() else None  # rank 0 writes the run's files
        split = screen_images(split, on_bad_image, log=log, label=name, find=shared_bad_images)
        splits[name] = shared_cache_split(split, size, cache_dir, crop=crop, lossless=name != "train")
    return file_dls(
        splits["train"], splits[eval_split], size, batch_size, data_cfg, device, balanced=balanced, seed=seed
    )


def eval_cap(max_items: int | None, n_classes: int) -> int | None:
    return None if max_items is None else max(n_classes, max_items // 2)
