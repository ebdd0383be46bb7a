"""CIFAR-10 and CIFAR-100, "python version": pickled batches of 32x32 RGB images (Krizhevsky, 2009).

Format from the dataset page https://www.cs.toronto.edu/~kriz/cifar.html: every file is a dict pickled by Python 2's
cPickle (protocol 2), so its keys and strings load as bytes (``encoding='bytes'``). ``b'data'`` is an N x 3072 uint8
array whose rows hold the red, then green, then blue 32x32 plane, each row-major; labels are lists of ints.

Unpickling can run arbitrary code, so every file is read by :class:`~tresnet_nb.data.py2pickle.CifarUnpickler`, which hands out only the few
globals a numpy array needs and refuses any other before it runs. :func:`download` fetches and checks the official
tarballs; its helpers (:func:`fetch`, :func:`check_md5`, :func:`safe_extract`) serve the other downloadable readers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import numpy as np

from .base import Dataset, DatasetError, Split, check_labels
from .download import check_md5, fetch, safe_extract
from .py2pickle import load_pickle, write_py2_pickle

SIDE, PIXELS = 32, 3 * 32 * 32


@dataclass(frozen=True)
class Variant:
    """One CIFAR variant: its folder in the tarball, file names, the keys of labels and names, URL and md5."""

    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: bytes
    names_key: bytes
    url: str
    md5: str


# Folder, file names, keys and md5 sums as on https://www.cs.toronto.edu/~kriz/cifar.html
VARIANTS: dict[str, Variant] = {
    "cifar10": Variant(
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
        "batches.meta",
        b"labels",
        b"label_names",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
    ),
    "cifar100": Variant(
        "cifar-100-python",
        ("train",),
        "test",
        "meta",
        b"fine_labels",
        b"fine_label_names",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
    ),
}

LAYOUT = (
    "ROOT/cifar-10-batches-py/{data_batch_1..data_batch_5, test_batch, batches.meta} for CIFAR-10, or "
    "ROOT/cifar-100-python/{train, test, meta} for CIFAR-100 (the folders inside the official python-version "
    "tarballs; ROOT may also be that folder itself)"
)
GET_IT = (
    "Run `python -m tresnet_nb data get cifar10 --root ROOT` (or cifar100; it fetches the tarball, checks its md5 "
    "and unpacks it; in Python tresnet_nb.data.cifar.download(ROOT, variant)), or "
    "download cifar-10-python.tar.gz / cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
    "and run tar xzf on it inside ROOT."
)


def _variant(variant: str) -> Variant:
    if variant not in VARIANTS:
        raise ValueError(f"Unknown CIFAR variant {variant!r}; choose one of {sorted(VARIANTS)}")
    return VARIANTS[variant]


def _folder(root: Path, v: Variant) -> Path:
    """The variant's folder: ``root/<folder>``, or ``root`` itself when it is that folder."""
    root = Path(root)
    if (root / v.folder).is_dir():
        return root / v.folder
    if root.name == v.folder or (root / v.meta_file).is_file():
        return root
    raise DatasetError(
        f"CIFAR folder not found: {str(root / v.folder)!r} (nor {v.meta_file} directly in {str(root)!r}). "
        f"Expected layout: {LAYOUT}. How to get it: {GET_IT}"
    )


def _file(folder: Path, name: str) -> dict:
    path = folder / name
    if not path.is_file():
        raise DatasetError(f"CIFAR file not found: {str(path)!r}. Expected layout: {LAYOUT}")
    return load_pickle(path, GET_IT)


def _get(batch: dict, key: bytes, path: Path) -> object:
    if key not in batch:
        raise DatasetError(
            f"{str(path)!r} has no {key!r} entry (keys found: {sorted(batch)}). Expected layout: {LAYOUT}"
        )
    return batch[key]


def _names(meta: dict, key: bytes, path: Path) -> tuple[str, ...]:
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in _get(meta, key, path))


def read_batch(path: Path, label_keys: tuple[bytes, ...]) -> tuple[np.ndarray, tuple[np.ndarray, ...], tuple[str, ...]]:
    """Images (N, 32, 32, 3), the int64 label arrays under ``label_keys`` and the filenames of the batch ``path``."""
    batch = _file(path.parent, path.name)
    data = _get(batch, b"data", path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        shape = getattr(data, "shape", None)
        raise DatasetError(
            f"{str(path)!r}: b'data' is {type(data).__name__} {getattr(data, 'dtype', '')} of shape {shape}; "
            f"expected a uint8 array of shape (N, {PIXELS})"
        )
    n = len(data)
    columns = {key: _get(batch, key, path) for key in (*label_keys, b"filenames")}
    for key, values in columns.items():
        if not isinstance(values, (list, tuple, np.ndarray)) or len(values) != n:
            count = len(values) if hasattr(values, "__len__") else f"a {type(values).__name__} of"
            raise DatasetError(
                f"{str(path)!r} has {n} image rows but {count} {key!r}; the file is truncated or mixed up: "
                "unpack the official tarball again"
            )
    try:
        labels = tuple(np.asarray(columns[key], dtype=np.int64) for key in label_keys)
    except (TypeError, ValueError) as e:
        raise DatasetError(f"{str(path)!r}: the labels {list(label_keys)} are not all integers ({e})") from e
    # A row is the red plane, then green, then blue, each 32 rows of 32 pixels (cifar.html): to (N, H, W, C).
    images = np.ascontiguousarray(data.reshape(n, 3, SIDE, SIDE).transpose(0, 2, 3, 1))
    ids = tuple(f.decode() if isinstance(f, bytes) else str(f) for f in columns[b"filenames"])
    return images, labels, ids


def _read_split(folder: Path, files: tuple[str, ...], keys: tuple[bytes, ...], n_classes: tuple[int, ...]) -> tuple:
    """Images, label arrays (one per key) and ids of the batch ``files`` in ``folder``, concatenated in order."""
    parts = []
    for name in files:
        images, labels, ids = read_batch(folder / name, keys)
        for key, values, n in zip(keys, labels, n_classes, strict=True):
            check_labels(values, n, "single-label", f"{str(folder / name)!r} {key!r}", ids)
        parts.append((images, labels, ids))
    images = np.concatenate([p[0] for p in parts])
    labels = tuple(np.concatenate([p[1][k] for p in parts]) for k in range(len(keys)))
    return images, labels, tuple(i for p in parts for i in p[2])


def read(root: Path, variant: str = "cifar10") -> Dataset:
    """CIFAR-``variant`` ('cifar10' or 'cifar100') from the python-version files under ``root``: train and test.
    CIFAR-100 also gives ``meta['coarse_label_names']`` and ``meta['coarse_labels'][split]`` (its 20 superclasses)."""
    v = _variant(variant)
    folder = _folder(root, v)
    meta_path = folder / v.meta_file
    meta = _file(folder, v.meta_file)
    names = _names(meta, v.names_key, meta_path)
    keys, sizes, extra = [v.label_key], [len(names)], {}
    if variant == "cifar100":
        coarse_names = _names(meta, b"coarse_label_names", meta_path)
        keys.append(b"coarse_labels")
        sizes.append(len(coarse_names))
        extra = {"coarse_label_names": coarse_names, "coarse_labels": {}}
    splits = {}
    for split, files in (("train", v.train_files), ("test", (v.test_file,))):
        images, labels, ids = _read_split(folder, files, tuple(keys), tuple(sizes))
        splits[split] = Split(ids=ids, labels=labels[0], images=images)
        if extra:
            extra["coarse_labels"][split] = labels[1]
    notes = (
        ("20 superclasses in meta['coarse_label_names'], per-item in meta['coarse_labels'][split]",) if extra else ()
    )
    return Dataset(variant, names, "single-label", splits, notes, meta=extra)


def coarse_labels(root: Path) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """CIFAR-100's 20 superclass names and the int64 coarse label of every train and test item under ``root``."""
    meta = read(root, "cifar100").meta
    return meta["coarse_label_names"], meta["coarse_labels"]["train"], meta["coarse_labels"]["test"]


def download(root: Path, variant: str = "cifar10", archive: Path | None = None) -> Path:
    """Fetch the official ``variant`` tarball into ``root`` (or use the local ``archive``), check its md5, unpack it
    safely; returns the unpacked folder. Does nothing if its test file is already there."""
    v = _variant(variant)
    root = Path(root)
    if (root / v.folder / v.test_file).is_file():
        return root / v.folder
    if archive is None:
        archive = fetch(v.url, root / PurePosixPath(urlparse(v.url).path).name, v.md5, LAYOUT)
    else:
        check_md5(Path(archive), v.md5, v.url)
    safe_extract(Path(archive), root)
    return _folder(root, v)


# ---- fixture: tiny files in the official byte format -------------------------------------------------------------

CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# CIFAR-100 superclass -> its five classes, from the table on cifar.html; the files list both in alphabetical order.
CIFAR100_SUPERCLASSES: dict[str, tuple[str, ...]] = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}


def known_image() -> np.ndarray:
    """The first training image of every fixture, (32, 32, 3) HWC: pixel (y, x) is (8y, 8x, 200)."""
    y, x = np.mgrid[0:SIDE, 0:SIDE]
    return np.stack([8 * y, 8 * x, np.full_like(y, 200)], axis=-1).astype(np.uint8)


def _fixture_items(rng: np.random.Generator, n_classes: int, per_class: int, prefix: str) -> tuple[np.ndarray, list]:
    """``per_class`` random images of each of ``n_classes`` classes in shuffled order: (N, 3072) rows and labels."""
    labels = rng.permutation(np.repeat(np.arange(n_classes), per_class)).tolist()
    data = rng.integers(0, 256, (len(labels), PIXELS), dtype=np.uint8)
    if prefix == "train":
        # the known image, stored as the format stores it: the three colour planes one after another
        data[0] = known_image().transpose(2, 0, 1).reshape(-1)
    return data, labels


def _filenames(labels: list[int], names: tuple[str, ...], start: int) -> list[bytes]:
    return [f"{names[c]}_s_{start + k:06d}.png".encode() for k, c in enumerate(labels)]


def write_cifar10(
    folder: Path, train: tuple[np.ndarray, list[int]], test: tuple[np.ndarray, list[int]], names: tuple[str, ...]
) -> Path:
    """``train`` and ``test`` (N x 3072 uint8 rows in the format's plane order, and their labels) as CIFAR-10 python
    batches in ``folder``, byte for byte as the official tarball lays them out: the training items over data_batch_1
    to data_batch_5, the test items in test_batch, and batches.meta naming the classes ``names``."""
    v = VARIANTS["cifar10"]
    folder.mkdir(parents=True, exist_ok=True)
    data, labels = train
    files = _filenames(labels, names, 1)
    per_batch = -(-len(labels) // len(v.train_files))
    for b, name in enumerate(v.train_files):
        part = slice(b * per_batch, (b + 1) * per_batch)
        batch = {
            b"batch_label": f"training batch {b + 1} of {len(v.train_files)}".encode(),
            b"labels": labels[part],
            b"data": data[part],
            b"filenames": files[part],
        }
        write_py2_pickle(folder / name, batch)
    data, labels = test
    batch = {b"batch_label": b"testing batch 1 of 1", b"labels": labels, b"data": data}
    write_py2_pickle(folder / v.test_file, {**batch, b"filenames": _filenames(labels, names, 900000)})
    meta = {b"num_cases_per_batch": per_batch, b"label_names": [n.encode() for n in names], b"num_vis": PIXELS}
    write_py2_pickle(folder / v.meta_file, meta)
    return folder


def _write_cifar10(folder: Path, rng: np.random.Generator, per_class: tuple[int, int]) -> None:
    train = _fixture_items(rng, len(CIFAR10_NAMES), per_class[0], "train")
    test = _fixture_items(rng, len(CIFAR10_NAMES), per_class[1], "test")
    write_cifar10(folder, train, test, CIFAR10_NAMES)


def _write_cifar100(folder: Path, rng: np.random.Generator, per_class: tuple[int, int]) -> None:
    v = VARIANTS["cifar100"]
    coarse_names = tuple(sorted(CIFAR100_SUPERCLASSES))
    fine_names = tuple(sorted(c for members in CIFAR100_SUPERCLASSES.values() for c in members))
    coarse_of = {
        fine_names.index(c): coarse_names.index(s) for s, members in CIFAR100_SUPERCLASSES.items() for c in members
    }
    for split, name, n, start in (
        ("train", v.train_files[0], per_class[0], 1),
        ("test", v.test_file, per_class[1], 900000),
    ):
        data, fine = _fixture_items(rng, len(fine_names), n, split)
        batch = {
            b"filenames": _filenames(fine, fine_names, start),
            b"batch_label": f"{'training' if split == 'train' else 'testing'} batch 1 of 1".encode(),
            b"fine_labels": fine,
            b"coarse_labels": [coarse_of[c] for c in fine],
            b"data": data,
        }
        write_py2_pickle(folder / name, batch)
    meta = {
        b"fine_label_names": [n.encode() for n in fine_names],
        b"coarse_label_names": [n.encode() for n in coarse_names],
    }
    write_py2_pickle(folder / v.meta_file, meta)


def write_fixture(root: Path, seed: int = 0, variants: tuple[str, ...] = ("cifar10", "cifar100")) -> Path:
    """Write tiny CIFAR ``variants`` under ``root`` in the official byte format (CIFAR-10: 3 train and 1 test image
    per class over all six batches; CIFAR-100: 2 and 1); returns ``root``, which read() takes with either variant."""
    rng = np.random.default_rng(seed)
    writers = {"cifar10": (_write_cifar10, (3, 1)), "cifar100": (_write_cifar100, (2, 1))}
    for variant in variants:
        _variant(variant)  # a ValueError listing the variants for a typo
        writer, per_class = writers[variant]
        writer(Path(root) / VARIANTS[variant].folder, rng, per_class)
    return Path(root)
