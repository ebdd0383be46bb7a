"""Dataset verification: layout and labels (through the reader), every image opened, counts per split and class.

Used by ``python -m tresnet_nb data verify`` and, before training, by :func:`screen_images`, so that a run never
dies hours in on one bad image.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ..runtime import progress, worker_count
from . import get_dataset
from .base import Dataset, DatasetError, Split
from .folder import IMAGE_SUFFIXES
from .screened import file_stamps, recall, remember

BAD_IMAGE_POLICIES = ("error", "skip")
PROGRESS_FROM = 500  # items: below this a check takes a few seconds and needs no progress bar


def image_problem(path: Path) -> str | None:
    """Why the image at ``path`` cannot be used (missing, not an image, truncated, corrupt), or None if it decodes.
    JPEGs are decoded at 1/8 scale: that still reads every coded block, so truncation shows, at a fraction of
    the cost."""
    try:
        with Image.open(path) as img:
            if img.format == "JPEG":
                img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()
    except FileNotFoundError:
        return f"{path}: file not found"
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        return f"{path}: {type(err).__name__}: {err}"
    return None


def bad_images(
    split: Split, workers: int | None = None, label: str = "", recheck: bool = False
) -> list[tuple[int, str]]:
    """Indices and reasons of the items of ``split`` whose image cannot be decoded (arrays are always fine).

    Files checked before and unchanged since (same size and modification time) are not decoded again: their
    result comes from the screening cache (:mod:`tresnet_nb.data.screened`), unless ``recheck``. The others are
    decoded by ``workers`` processes (default: this process's share of the CPUs it may use)."""
    if split.paths is None or len(split) == 0:
        return []
    paths = list(split.paths)  # Paths already (or strings, which file_stamps and image_problem take as they are)
    stamps = file_stamps(paths)
    results: dict[int, str | None] = {} if recheck else recall(stamps)
    known = len(results)
    todo = [i for i in range(len(paths)) if i not in results]
    workers = worker_count() if workers is None else workers
    show = len(todo) >= PROGRESS_FROM  # a bar for long checks only
    if workers > 1 and len(todo) > 64:
        with ProcessPoolExecutor(max_workers=min(workers, len(todo) // 32 + 1)) as pool:
            found = pool.map(image_problem, [paths[i] for i in todo], chunksize=32)
            checked = list(progress(found, show, total=len(todo)))
    else:
        checked = [image_problem(paths[i]) for i in progress(todo, show)]
    results.update(zip(todo, checked, strict=True))
    remember((stamps[i], results[i]) for i in todo if stamps[i] is not None)
    if known:
        print(
            f"{label or 'images'}: {known} of {len(paths)} images unchanged since they were checked, skipped; "
            f"{len(todo)} checked now"
        )
    return [(i, results[i]) for i in range(len(paths)) if results[i]]


@dataclass
class VerifyReport:
    """What :func:`verify` found: counts per split and class, and every problem, each naming its item."""

    dataset: str
    root: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self, max_classes: int = 30) -> str:
        """The report as text: a line per split, the smallest classes, then the problems."""
        lines = [f"{self.dataset} at {self.root}: {'OK' if self.ok else f'{len(self.problems)} problem(s)'}"]
        for split, per_class in self.counts.items():
            total = sum(per_class.values())
            lines.append(f"  {split}: {total} items in {sum(1 for v in per_class.values() if v)} classes")
            if per_class and len(per_class) <= max_classes:
                lines.append("    " + ", ".join(f"{k}: {v}" for k, v in per_class.items()))
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  PROBLEM: {p}" for p in self.problems[:200]]
        if len(self.problems) > 200:
            lines.append(f"  ... and {len(self.problems) - 200} more problems")
        return "\n".join(lines)


def _counts(ds: Dataset) -> dict[str, dict[str, int]]:
    out = {}
    for name, split in ds.splits.items():
        if split.labels is None:
            out[name] = {"(unlabelled)": len(split)}
        else:
            counts = split.class_counts(len(ds.class_names))
            out[name] = {c: int(n) for c, n in zip(ds.class_names, counts, strict=True)}
    return out


def _image_files(root: Path) -> Split:
    """Every image file under ``root`` (by suffix), as an unlabelled split, for when the reader cannot list them."""
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return Split(ids=tuple(str(p) for p in files), labels=None, paths=tuple(files))


def verify(
    name: str, root: Path | str | None, open_images: bool = True, recheck: bool = False, **options: Any
) -> VerifyReport:
    """Check dataset ``name`` at ``root`` in one pass that names every problem it finds: the reader's layout and
    label checks (every bad row and missing file, for readers that take ``problems``), duplicate ids, empty
    classes, and (with ``open_images``) that every image decodes, also when the reader had to stop; images checked
    before and unchanged since are not decoded again unless ``recheck``."""
    spec = get_dataset(name)
    report = VerifyReport(name, str(root))
    collected: list[str] = []  # the rows and files the reader left out, each named
    collect = {"problems": collected} if "problems" in inspect.signature(spec.module.read).parameters else {}
    try:
        ds = spec.read(root, **options, **collect)
    except (DatasetError, FileNotFoundError, KeyError) as err:
        report.problems += collected
        report.problems.append(err.args[0] if isinstance(err, KeyError) and err.args else str(err))
        if open_images and root is not None and Path(root).is_dir():
            report.problems += [
                message for _, message in bad_images(_image_files(Path(root)), label="files", recheck=recheck)
            ]
            report.notes.append(f"the reader stopped there; every image file under {str(root)!r} was opened instead")
        return report
    report.problems += collected
    report.counts, report.notes = _counts(ds), list(ds.notes)
    for split_name, split in ds.splits.items():
        duplicates = [k for k, n in Counter(split.ids).items() if n > 1]
        if duplicates:
            report.problems.append(f"{split_name}: duplicate ids {duplicates[:10]} ({len(duplicates)} in all)")
        if open_images:
            for i, message in bad_images(split, label=split_name, recheck=recheck):
                report.problems.append(f"{split_name} item {split.ids[i]!r}: {message}")
    if "train" in ds.splits and ds["train"].labels is not None and ds.task == "single-label":
        empty = [c for c, n in report.counts["train"].items() if n == 0]
        if empty:
            report.problems.append(f"train: {len(empty)} classes have no images: {empty[:10]}")
    return report


def screen_images(
    split: Split, policy: str = "error", log: Path | None = None, label: str = "", find: Callable = bad_images
) -> Split:
    """``split`` after checking every image: 'error' raises naming each bad one; 'skip' drops them and lists
    them in ``log`` (the run's skipped_images.txt). ``find(split, label=label)`` lists the bad ones, as
    :func:`bad_images` (tresnet_nb.data.highres shares the work over a data-parallel job's processes)."""
    if policy not in BAD_IMAGE_POLICIES:
        raise ValueError(f"Unknown on_bad_image {policy!r}; choose one of {BAD_IMAGE_POLICIES}")
    bad = find(split, label=label)
    if not bad:
        return split
    listing = "\n".join(f"{split.ids[i]}\t{msg}" for i, msg in bad)
    if policy == "error":
        raise DatasetError(
            f"{len(bad)} images of {label or 'the split'} cannot be decoded:\n{listing[:4000]}\n"
            f"Fix: replace them, or set on_bad_image='skip' to train without them (they are then listed in the run)"
        )
    if log is not None:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        Path(log).write_text(listing + "\n")
    keep = sorted(set(range(len(split))) - {i for i, _ in bad})
    return split.subset(keep)
