"""A user's CSV of image paths and labels: ``path,label`` (single-label) or ``path,<label1>,<label2>,...`` with
0/1 values (multi-label), and an optional ``split`` column (train/valid/test) that replaces the drawn holdout.

Named ``table`` rather than ``csv`` so that ``import csv`` inside this package still means the standard library.
"""

from __future__ import annotations

import csv as csvlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import Dataset, DatasetError, Split, draw_holdout, flag, require
from .fixtures import FIXTURE_CLASSES, write_image

LAYOUT = (
    "ROOT/labels.csv with a header: path,label (single-label) or path,<label1>,<label2>,... holding 0/1 "
    "(multi-label), plus an optional split column of train/valid/test; paths are relative to the CSV's folder"
)
GET_IT = (
    "Your own pictures: write a CSV with a header line and one row per image, e.g. 'path,label' then "
    "'images/a.jpg,cat'. Spreadsheets can save it as 'CSV UTF-8'."
)
SPLITS = ("train", "valid", "test")
TRUE_FALSE = {"0": 0.0, "1": 1.0, "0.0": 0.0, "1.0": 1.0}


@dataclass(frozen=True)
class CsvTable:
    """A CSV file's header and rows as stripped strings, with the file line number of each row (header: line 1)."""

    path: Path
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    lines: tuple[int, ...]

    def column(self, name: str) -> list[str]:
        """The cells of column ``name``."""
        j = self.header.index(name)
        return [row[j] for row in self.rows]

    def select(self, mask: np.ndarray) -> CsvTable:
        """The rows where boolean ``mask`` is true."""
        keep = np.flatnonzero(mask)
        return CsvTable(self.path, self.header, tuple(self.rows[i] for i in keep), tuple(self.lines[i] for i in keep))

    def where(self, i: int) -> str:
        """Row ``i`` as a place a reader can find: file and line."""
        return f"{str(self.path)!r} line {self.lines[i]}"


def read_table(path: Path, what: str, layout: str) -> CsvTable:
    """The CSV at ``path`` (a ``what`` in ``layout``); DatasetError naming it when missing, unreadable or ragged."""
    require(Path(path), what, layout)
    rows, lines = [], []
    try:
        # utf-8-sig: spreadsheet programs start 'CSV UTF-8' files with a byte-order mark, which would end up in the
        # first column's name
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csvlib.reader(f)
            header = tuple(cell.strip() for cell in next(reader, ()))
            for row in reader:
                if any(cell.strip() for cell in row):  # blank lines carry no item
                    rows.append(tuple(cell.strip() for cell in row))
                    lines.append(reader.line_num)
    except (UnicodeDecodeError, csvlib.Error) as e:
        raise DatasetError(f"{what} {str(path)!r} is not a readable UTF-8 CSV file ({e}); save it as CSV UTF-8") from e
    if not header:
        raise DatasetError(f"{what} {str(path)!r} is empty; expected a header line. Expected layout: {layout}")
    for row, line in zip(rows, lines, strict=True):
        if len(row) != len(header):
            raise DatasetError(
                f"{what} {str(path)!r} line {line} has {len(row)} fields but the header {','.join(header)} has "
                f"{len(header)}; quote cells that contain commas"
            )
    return CsvTable(Path(path), header, tuple(rows), tuple(lines))


def find_duplicates(table: CsvTable, column: str) -> None:
    """Raise DatasetError naming the first value of ``column`` that occurs twice in ``table``, and both lines."""
    first: dict[str, int] = {}
    for i, value in enumerate(table.column(column)):
        if value in first:
            raise DatasetError(
                f"{str(table.path)!r}: {column} {value!r} occurs on line {table.lines[first[value]]} and again on "
                f"line {table.lines[i]}; each item may appear once"
            )
        first[value] = i


def parse_flags(
    table: CsvTable, columns: Sequence[str], id_column: str, problems: list[str] | None = None
) -> np.ndarray:
    """The 0/1 cells of ``columns`` as a float32 (N, C) matrix; DatasetError naming the row's ``id_column``, the
    line and the column of the first other value (with ``problems``: each such value listed there, its cell NaN)."""
    ids = table.column(id_column)
    out = np.zeros((len(table.rows), len(columns)), dtype=np.float32)
    for j, name in enumerate(columns):
        for i, cell in enumerate(table.column(name)):
            if cell not in TRUE_FALSE:
                where = f"{table.where(i)}: {id_column} {ids[i]!r}"
                flag(problems, f"{where} has {cell!r} in column {name!r}; label columns hold 0 or 1")
            out[i, j] = TRUE_FALSE.get(cell, np.nan)
    return out


def _class_order(values: set[str]) -> list[str]:
    # integer labels sort as numbers (2 before 10), which is what people who number their classes expect
    if all(v.lstrip("-").isdigit() for v in values):
        return sorted(values, key=int)
    return sorted(values)


def _labels(table: CsvTable, split_of: list[str]) -> tuple[str, tuple[str, ...], np.ndarray | None, np.ndarray]:
    """(task, class names, labels of every row (unlabelled test rows: -1 or zeros), mask of the labelled rows)."""
    paths = table.column("path")
    label_columns = [c for c in table.header if c not in ("path", "split")]
    if not label_columns:
        raise DatasetError(f"{str(table.path)!r} has no label column besides {table.header}. Expected: {LAYOUT}")
    if label_columns == ["label"]:
        cells = table.column("label")
        for i, cell in enumerate(cells):
            if not cell and split_of[i] != "test":
                raise DatasetError(f"{table.where(i)}: path {paths[i]!r} has an empty label")
        names = tuple(_class_order({c for c in cells if c}))
        labelled = np.array([bool(c) for c in cells])
        index = {n: k for k, n in enumerate(names)}
        return "single-label", names, np.array([index.get(c, -1) for c in cells], dtype=np.int64), labelled
    labelled = np.array([any(row[table.header.index(c)] for c in label_columns) for row in table.rows])
    for i in np.flatnonzero(~labelled):
        if split_of[i] != "test":
            raise DatasetError(f"{table.where(i)}: path {paths[i]!r} has empty labels")
    flags = np.zeros((len(table.rows), len(label_columns)), dtype=np.float32)
    if labelled.any():
        flags[labelled] = parse_flags(table.select(labelled), label_columns, "path")
    return "multi-label", tuple(label_columns), flags, labelled


def read(root_or_csv: Path, csv: str = "labels.csv", holdout: float = 0.2, seed: int = 0) -> Dataset:
    """The CSV ``csv`` in folder ``root_or_csv`` (or the CSV file itself); without a split column a ``holdout``
    fraction of train is drawn with ``seed`` as 'valid' (0: no valid split)."""
    path = Path(root_or_csv)
    path = path if path.is_file() else path / csv
    table = read_table(path, "label CSV", LAYOUT)
    if "path" not in table.header:
        raise DatasetError(
            f"{str(path)!r} has columns {list(table.header)} but no 'path' column; rename the column holding the "
            f"image paths to 'path'. Expected layout: {LAYOUT}"
        )
    find_duplicates(table, "path")
    split_of = table.column("split") if "split" in table.header else ["train"] * len(table.rows)
    for i, s in enumerate(split_of):
        if s not in SPLITS:
            raise DatasetError(f"{table.where(i)}: split {s!r} is not one of {list(SPLITS)}")
    paths = []
    for i, p in enumerate(table.column("path")):
        full = path.parent / p
        if not full.is_file():
            raise DatasetError(f"{table.where(i)}: image {p!r} not found (looked for {str(full)!r})")
        paths.append(full)
    task, names, labels, labelled = _labels(table, split_of)
    split_of = np.array(split_of)
    splits, notes = {}, [f"read from {str(path)!r}; task {task}"]
    for name in SPLITS:
        rows = np.flatnonzero(split_of == name)
        if not len(rows):
            continue
        if name == "test" and labelled[rows].any() and not labelled[rows].all():
            raise DatasetError(f"{str(path)!r}: some test rows have labels and some do not; label all or none")
        split = Split(
            ids=tuple(table.rows[i][table.header.index("path")] for i in rows),
            labels=labels[rows] if labelled[rows].all() else None,
            paths=tuple(paths[i] for i in rows),
        )
        splits[name] = split
    if "train" not in splits:
        raise DatasetError(f"{str(path)!r} has no training rows; give some rows split 'train'")
    if "split" in table.header:
        notes.append("splits from the CSV's split column")
    elif holdout:
        splits["train"], splits["valid"], note = draw_holdout(splits["train"], holdout, seed)
        notes.append(note)
    return Dataset("table", names, task, splits, tuple(notes))


def write_fixture(root: Path, seed: int = 0, multi_label: bool = False, per_class: int = 5) -> Path:
    """Write images and ``labels.csv`` (single-label, or ``multi_label`` 0/1 columns) under ``root``."""
    root, rng = Path(root), np.random.default_rng(seed)
    names = list(FIXTURE_CLASSES)
    header = ["path", *names] if multi_label else ["path", "label"]
    rows = []
    for k, (name, colour) in enumerate(FIXTURE_CLASSES.items()):
        for i in range(per_class):
            rel = f"images/{name}_{i}.jpg"
            write_image(root / rel, colour, rng, (24, 20))
            if multi_label:
                # every other image also shows the next class, so rows with two labels exist
                flags = [int(j == k or (i % 2 and j == (k + 1) % len(names))) for j in range(len(names))]
                rows.append([rel, *flags])
            else:
                rows.append([rel, name])
    with open(root / "labels.csv", "w", newline="") as f:
        csvlib.writer(f).writerows([header, *rows])
    return root
