"""A user's image folder: one sub-folder per class, either flat (a holdout is drawn) or under train/valid[/test].

Files are recognised as images by extension only (opening a million files to sniff them would cost minutes);
anything else is skipped and counted in the notes, as are hidden files and folders (``.DS_Store``,
``.ipynb_checkpoints``: Jupyter creates the latter inside any folder a notebook was opened from).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Dataset, DatasetError, Split, draw_holdout, require
from .fixtures import FIXTURE_CLASSES, write_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SPLIT_DIRS = ("train", "valid", "test")
LAYOUT = (
    "ROOT/<class>/<image>.{jpg,jpeg,png,bmp,webp} (a stratified holdout becomes 'valid'), or "
    "ROOT/train/<class>/... + ROOT/valid/<class>/... [+ ROOT/test/<class>/... or unlabelled ROOT/test/<image>]; "
    "class names are the sub-folder names of train, sorted"
)
GET_IT = (
    "Your own pictures: make one folder per class, named after the class, and put each picture in its class's "
    "folder (sub-folders inside a class folder are fine). Optionally split them yourself into train/ and valid/."
)
MAX_EXAMPLES = 3  # skipped files named in a note


def is_image(path: Path) -> bool:
    """Whether ``path`` has one of the image extensions (any case)."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def _hidden(path: Path, top: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(top).parts)


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan(folder: Path) -> tuple[list[Path], list[Path]]:
    """(images, skipped files) under ``folder``, recursively and sorted; hidden entries are skipped."""
    images, skipped = [], []
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            (images if is_image(p) and not _hidden(p, folder) else skipped).append(p)
    return images, skipped


def _labelled(folder: Path, root: Path, class_names: tuple[str, ...] | None) -> tuple[Split, list[Path]]:
    """The images in the class folders of ``folder`` (ids relative to ``root``) and the skipped files; the classes
    are ``class_names`` (None: the folders found)."""
    dirs = _class_dirs(folder)
    loose = [p for p in folder.iterdir() if p.is_file()]
    if not dirs:
        found = f"; it holds {len(loose)} files but no sub-folders" if loose else ""
        raise DatasetError(
            f"no class folders in {str(folder)!r}{found}. Put each class's images in a sub-folder named after the "
            f"class. Expected layout: {LAYOUT}"
        )
    names = class_names or tuple(d.name for d in dirs)
    ids, labels, paths, skipped = [], [], [], list(loose)
    for d in dirs:
        if d.name not in names:
            raise DatasetError(
                f"class folder {str(d)!r} is not one of the train classes {list(names)}; rename it to one of them "
                f"or add a folder train/{d.name} with training images"
            )
        images, other = _scan(d)
        if not images:
            raise DatasetError(
                f"class folder {str(d)!r} holds no images ({', '.join(IMAGE_SUFFIXES)}); add pictures or remove it"
            )
        skipped += other
        ids += [p.relative_to(root).as_posix() for p in images]
        labels += [names.index(d.name)] * len(images)
        paths += images
    return Split(ids=tuple(ids), labels=np.array(labels, dtype=np.int64), paths=tuple(paths)), skipped


def _unlabelled(folder: Path, root: Path) -> tuple[Split, list[Path]]:
    """The images directly or recursively under ``folder`` as an unlabelled split, and the skipped files."""
    images, skipped = _scan(folder)
    if not images:
        raise DatasetError(f"test folder {str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return Split(ids=tuple(p.relative_to(root).as_posix() for p in images), labels=None, paths=tuple(images)), skipped


def _skipped_note(skipped: list[Path], root: Path) -> list[str]:
    if not skipped:
        return []
    examples = ", ".join(repr(p.relative_to(root).as_posix()) for p in skipped[:MAX_EXAMPLES])
    return [f"skipped {len(skipped)} files that are not images by extension or are hidden (e.g. {examples})"]


def read(root: Path, holdout: float = 0.2, seed: int = 0) -> Dataset:
    """The image folder at ``root``; a flat layout (or one without valid/) gets a ``holdout`` fraction drawn with
    ``seed`` as 'valid' (0: no valid split)."""
    root = require(Path(root), "image folder", LAYOUT)
    split_layout = (root / "train").is_dir()
    base = root / "train" if split_layout else root
    train, skipped = _labelled(base, root, None)
    class_names = tuple(d.name for d in _class_dirs(base))
    splits, notes = {"train": train}, [f"layout: {'train/valid folders' if split_layout else 'one folder per class'}"]
    if split_layout and (root / "valid").is_dir():
        splits["valid"], other = _labelled(root / "valid", root, class_names)
        skipped += other
    elif holdout:
        splits["train"], splits["valid"], note = draw_holdout(train, holdout, seed)
        notes.append(note)
    test = root / "test"
    if split_layout and test.is_dir():
        has_dirs, has_images = bool(_class_dirs(test)), any(is_image(p) for p in test.iterdir() if p.is_file())
        if has_dirs and has_images:
            raise DatasetError(
                f"test folder {str(test)!r} holds both class folders and loose images; use test/<class>/... for a "
                "labelled test set or only loose images for an unlabelled one"
            )
        splits["test"], other = _labelled(test, root, class_names) if has_dirs else _unlabelled(test, root)
        skipped += other
    return Dataset("folder", class_names, "single-label", splits, tuple(notes + _skipped_note(skipped, root)))


def write_fixture(root: Path, seed: int = 0, layout: str = "flat", per_class: int = 5) -> Path:
    """Write ``per_class`` images of three classes under ``root`` in ``layout`` 'flat' or 'split' (train/valid/test)."""
    if layout not in ("flat", "split"):
        raise ValueError(f"Unknown folder layout {layout!r}; choose 'flat' or 'split'")
    root, rng = Path(root), np.random.default_rng(seed)
    for name, colour in FIXTURE_CLASSES.items():
        for i in range(per_class):
            suffix = IMAGE_SUFFIXES[i % len(IMAGE_SUFFIXES)]
            split = ("train", "train", "train", "valid", "test")[i % 5] if layout == "split" else ""
            write_image(root / split / name / f"{name}_{i}{suffix}", colour, rng, (24, 20))
    return root
