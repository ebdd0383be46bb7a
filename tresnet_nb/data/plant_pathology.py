"""Plant Pathology 2020 (FGVC7): apple-leaf photos, four one-hot columns, scored by mean column-wise ROC-AUC.

Kaggle competition ``plant-pathology-2020-fgvc7`` (Thapa et al., "The Plant Pathology 2020 challenge dataset to
classify foliar disease of apples", arXiv:2004.11958): 1821 training and 1821 test photos. The four columns are
mutually exclusive in train.csv (one 1 per row), so the dataset is read as single-label by default: softmax and
cross-entropy, the class index being the column holding the 1. The metric scores each column as its own binary
problem: the mean column ROC-AUC of the softmax probabilities, which are also what a submission holds, one per
column. ``read(root, task='multi-label')`` keeps the (N, 4) 0/1 matrix instead, for BCE or the Asymmetric Loss.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np

from .base import TASKS, Dataset, DatasetError, Split, draw_holdout, flag, require
from .fixtures import write_image
from .table import CsvTable, find_duplicates, parse_flags, read_table

LABEL_COLUMNS = ("healthy", "multiple_diseases", "rust", "scab")
TRAIN_HEADER = ("image_id", *LABEL_COLUMNS)
SLUG = "plant-pathology-2020-fgvc7"
LAYOUT = (
    "ROOT/train.csv (image_id,healthy,multiple_diseases,rust,scab; one 1 per row), ROOT/test.csv (image_id), "
    "ROOT/sample_submission.csv, ROOT/images/{Train_0,...,Test_0,...}.jpg"
)
GET_IT = (
    "1. pip install kaggle. 2. On kaggle.com: Settings > API > Create New Token; move the downloaded kaggle.json to "
    "~/.kaggle/kaggle.json and run chmod 600 ~/.kaggle/kaggle.json (keep it private). 3. Accept the rules at "
    f"https://www.kaggle.com/competitions/{SLUG}/rules (without it the download fails with 403 Forbidden). "
    f"4. kaggle competitions download -c {SLUG} -p ROOT. 5. unzip ROOT/{SLUG}.zip -d ROOT, which gives this layout."
)


def check_header(table: CsvTable, expected: tuple[str, ...]) -> None:
    """Raise DatasetError naming the missing and extra columns of ``table`` when they differ from ``expected``."""
    missing = [c for c in expected if c not in table.header]
    extra = [c for c in table.header if c not in expected]
    if missing or extra:
        raise DatasetError(
            f"{str(table.path)!r} has columns {list(table.header)}: missing {missing}, extra {extra}; expected the "
            f"header {','.join(expected)}"
        )


def _split(table: CsvTable, root: Path, labels: np.ndarray | None, problems: list[str] | None = None) -> Split:
    """The rows of ``table`` as a split of ``root``/images/<image_id>.jpg; DatasetError naming a missing image (with
    ``problems``: every missing image listed there and its row left out)."""
    ids = table.column("image_id")
    find_duplicates(table, "image_id")
    paths = tuple(root / "images" / f"{i}.jpg" for i in ids)
    present = np.array([p.is_file() for p in paths], dtype=bool)
    for i in np.flatnonzero(~present):
        flag(problems, f"{table.where(i)}: image_id {ids[i]!r} has no image file {str(paths[i])!r}")
    split = Split(ids=tuple(ids), labels=labels, paths=paths)
    return split if present.all() else split.subset(np.flatnonzero(present))


def read_labels(table: CsvTable, problems: list[str] | None = None) -> np.ndarray:
    """The label columns of train.csv ``table`` as a float32 (N, 4) matrix; DatasetError naming a row that is not
    one-hot (with ``problems``: every such row and every value other than 0 or 1 listed there, those rows' sums
    then differing from 1)."""
    labels = parse_flags(table, LABEL_COLUMNS, "image_id", problems)
    bad = np.flatnonzero(labels.sum(1) != 1)
    for i in bad:
        if np.isnan(labels[i]).any():  # already listed by parse_flags
            continue
        values = {c: table.rows[i][table.header.index(c)] for c in LABEL_COLUMNS}
        count = "" if problems is not None else f" ({len(bad)} such rows)"
        flag(
            problems,
            f"{table.where(i)}: image_id {table.column('image_id')[i]!r} has {values}; every row of "
            f"train.csv has exactly one 1{count}",
        )
    return labels


def read(
    root: Path, holdout: float = 0.2, seed: int = 0, task: str = "single-label", problems: list[str] | None = None
) -> Dataset:
    """Plant Pathology 2020 under ``root``: train, a stratified ``holdout`` fraction of it drawn with ``seed`` as
    'valid' (0: none), and the unlabelled test set. ``task`` 'single-label' (class indices, for softmax and
    cross-entropy) or 'multi-label' (the one-hot matrix, for BCE or ASL; the same splits). With ``problems`` (a
    list: ``data verify``), bad rows and missing images are listed there and left out instead of raising."""
    if task not in TASKS:
        raise ValueError(f"task {task!r} for Plant Pathology 2020; choose one of {TASKS}")
    root = require(Path(root), "Plant Pathology 2020 folder", LAYOUT)
    train_table = read_table(root / "train.csv", "Plant Pathology train.csv", LAYOUT)
    check_header(train_table, TRAIN_HEADER)
    test_table = read_table(root / "test.csv", "Plant Pathology test.csv", LAYOUT)
    check_header(test_table, ("image_id",))
    one_hot = read_labels(train_table, problems)
    good = one_hot.sum(1) == 1  # all rows unless ``problems`` collects the others
    train_table, one_hot = train_table.select(good), one_hot[good]
    # the holdout is drawn on the class index for both tasks, so that they hold out the same items
    train = _split(train_table, root, one_hot.argmax(1).astype(np.int64), problems)
    splits, notes = {"train": train}, []
    if holdout:
        splits["train"], splits["valid"], note = draw_holdout(train, holdout, seed)
        notes.append(note)
    if task == "multi-label":
        splits = {
            k: replace(v, labels=np.eye(len(LABEL_COLUMNS), dtype=np.float32)[v.labels]) for k, v in splits.items()
        }
    splits["test"] = _split(test_table, root, None, problems)
    how = {
        "single-label": "one class per row: softmax and cross-entropy; task='multi-label' for BCE or ASL",
        "multi-label": "the one-hot columns as labels, for BCE or ASL",
    }[task]
    notes.append(f"task: {task} ({how})")
    notes.append("metric: mean column-wise ROC-AUC over " + ", ".join(LABEL_COLUMNS))
    return Dataset("plant_pathology_2020", LABEL_COLUMNS, task, splits, tuple(notes))


# Colours loosely after the symptoms: green leaf, brown spots, orange rust, grey-olive scab.
FIXTURE_COLOURS = {
    "healthy": (60, 170, 60),
    "multiple_diseases": (120, 90, 50),
    "rust": (220, 120, 30),
    "scab": (110, 120, 80),
}
# multiple_diseases is the rare class (about 5% of train.csv); the fixture keeps a few so it can be held out
FIXTURE_COUNTS = {"healthy": 6, "multiple_diseases": 3, "rust": 7, "scab": 6}


def write_fixture(root: Path, seed: int = 0, n_test: int = 8) -> Path:
    """Write train.csv, test.csv, sample_submission.csv and the JPEGs of a tiny Plant Pathology 2020 under ``root``."""
    root, rng = Path(root), np.random.default_rng(seed)
    classes = rng.permutation([c for c, n in FIXTURE_COUNTS.items() for _ in range(n)])
    train_rows = []
    for i, c in enumerate(classes):
        write_image(root / "images" / f"Train_{i}.jpg", FIXTURE_COLOURS[c], rng, (32, 24))
        train_rows.append([f"Train_{i}", *(int(c == k) for k in LABEL_COLUMNS)])
    for i in range(n_test):
        write_image(root / "images" / f"Test_{i}.jpg", FIXTURE_COLOURS[LABEL_COLUMNS[i % 4]], rng, (32, 24))
    tables = {
        "train.csv": [TRAIN_HEADER, *train_rows],
        "test.csv": [("image_id",), *([f"Test_{i}"] for i in range(n_test))],
        # a uniform guess in every column, in the sample submission's format
        "sample_submission.csv": [TRAIN_HEADER, *([f"Test_{i}", 0.25, 0.25, 0.25, 0.25] for i in range(n_test))],
    }
    for name, rows in tables.items():
        with open(root / name, "w", newline="") as f:
            csv.writer(f).writerows(rows)
    return root
