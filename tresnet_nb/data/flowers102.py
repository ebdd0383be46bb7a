"""Oxford Flowers-102: 8,189 flower photographs of 102 species (Nilsback & Zisserman, ICVGIP 2008).

Format from the dataset page https://www.robots.ox.ac.uk/~vgg/data/flowers/102/: ``jpg/image_00001.jpg`` ...
(numbered from 1), ``imagelabels.mat`` whose ``labels`` (1 x 8189) gives the class, 1..102, of image i, and
``setid.mat`` whose ``trnid``, ``valid`` and ``tstid`` list the image numbers of each split (1020/1020/6149:
the test split is the large one). Labels are made 0-based here, once.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from .base import Dataset, DatasetError, Split, require
from .download import check_md5, fetch, safe_extract
from .matfile import load_mat

PAGE = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"
# The three official files and their md5 sums (the sums torchvision's Flowers102 checks too).
FILES: dict[str, str] = {
    "102flowers.tgz": "52808999861908f626f3c1f4e79d11fa",
    "imagelabels.mat": "e0620be6f572b9609742df49c70aed4d",
    "setid.mat": "a5357ecc9cb78c4bef273ce3793fc85c",
}
SPLIT_VARIABLES = {"train": "trnid", "valid": "valid", "test": "tstid"}  # split -> its variable in setid.mat
LAYOUT = (
    "ROOT/jpg/image_00001.jpg ... image_08189.jpg (numbered from 1), ROOT/imagelabels.mat (variable labels, "
    "1 x 8189, classes 1..102), ROOT/setid.mat (variables trnid, valid, tstid: 1-based image numbers)"
)
GET_IT = (
    "Run `python -m tresnet_nb data get flowers102 --root ROOT` (it fetches, checks the md5 of and unpacks the "
    "three files; in Python tresnet_nb.data.flowers102.download(ROOT)), or "
    f"download 102flowers.tgz, imagelabels.mat and setid.mat from {PAGE} into ROOT and run tar xzf 102flowers.tgz."
)

# Class names in label order (label 1 first): the list that accompanies the dataset in common use (TensorFlow
# Datasets' oxford_flowers102, caffe-oxford102); the dataset itself ships no names. 'pink-yellow dahlia?' keeps the
# question mark of that list, and 'barbeton daisy' its spelling, so names match other tools' outputs.
CLASS_NAMES: tuple[str, ...] = (
    "pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea", "english marigold",
    "tiger lily", "moon orchid", "bird of paradise", "monkshood", "globe thistle",
    "snapdragon", "colt's foot", "king protea", "spear thistle", "yellow iris",
    "globe-flower", "purple coneflower", "peruvian lily", "balloon flower", "giant white arum lily",
    "fire lily", "pincushion flower", "fritillary", "red ginger", "grape hyacinth",
    "corn poppy", "prince of wales feathers", "stemless gentian", "artichoke", "sweet william",
    "carnation", "garden phlox", "love in the mist", "mexican aster", "alpine sea holly",
    "ruby-lipped cattleya", "cape flower", "great masterwort", "siam tulip", "lenten rose",
    "barbeton daisy", "daffodil", "sword lily", "poinsettia", "bolero deep blue",
    "wallflower", "marigold", "buttercup", "oxeye daisy", "common dandelion",
    "petunia", "wild pansy", "primula", "sunflower", "pelargonium",
    "bishop of llandaff", "gaura", "geranium", "orange dahlia", "pink-yellow dahlia?",
    "cautleya spicata", "japanese anemone", "black-eyed susan", "silverbush", "californian poppy",
    "osteospermum", "spring crocus", "bearded iris", "windflower", "tree poppy",
    "gazania", "azalea", "water lily", "rose", "thorn apple",
    "morning glory", "passion flower", "lotus", "toad lily", "anthurium",
    "frangipani", "clematis", "hibiscus", "columbine", "desert-rose",
    "tree mallow", "magnolia", "cyclamen", "watercress", "canna lily",
    "hippeastrum", "bee balm", "ball moss", "foxglove", "bougainvillea",
    "camellia", "mallow", "mexican petunia", "bromelia", "blanket flower",
    "trumpet creeper", "blackberry lily",
)  # fmt: skip


def image_name(number: int) -> str:
    """File name of image ``number`` (1-based), as in the tarball: image_00001.jpg."""
    return f"image_{number:05d}.jpg"


def _integers(values: np.ndarray, name: str, path: Path) -> np.ndarray:
    """The 1 x N numeric MATLAB ``values`` as int64; DatasetError naming the first value that is not an integer."""
    flat = np.asarray(values).reshape(-1)
    if flat.dtype.kind not in "iuf":
        raise DatasetError(f"{str(path)!r}: {name} holds {flat.dtype} values; expected numbers")
    bad = np.flatnonzero(flat != np.round(flat))
    if len(bad):
        raise DatasetError(f"{str(path)!r}: {name}[{bad[0]}] = {flat[bad[0]].item()!r} is not a whole number")
    return flat.astype(np.int64)


def _labels(root: Path) -> np.ndarray:
    path = root / "imagelabels.mat"
    labels = _integers(load_mat(path, ("labels",), LAYOUT)["labels"], "labels", path)
    bad = np.flatnonzero((labels < 1) | (labels > len(CLASS_NAMES)))
    if len(bad):
        i = int(bad[0])
        raise DatasetError(
            f"{str(path)!r}: image {i + 1} ({image_name(i + 1)}) has label {labels[i]}, outside 1..{len(CLASS_NAMES)} "
            f"({len(bad)} such images)"
        )
    return labels


def _split_ids(root: Path, n_images: int) -> dict[str, np.ndarray]:
    """Split -> 1-based image numbers from setid.mat; DatasetError naming an out-of-range or repeated number."""
    path = root / "setid.mat"
    mat = load_mat(path, tuple(SPLIT_VARIABLES.values()), LAYOUT)
    out: dict[str, np.ndarray] = {}
    seen: dict[int, str] = {}
    for split, var in SPLIT_VARIABLES.items():
        ids = _integers(mat[var], var, path)
        bad = np.flatnonzero((ids < 1) | (ids > n_images))
        if len(bad):
            raise DatasetError(
                f"{str(path)!r}: {var} lists image number {ids[bad[0]]}, outside 1..{n_images} (imagelabels.mat "
                "labels that many images); setid.mat and imagelabels.mat must come from the same download"
            )
        for number in ids.tolist():
            if number in seen:
                raise DatasetError(
                    f"{str(path)!r}: image {number} ({image_name(number)}) is listed in {seen[number]} and in {var}; "
                    "every image belongs to one split"
                )
            seen[number] = var
        out[split] = ids
    return out


def _split(root: Path, numbers: np.ndarray, labels: np.ndarray) -> Split:
    paths = tuple(root / "jpg" / image_name(n) for n in numbers.tolist())
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(
            f"Flowers-102 image not found: {str(missing[0])!r} ({len(missing)} of {len(paths)} images of this split "
            f"are missing). Expected layout: {LAYOUT}"
        )
    ids = tuple(Path(image_name(n)).stem for n in numbers.tolist())
    return Split(ids=ids, labels=labels[numbers - 1] - 1, paths=paths)


def read(root: Path, train_on_trainval: bool = False) -> Dataset:
    """Flowers-102 under ``root`` split per setid.mat into train, valid and test; with ``train_on_trainval`` train is
    trnid + valid and there is no valid split (the usual transfer-learning protocol)."""
    root = Path(root)
    require(root / "jpg", "Flowers-102 image folder", LAYOUT)
    labels = _labels(root)
    numbers = _split_ids(root, len(labels))
    notes = [f"splits from setid.mat: {', '.join(f'{s} {len(n)}' for s, n in numbers.items())} images"]
    if train_on_trainval:
        numbers["train"] = np.concatenate([numbers["train"], numbers.pop("valid")])
        notes.append("train_on_trainval: train = trnid + valid; no valid split")
    splits = {split: _split(root, ids, labels) for split, ids in numbers.items()}
    return Dataset("flowers102", CLASS_NAMES, "single-label", splits, tuple(notes))


def download(root: Path, source: Path | None = None) -> Path:
    """Put the three official files in ``root`` (fetched from the page, or copied from the folder ``source`` that
    holds them), check their md5 sums, and unpack the images safely; returns ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    # fetch() fails within about 2 s, naming the URL and the layout, when the host cannot be reached
    needed = f"{LAYOUT}; the files {sorted(FILES)} come from {PAGE}"
    for name, md5 in FILES.items():
        if source is None:
            fetch(PAGE + name, root / name, md5, needed)
        else:
            check_md5(Path(source) / name, md5, PAGE + name)
            if name.endswith(".mat"):
                shutil.copyfile(Path(source) / name, root / name)
    if not (root / "jpg" / image_name(1)).is_file():
        safe_extract((Path(source) if source else root) / "102flowers.tgz", root)
    return root


# Fixture: every class, with 1 train, 1 valid and 2 test images (the official split has 10/10/rest per class), image
# numbers shuffled over the classes as in the real files.
FIXTURE_PER_SPLIT = {"train": 1, "valid": 1, "test": 2}


def write_fixture(root: Path, seed: int = 0) -> Path:
    """Write a tiny Flowers-102 under ``root`` (408 JPEGs of 24x20 pixels in jpg/, imagelabels.mat and setid.mat
    with 1 x N doubles); returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    per_class = sum(FIXTURE_PER_SPLIT.values())
    classes = np.arange(1, len(CLASS_NAMES) + 1)  # 1-based, as in imagelabels.mat
    labels = rng.permutation(np.repeat(classes, per_class))
    sets: dict[str, list[int]] = {split: [] for split in FIXTURE_PER_SPLIT}
    for c in classes.tolist():
        numbers = (np.flatnonzero(labels == c) + 1).tolist()
        for split, n in FIXTURE_PER_SPLIT.items():
            sets[split] += numbers[:n]
            numbers = numbers[n:]
    (root / "jpg").mkdir(parents=True, exist_ok=True)
    for i, c in enumerate(labels.tolist(), start=1):
        colour = np.array([(37 * c) % 256, (91 * c) % 256, (151 * c) % 256])
        pixels = np.clip(colour + rng.integers(-30, 31, (20, 24, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / "jpg" / image_name(i), quality=90)
    scipy.io.savemat(root / "imagelabels.mat", {"labels": labels[None, :].astype(np.float64)})
    setid = {var: np.array([sorted(sets[split])], dtype=np.float64) for split, var in SPLIT_VARIABLES.items()}
    scipy.io.savemat(root / "setid.mat", setid)
    return root
