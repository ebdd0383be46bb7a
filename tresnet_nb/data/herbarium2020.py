"""Herbarium 2020 (FGVC7): over 1M NYBG specimen sheets of over 32,000 species, long-tailed, scored by macro-F1.

Kaggle competition ``herbarium-2020-fgvc7``; format from the organisers' README (visipedia/herbarium_comp,
2020/README_2020.md): COCO-style ``metadata.json`` with images, annotations (one per image), categories (species,
with family and genus), regions and licenses; the test metadata has images only. Category ids have gaps, so
classes are indexed 0..C-1 in category-id order and a submission maps the index back with :func:`category_ids`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .base import Dataset, DatasetError, Split, class_balanced_weights, draw_holdout, require
from .fixtures import write_image

# class_balanced_weights lives in base (samplers use it for any dataset); herbarium users find it here too
__all__ = ["GET_IT", "LAYOUT", "category_ids", "class_balanced_weights", "load_metadata", "read", "write_fixture"]
SLUG = "herbarium-2020-fgvc7"
LAYOUT = (
    "ROOT/nybg2020/train/metadata.json, ROOT/nybg2020/train/images/<a>/<b>/<image id>.jpg, "
    "ROOT/nybg2020/test/metadata.json, ROOT/nybg2020/test/images/<a>/<image id>.jpg "
    "(image paths as in each metadata.json's file_name, relative to its folder)"
)
GET_IT = (
    "1. pip install kaggle. 2. On kaggle.com: Settings > API > Create New Token; move the downloaded kaggle.json to "
    "~/.kaggle/kaggle.json and run chmod 600 ~/.kaggle/kaggle.json (keep it private). 3. Accept the rules at "
    f"https://www.kaggle.com/competitions/{SLUG}/rules (without it the download fails with 403 Forbidden). "
    f"4. kaggle competitions download -c {SLUG} -p ROOT (over a million JPEGs: check the size on the data page "
    f"and your free disk first). 5. unzip ROOT/{SLUG}.zip -d ROOT, which gives this layout."
)


def load_metadata(path: Path) -> dict:
    """The JSON object in ``path``; DatasetError naming the file (and the position of a JSON error)."""
    require(path, "Herbarium 2020 metadata file", LAYOUT)
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(
            f"{str(path)!r} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno} (character {e.pos}); "
            "the download may be truncated: unzip it again"
        ) from e
    if not isinstance(meta, dict):
        raise DatasetError(f"{str(path)!r} holds a JSON {type(meta).__name__}; expected an object with 'images'")
    return meta


def _entries(meta: dict, key: str, fields: tuple[str, ...], path: Path) -> list[dict]:
    """The list ``meta[key]`` whose entries all have ``fields``; DatasetError naming the first entry without."""
    entries = meta.get(key)
    if not isinstance(entries, list):
        raise DatasetError(f"{str(path)!r} has no {key!r} list (keys found: {sorted(meta)}). Expected: {LAYOUT}")
    for k, entry in enumerate(entries):
        missing = [f for f in fields if not isinstance(entry, dict) or f not in entry]
        if missing:
            raise DatasetError(f"{str(path)!r}: {key}[{k}] = {entry!r} lacks {missing}; each has {list(fields)}")
    return entries


def _images(meta: dict, path: Path) -> dict[int, str]:
    """Image id -> file_name, in file order; DatasetError naming a duplicated image id."""
    out: dict[int, str] = {}
    for image in _entries(meta, "images", ("id", "file_name"), path):
        if image["id"] in out:
            raise DatasetError(
                f"{str(path)!r}: image id {image['id']} appears twice ({out[image['id']]!r} and "
                f"{image['file_name']!r}); image ids are unique"
            )
        out[image["id"]] = image["file_name"]
    return out


def _check_files(folder: Path, files: dict[int, str]) -> tuple[Path, ...]:
    """The image paths under ``folder``; DatasetError naming the first that is not on disk and how many are not."""
    paths = tuple(folder / name for name in files.values())
    missing = [(i, p) for i, p in zip(files, paths, strict=True) if not p.is_file()]
    if missing:
        i, p = missing[0]
        raise DatasetError(
            f"image {i} is missing: {str(p)!r} ({len(missing)} of {len(paths)} images under {str(folder)!r} are "
            "missing); unzip the whole archive, or pass check_files=False to skip this check"
        )
    return paths


def _train_labels(meta: dict, images: dict[int, str], path: Path) -> tuple[np.ndarray, dict[int, int]]:
    """(sorted category ids, image id -> category id); DatasetError naming any broken annotation."""
    categories = _entries(meta, "categories", ("id", "name"), path)
    category_set = {c["id"] for c in categories}
    if len(category_set) != len(categories):
        seen = [c["id"] for c in categories]
        twice = next(i for i in seen if seen.count(i) > 1)
        raise DatasetError(f"{str(path)!r}: category id {twice} appears twice in categories; category ids are unique")
    label_of: dict[int, int] = {}
    for ann in _entries(meta, "annotations", ("image_id", "category_id"), path):
        image_id, category_id = ann["image_id"], ann["category_id"]
        if image_id not in images:
            raise DatasetError(
                f"{str(path)!r}: annotation {ann.get('id')} refers to image_id {image_id}, which has no entry in images"
            )
        if category_id not in category_set:
            raise DatasetError(
                f"{str(path)!r}: annotation {ann.get('id')} of image {image_id} has category_id {category_id}, "
                "which has no entry in categories"
            )
        if image_id in label_of:
            raise DatasetError(
                f"{str(path)!r}: image {image_id} has two annotations (categories {label_of[image_id]} and "
                f"{category_id}); Herbarium 2020 has one species per image"
            )
        label_of[image_id] = category_id
    unlabelled = [i for i in images if i not in label_of]
    if unlabelled:
        raise DatasetError(
            f"{str(path)!r}: image {unlabelled[0]} ({images[unlabelled[0]]!r}) has no annotation "
            f"({len(unlabelled)} such images); every training image has one"
        )
    return np.array(sorted(category_set), dtype=np.int64), label_of


def read(root: Path, holdout: float = 0.1, seed: int = 0, strict: bool = False, check_files: bool = True) -> Dataset:
    """Herbarium 2020 under ``root``: train, a stratified ``holdout`` fraction of it drawn with ``seed`` as 'valid'
    (0: none), and the unlabelled test set; ``strict`` makes a category without images an error; ``check_files``
    stats every image (a million files: seconds on a local disk, minutes on a network one)."""
    base = require(Path(root), "Herbarium 2020 folder", LAYOUT) / "nybg2020"
    train_path, test_path = base / "train" / "metadata.json", base / "test" / "metadata.json"
    train_meta, test_meta = load_metadata(train_path), load_metadata(test_path)
    images = _images(train_meta, train_path)
    ids, label_of = _train_labels(train_meta, images, train_path)
    names_of = {c["id"]: str(c["name"]) for c in train_meta["categories"]}
    labels = np.searchsorted(ids, np.array([label_of[i] for i in images], dtype=np.int64))
    notes = [f"{len(ids)} categories; ids {int(ids[0])}..{int(ids[-1])} map to class indices 0..{len(ids) - 1}"]
    empty = ids[np.bincount(labels, minlength=len(ids)) == 0]
    if len(empty):
        message = f"{len(empty)} categories have no training image (e.g. category_id {int(empty[0])})"
        if strict:
            raise DatasetError(f"{str(train_path)!r}: {message}; pass strict=False to keep them as empty classes")
        notes.append(message + "; they stay as classes that are never predicted well")
    folder = train_path.parent
    paths = _check_files(folder, images) if check_files else tuple(folder / n for n in images.values())
    train = Split(ids=tuple(str(i) for i in images), labels=labels.astype(np.int64), paths=paths)
    splits = {"train": train}
    if holdout:
        splits["train"], splits["valid"], note = draw_holdout(train, holdout, seed)
        notes.append(note)
    test_images = _images(test_meta, test_path)
    folder = test_path.parent
    paths = _check_files(folder, test_images) if check_files else tuple(folder / n for n in test_images.values())
    splits["test"] = Split(ids=tuple(str(i) for i in test_images), labels=None, paths=paths)
    notes.append("metric: macro-F1; submissions give the original category_id (category_ids(dataset))")
    class_names = tuple(names_of[i] for i in ids)
    return Dataset("herbarium2020", class_names, "single-label", splits, tuple(notes), meta={"category_ids": ids})


def category_ids(dataset_or_root: Dataset | Path) -> np.ndarray:
    """The original category_id of each class index (int64, ascending) of a dataset read by :func:`read`, or of the
    train metadata under a data root ``dataset_or_root``."""
    if isinstance(dataset_or_root, Dataset):
        if "category_ids" not in dataset_or_root.meta:
            raise DatasetError(
                f"dataset {dataset_or_root.name!r} has no Herbarium category ids; read it with herbarium2020.read"
            )
        return dataset_or_root.meta["category_ids"]
    path = Path(dataset_or_root) / "nybg2020" / "train" / "metadata.json"
    categories = _entries(load_metadata(path), "categories", ("id",), path)
    return np.array(sorted({c["id"] for c in categories}), dtype=np.int64)


# Non-contiguous ids, written out of order, like the real file; 911 has a single image (stays out of the holdout).
FIXTURE_CATEGORIES = {
    23004: ("Quercus alba L.", "Fagaceae", "Quercus", 5),
    3: ("Abies concolor (Gordon & Glend.) Hildebr.", "Pinaceae", "Abies", 6),
    911: ("Carex lurida Wahlenb.", "Cyperaceae", "Carex", 1),
    17: ("Acer rubrum L.", "Sapindaceae", "Acer", 4),
    5120: ("Fraxinus americana L.", "Oleaceae", "Fraxinus", 3),
}


def _fixture_meta(rng: np.random.Generator) -> tuple[dict, dict]:
    """The train and test metadata of the fixture."""
    info = {
        "year": 2020,
        "version": "fixture",
        "url": "",
        "description": "tresnet_nb fixture",
        "contributor": "",
        "date_created": "2020-01-01 00:00:00",
    }
    licenses = [{"id": 1, "name": "fixture licence", "url": ""}]
    regions = [{"id": 0, "name": "North America"}, {"id": 1, "name": "South America"}]
    n_train = sum(c[3] for c in FIXTURE_CATEGORIES.values())
    image_ids = rng.choice(1_000_000, size=n_train, replace=False)
    images, annotations, k = [], [], 0
    for category_id, (_name, _family, _genus, count) in FIXTURE_CATEGORIES.items():
        for _ in range(count):
            image_id = int(image_ids[k])
            # the real sub-folders split the zero-padded category id 3+2 digits: category 15672 -> images/156/72/
            name = f"images/{category_id // 100:03d}/{category_id % 100:02d}/{image_id}.jpg"
            images.append({"id": image_id, "file_name": name, "height": 24, "width": 16, "license": 1})
            region = int(rng.integers(2))
            annotations.append({"id": image_id, "image_id": image_id, "category_id": category_id, "region_id": region})
            k += 1
    categories = [
        {"id": c, "name": name, "family": family, "genus": genus}
        for c, (name, family, genus, _count) in FIXTURE_CATEGORIES.items()
    ]
    train = dict(annotations=annotations, categories=categories, images=images, info=info, licenses=licenses)
    train["regions"] = regions
    test_images = [
        {"id": i, "file_name": f"images/{i // 1000:03d}/{i}.jpg", "height": 24, "width": 16, "license": 1}
        for i in range(7)
    ]
    return train, {"images": test_images, "info": info, "licenses": licenses}


def write_fixture(root: Path, seed: int = 0) -> Path:
    """Write a tiny Herbarium 2020 (train and test metadata.json and their JPEGs) under ``root``."""
    root, rng = Path(root), np.random.default_rng(seed)
    train, test = _fixture_meta(rng)
    for split, meta in (("train", train), ("test", test)):
        folder = root / "nybg2020" / split
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "metadata.json").write_text(json.dumps(meta, indent=1))
        labels = {a["image_id"]: a["category_id"] for a in meta.get("annotations", [])}
        for image in meta["images"]:
            # a colour per species, so the fixture is learnable; one shared colour for the unlabelled test images
            species = labels.get(image["id"], 0)
            colour = tuple(int(v) for v in np.random.default_rng(species).integers(256, size=3))
            write_image(folder / image["file_name"], colour, rng, (image["width"], image["height"]))
    return root
