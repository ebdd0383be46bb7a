"""Stanford Cars: 16,185 photographs of 196 car models, each with a bounding box (Krause et al., 3dRR 2013).

The devkit layout torchvision's StanfordCars reads: ``devkit/cars_meta.mat`` (``class_names``, a 1 x 196 cell),
``devkit/cars_train_annos.mat`` and ``cars_test_annos_withlabels.mat`` (``annotations``, a 1 x N struct array with
fields bbox_x1, bbox_y1, bbox_x2, bbox_y2, class, fname), and the images in ``cars_train/`` and ``cars_test/``.
Classes are 1-based in the files and 0-based here; boxes become PIL crop boxes (see :func:`crop_boxes`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from .base import Dataset, DatasetError, Split, require
from .matfile import load_mat

N_CLASSES = 196
FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")
# split -> (annotation file, image folder), relative to the dataset folder
SPLIT_FILES: dict[str, tuple[str, str]] = {
    "train": ("devkit/cars_train_annos.mat", "cars_train"),
    "test": ("cars_test_annos_withlabels.mat", "cars_test"),
}
META_FILE = "devkit/cars_meta.mat"
LAYOUT = (
    "ROOT/devkit/cars_meta.mat (class_names: 1 x 196 cell), ROOT/devkit/cars_train_annos.mat and "
    "ROOT/cars_test_annos_withlabels.mat (annotations: 1 x N struct with bbox_x1, bbox_y1, bbox_x2, bbox_y2, class "
    "1..196, fname), ROOT/cars_train/00001.jpg ..., ROOT/cars_test/00001.jpg ... (ROOT may also hold these in a "
    "stanford_cars/ folder, as torchvision expects)"
)
GET_IT = (
    "The original download (ai.stanford.edu/~jkrause/cars) is gone and torchvision's download=True raises; follow "
    "https://github.com/pytorch/vision/issues/7545: take the images from the Kaggle copy "
    "(kaggle datasets download -d jessicali9530/stanford-cars-dataset), flatten its nested cars_train/cars_train and "
    "cars_test/cars_test folders, add the devkit (car_devkit.tgz linked in that issue) and "
    "cars_test_annos_withlabels.mat, so that: " + LAYOUT
)


def _folder(root: Path) -> Path:
    """The dataset folder: ``root``, or ``root/stanford_cars`` (torchvision's layout) when only that has the devkit."""
    root = Path(root)
    if not (root / "devkit").is_dir() and (root / "stanford_cars" / "devkit").is_dir():
        return root / "stanford_cars"
    return root


def crop_boxes(x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray) -> np.ndarray:
    """(N, 4) int64 PIL crop boxes from the files' box corners ``x1, y1, x2, y2``.

    The annotations are MATLAB pixel indices: 1-based, and x2/y2 is the last pixel inside the box. PIL's crop box
    is 0-based with the right/bottom edge exclusive, so the first pixel moves down by one and the last stays:
    (x1 - 1, y1 - 1, x2, y2), a crop of x2 - x1 + 1 by y2 - y1 + 1 pixels.
    """
    return np.stack([x1 - 1, y1 - 1, x2, y2], axis=1).astype(np.int64)


def class_names(folder: Path) -> tuple[str, ...]:
    """The 196 class names in ``folder``'s devkit/cars_meta.mat, in label order."""
    path = folder / META_FILE
    names = np.atleast_1d(load_mat(path, ("class_names",), LAYOUT, squeeze_me=True)["class_names"])
    if len(names) != N_CLASSES:
        raise DatasetError(f"{str(path)!r}: class_names has {len(names)} entries; Stanford Cars has {N_CLASSES}")
    return tuple(str(n) for n in names)


def read_annotations(path: Path) -> dict[str, np.ndarray]:
    """Field -> (N,) array of the ``annotations`` struct in ``path``: int64 boxes and classes, str fnames."""
    ann = np.atleast_1d(load_mat(path, ("annotations",), LAYOUT, squeeze_me=True)["annotations"])
    missing = [f for f in FIELDS if f not in (ann.dtype.names or ())]
    if missing:
        raise DatasetError(
            f"{str(path)!r}: annotations lack the field(s) {missing} (found {list(ann.dtype.names or ())}); "
            f"expected {list(FIELDS)}, as in cars_test_annos_withlabels.mat (not the label-free cars_test_annos.mat)"
        )
    out = {"fname": np.array([str(f) for f in ann["fname"]])}
    for field in FIELDS[:-1]:
        try:
            out[field] = ann[field].astype(np.int64)
        except (TypeError, ValueError) as e:  # an empty or non-numeric cell cannot become one integer
            raise DatasetError(f"{str(path)!r}: field {field} is not one integer per image ({e})") from e
    return out


def _check(ann: dict[str, np.ndarray], path: Path) -> None:
    """DatasetError naming the first fname with a class outside 1..196, an inverted box, or a repeat."""
    fname = ann["fname"]
    bad = np.flatnonzero((ann["class"] < 1) | (ann["class"] > N_CLASSES))
    if len(bad):
        i = int(bad[0])
        raise DatasetError(
            f"{str(path)!r}: {fname[i]} has class {ann['class'][i]}, outside 1..{N_CLASSES} ({len(bad)} such images)"
        )
    x1, y1, x2, y2 = (ann[f] for f in FIELDS[:4])
    bad = np.flatnonzero((x1 < 1) | (y1 < 1) | (x2 <= x1) | (y2 <= y1))
    if len(bad):
        i = int(bad[0])
        raise DatasetError(
            f"{str(path)!r}: {fname[i]} has box x1={x1[i]}, y1={y1[i]}, x2={x2[i]}, y2={y2[i]}; a box needs "
            f"1 <= x1 < x2 and 1 <= y1 < y2 (1-based pixels) ({len(bad)} such images)"
        )
    names, counts = np.unique(fname, return_counts=True)
    if (counts > 1).any():
        raise DatasetError(f"{str(path)!r}: {names[counts > 1][0]} is annotated {counts[counts > 1][0]} times")


def _check_sizes(paths: tuple[Path, ...], boxes: np.ndarray) -> None:
    """DatasetError naming the first image whose box reaches past its edges (reads each JPEG header only)."""
    for path, (_, _, right, bottom) in zip(paths, boxes.tolist(), strict=True):
        with Image.open(path) as img:
            width, height = img.size
        if right > width or bottom > height:
            raise DatasetError(
                f"{str(path)!r} is {width}x{height} pixels but its box reaches x2={right}, y2={bottom}: the "
                "annotation and the image do not match (a Kaggle copy with renumbered files?)"
            )


def read_split(folder: Path, split: str, check_image_sizes: bool = False) -> Split:
    """One ``split`` ('train' or 'test') of the dataset in ``folder``, with crop boxes; ``check_image_sizes`` also
    opens every image to check that its box fits inside it."""
    if split not in SPLIT_FILES:
        raise ValueError(f"Unknown Stanford Cars split {split!r}; choose one of {sorted(SPLIT_FILES)}")
    ann_file, image_dir = SPLIT_FILES[split]
    path = folder / ann_file
    ann = read_annotations(path)
    _check(ann, path)
    paths = tuple(folder / image_dir / f for f in ann["fname"])
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(
            f"Stanford Cars image not found: {str(missing[0])!r}, listed in {str(path)!r} ({len(missing)} of "
            f"{len(paths)} missing). Expected layout: {LAYOUT}"
        )
    boxes = crop_boxes(*(ann[f] for f in FIELDS[:4]))
    if check_image_sizes:
        _check_sizes(paths, boxes)
    return Split(ids=tuple(ann["fname"].tolist()), labels=ann["class"] - 1, paths=paths, boxes=boxes)


def read(root: Path, check_image_sizes: bool = False) -> Dataset:
    """Stanford Cars under ``root`` as train and test splits with boxes (``Split.load(i, crop=True)`` crops);
    ``check_image_sizes`` opens every image to check its box fits (slower: 16,185 file headers)."""
    folder = _folder(root)
    for name in (META_FILE, *(f for pair in SPLIT_FILES.values() for f in pair)):
        require(folder / name, "Stanford Cars file", LAYOUT)
    splits = {split: read_split(folder, split, check_image_sizes) for split in SPLIT_FILES}
    return Dataset("stanford_cars", class_names(folder), "single-label", splits)


# ---- fixture ------------------------------------------------------------------------------------------------

FIXTURE_PER_CLASS = {"train": 1, "test": 1}  # every class appears in both splits
BOX_COLOUR, BACKGROUND = (220, 20, 20), (20, 200, 20)


def _struct(rows: list[tuple]) -> np.ndarray:
    """A (1, N) object record array: savemat writes it as MATLAB's 1 x N struct array with fields ``FIELDS``."""
    out = np.zeros((1, len(rows)), dtype=[(f, object) for f in FIELDS])
    for i, row in enumerate(rows):
        out[0, i] = row
    return out


def _write_image(path: Path, rng: np.random.Generator) -> tuple[int, ...]:
    """A JPEG at ``path`` with a red box on green; returns its 1-based inclusive box (x1, y1, x2, y2)."""
    width, height = int(rng.integers(40, 64)), int(rng.integers(30, 48))
    x1, y1 = int(rng.integers(1, 10)), int(rng.integers(1, 8))
    x2, y2 = int(rng.integers(x1 + 12, width + 1)), int(rng.integers(y1 + 10, height + 1))
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    pixels[:] = BACKGROUND
    pixels[y1 - 1 : y2, x1 - 1 : x2] = BOX_COLOUR  # 1-based inclusive corners -> 0-based slices
    path.parent.mkdir(parents=True, exist_ok=True)
    # quality 100 without chroma subsampling keeps the box edge sharp enough for an exact crop test
    Image.fromarray(pixels).save(path, quality=100, subsampling=0)
    return x1, y1, x2, y2


def write_fixture(root: Path, seed: int = 0) -> Path:
    """Write a tiny Stanford Cars under ``root`` in the devkit layout (real .mat structs, JPEGs with a red box on
    green, one train and one test image per class); returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    names = np.empty((1, N_CLASSES), dtype=object)
    names[0, :] = [f"Fixture Make Model{c} {2000 + c % 13}" for c in range(1, N_CLASSES + 1)]
    (root / "devkit").mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(root / META_FILE, {"class_names": names})
    for split, (ann_file, image_dir) in SPLIT_FILES.items():
        classes = rng.permutation(np.repeat(np.arange(1, N_CLASSES + 1), FIXTURE_PER_CLASS[split])).tolist()
        rows = []
        for i, c in enumerate(classes, start=1):
            fname = f"{i:05d}.jpg"
            box = _write_image(root / image_dir / fname, rng)
            # the official files store small integer matrices (1x1) per field and the name as a char array
            rows.append((*(np.array([[v]], dtype=np.uint16) for v in box), np.array([[c]], dtype=np.uint8), fname))
        scipy.io.savemat(root / ann_file, {"annotations": _struct(rows)})
        if split == "test":  # the devkit's own test annotations have no class field
            unlabelled = np.zeros((1, len(rows)), dtype=[(f, object) for f in FIELDS if f != "class"])
            for i, row in enumerate(rows):
                unlabelled[0, i] = (*row[:4], row[5])
            scipy.io.savemat(root / "devkit" / "cars_test_annos.mat", {"annotations": unlabelled})
    return root
