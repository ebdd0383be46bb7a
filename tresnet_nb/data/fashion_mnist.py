"""Fashion-MNIST in its original idx format, and the balanced subset embedded in ``data/fashion_mnist``.

The idx layout (big-endian): magic ``0x00000803`` for images (then count, rows, cols, uint8 pixels) and
``0x00000801`` for labels (then count, uint8 labels). Files may be gzip-compressed, as they are distributed.
Source of the format and class names: the Fashion-MNIST README (Zalando Research, MIT licence).
"""

from __future__ import annotations

import gzip
import struct
import sysconfig
from pathlib import Path

import numpy as np

from .base import Dataset, Split

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# split name -> file stem prefix, as in the original distribution
SPLIT_PREFIX: dict[str, str] = {"train": "train", "test": "t10k"}
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801
# The subset shipped in the repository's data/ (a clone or an editable install), and where a regular install (pip
# from git, e.g. on Colab or Kaggle) puts the same files: the wheel's data-files (pyproject.toml) under the
# environment's data directory.
CHECKOUT_ROOT = Path(__file__).resolve().parents[2] / "data" / "fashion_mnist"
INSTALLED_ROOT = Path(sysconfig.get_path("data")) / "share" / "tresnet-nb" / "data" / "fashion_mnist"
EMBEDDED_ROOT = CHECKOUT_ROOT if CHECKOUT_ROOT.is_dir() or not INSTALLED_ROOT.is_dir() else INSTALLED_ROOT
# The embedded subset: the first N images of each class, in file order (deterministic, balanced).
EMBEDDED_PER_CLASS: dict[str, int] = {"train": 600, "test": 100}


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _find(root: Path, stem: str) -> Path:
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}(.gz) not found in {str(root)!r}; expected the original idx files "
        f"(train-images-idx3-ubyte.gz, ...), e.g. from Debian's dataset-fashion-mnist package "
        f"(/usr/share/datasets/fashion-mnist) or the embedded subset {str(EMBEDDED_ROOT)!r}"
    )


def read_idx_images(path: Path) -> np.ndarray:
    """Read an idx3 image file at ``path`` into an (N, rows, cols) uint8 array."""
    with _open(Path(path)) as f:
        header = f.read(16)
        if len(header) != 16:
            raise ValueError(f"{str(path)!r} is too short to be an idx image file")
        magic, count, rows, cols = struct.unpack(">IIII", header)
        if magic != IMAGES_MAGIC:
            raise ValueError(f"{str(path)!r} has magic {magic:#010x}; an idx image file has {IMAGES_MAGIC:#010x}")
        data = f.read()
    if len(data) != count * rows * cols:
        raise ValueError(f"{str(path)!r} holds {len(data)} pixel bytes; its header promises {count}x{rows}x{cols}")
    return np.frombuffer(data, dtype=np.uint8).reshape(count, rows, cols)


def read_idx_labels(path: Path) -> np.ndarray:
    """Read an idx1 label file at ``path`` into an (N,) uint8 array."""
    with _open(Path(path)) as f:
        header = f.read(8)
        if len(header) != 8:
            raise ValueError(f"{str(path)!r} is too short to be an idx label file")
        magic, count = struct.unpack(">II", header)
        if magic != LABELS_MAGIC:
            raise ValueError(f"{str(path)!r} has magic {magic:#010x}; an idx label file has {LABELS_MAGIC:#010x}")
        data = f.read()
    if len(data) != count:
        raise ValueError(f"{str(path)!r} holds {len(data)} labels; its header promises {count}")
    return np.frombuffer(data, dtype=np.uint8).copy()


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 ``array`` (N,) labels or (N, rows, cols) images to ``path`` (gzip when it ends in .gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if array.ndim == 1:
        header = struct.pack(">II", LABELS_MAGIC, array.shape[0])
    elif array.ndim == 3:
        header = struct.pack(">IIII", IMAGES_MAGIC, *array.shape)
    else:
        raise ValueError(f"idx arrays are (N,) labels or (N, rows, cols) images, not shape {array.shape}")
    payload = header + array.tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        # mtime=0 keeps the compressed bytes reproducible
        with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=9) as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def read_split(root: Path | None, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one ``split`` ('train' or 'test') from the idx files under ``root`` (None: the embedded subset)."""
    if split not in SPLIT_PREFIX:
        raise ValueError(f"Unknown Fashion-MNIST split {split!r}; choose one of {sorted(SPLIT_PREFIX)}")
    root = EMBEDDED_ROOT if root is None else Path(root)
    prefix = SPLIT_PREFIX[split]
    images = read_idx_images(_find(root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx_labels(_find(root, f"{prefix}-labels-idx1-ubyte"))
    if len(images) != len(labels):
        raise ValueError(f"{str(root)!r} {split}: {len(images)} images but {len(labels)} labels")
    if labels.size and labels.max() >= len(CLASS_NAMES):
        raise ValueError(f"{str(root)!r} {split}: label {labels.max()} is outside 0..{len(CLASS_NAMES) - 1}")
    return images, labels


def balanced_indices(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first ``per_class`` items of each class in ``labels``, in file order."""
    chosen = []
    for c in range(len(CLASS_NAMES)):
        idx = np.flatnonzero(labels == c)[:per_class]
        if len(idx) < per_class:
            raise ValueError(f"class {c} ({CLASS_NAMES[c]}) has only {len(idx)} items; asked for {per_class}")
        chosen.append(idx)
    return np.sort(np.concatenate(chosen))


def write_embedded_subset(source: Path, dest: Path, per_class: dict[str, int] = EMBEDDED_PER_CLASS) -> None:
    """Write the balanced subset (``per_class`` items of each class per split) of the idx files in ``source`` to ``dest``."""
    for split, n in per_class.items():
        images, labels = read_split(source, split)
        keep = balanced_indices(labels, n)
        prefix = SPLIT_PREFIX[split]
        write_idx(Path(dest) / f"{prefix}-images-idx3-ubyte.gz", images[keep])
        write_idx(Path(dest) / f"{prefix}-labels-idx1-ubyte.gz", labels[keep])


LAYOUT = (
    "ROOT/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (the original idx files); "
    "DATA_ROOT=None reads the subset embedded in data/fashion_mnist"
)
GET_IT = (
    "Debian: apt-get install dataset-fashion-mnist (files in /usr/share/datasets/fashion-mnist); or the idx files "
    "from the Fashion-MNIST repository of Zalando Research. A balanced subset ships in data/fashion_mnist."
)


def read(root: Path | None = None) -> Dataset:
    """Fashion-MNIST from the idx files under ``root`` (None: the embedded subset) as train and test splits."""
    splits = {}
    for split in ("train", "test"):
        images, labels = read_split(root, split)
        ids = tuple(f"{split}-{i}" for i in range(len(labels)))
        splits[split] = Split(ids=ids, labels=labels.astype(np.int64), images=images)
    return Dataset("fashion_mnist", CLASS_NAMES, "single-label", splits)


def write_fixture(root: Path, seed: int = 0, per_class: int = 3) -> Path:
    """Write ``per_class`` images of every class per split, taken from the embedded subset, as idx files."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, prefix in SPLIT_PREFIX.items():
        images, labels = read_split(None, split)
        keep = np.sort(
            np.concatenate(
                [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(len(CLASS_NAMES))]
            )
        )
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images[keep])
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels[keep])
    return root
