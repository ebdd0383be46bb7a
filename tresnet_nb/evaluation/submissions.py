"""Kaggle submission files for Herbarium 2020 and Plant Pathology 2020, their check, and the two metrics.

Formats: Herbarium 2020 ``Id,Predicted`` with the original category id (organisers' README, visipedia/herbarium_comp
2020/README_2020.md); Plant Pathology 2020 ``image_id,healthy,multiple_diseases,rust,scab`` with one probability per
column, as in its sample_submission.csv. The metrics are written out in numpy so the tests can hold them against
scikit-learn as an independent oracle.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.plant_pathology import LABEL_COLUMNS
from ..data.table import read_table

HERBARIUM_COLUMNS = ("Id", "Predicted")
PLANT_PATHOLOGY_COLUMNS = ("image_id", *LABEL_COLUMNS)
MAX_NAMED = 5  # ids named in one error message


class SubmissionError(ValueError):
    """A submission would be rejected or mis-scored by Kaggle; the message names the ids or values at fault."""


def _check_ids(ids: Sequence[str], expected: Sequence[str] | None, what: str) -> None:
    """Raise SubmissionError naming duplicated ``ids``, and the ``expected`` ids missing from them or extra."""
    twice = [i for i, n in Counter(ids).items() if n > 1]
    if twice:
        raise SubmissionError(f"{what}: {len(twice)} ids occur more than once, e.g. {twice[:MAX_NAMED]}")
    if expected is None:
        return
    have, want = set(ids), {str(i) for i in expected}
    missing = [i for i in expected if str(i) not in have]
    extra = [i for i in ids if i not in want]
    if missing or extra:
        raise SubmissionError(
            f"{what}: {len(missing)} expected ids are missing (e.g. {missing[:MAX_NAMED]}) and {len(extra)} are not "
            f"expected (e.g. {extra[:MAX_NAMED]}); predict every test image exactly once"
        )


def _write(path: Path, header: Sequence[str], rows: list[list]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def write_herbarium_submission(
    path: Path,
    test_ids: Sequence[str],
    predicted_class_index: np.ndarray,
    category_ids: np.ndarray,
    expected_ids: Sequence[str] | None = None,
) -> Path:
    """Write ``Id,Predicted`` to ``path``: each of ``test_ids`` with the original category id
    ``category_ids[predicted_class_index]``; ``expected_ids`` (e.g. the test metadata's ids) must all be there."""
    ids = [str(i) for i in test_ids]
    pred = np.asarray(predicted_class_index)
    if pred.ndim != 1 or len(pred) != len(ids):
        raise SubmissionError(
            f"predicted_class_index has shape {pred.shape}; expected ({len(ids)},), one class index per test id "
            "(from probabilities: probs.argmax(1))"
        )
    category_ids = np.asarray(category_ids, dtype=np.int64)
    bad = np.flatnonzero((pred < 0) | (pred >= len(category_ids)))
    if len(bad):
        raise SubmissionError(
            f"test id {ids[bad[0]]!r} has class index {pred[bad[0]]}, outside 0..{len(category_ids) - 1} "
            f"({len(bad)} such ids)"
        )
    _check_ids(ids, expected_ids, "Herbarium submission")
    return _write(path, HERBARIUM_COLUMNS, [[i, int(c)] for i, c in zip(ids, category_ids[pred], strict=True)])


def write_plant_pathology_submission(
    path: Path,
    test_ids: Sequence[str],
    probs: np.ndarray,
    columns: Sequence[str] = LABEL_COLUMNS,
    expected_ids: Sequence[str] | None = None,
) -> Path:
    """Write ``image_id,<columns>`` to ``path``: one row per id of ``test_ids`` (test.csv order) with its row of
    ``probs`` (N, len(columns)) in [0, 1]; ``expected_ids`` (e.g. test.csv's ids) must all be there."""
    ids = [str(i) for i in test_ids]
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (len(ids), len(columns)):
        raise SubmissionError(f"probs has shape {probs.shape}; expected ({len(ids)}, {len(columns)}) for {columns}")
    bad = np.argwhere(~np.isfinite(probs) | (probs < 0) | (probs > 1))
    if len(bad):
        i, j = bad[0]
        raise SubmissionError(
            f"test id {ids[i]!r} has {probs[i, j]} in column {columns[j]!r}; probabilities lie in [0, 1] (apply "
            f"sigmoid or softmax to logits) ({len(bad)} such values)"
        )
    _check_ids(ids, expected_ids, "Plant Pathology submission")
    # repr keeps every digit: rounding can create ties that change a rank-based metric such as ROC-AUC
    rows = [[i, *(repr(float(v)) for v in row)] for i, row in zip(ids, probs, strict=True)]
    return _write(path, ("image_id", *columns), rows)


def write_submission(
    dataset: str,
    path: Path,
    test_ids: Sequence[str],
    probs: np.ndarray,
    meta: dict | None = None,
    expected_ids: Sequence[str] | None = None,
) -> Path:
    """The Kaggle submission of ``dataset`` ('herbarium2020': the arg-max class as its category id, from
    ``meta['category_ids']`` of the dataset; 'plant_pathology': the probabilities) for ``test_ids``."""
    probs = np.asarray(probs)
    if dataset == "herbarium2020":
        if not meta or "category_ids" not in meta:
            raise SubmissionError("Herbarium submissions need the dataset's meta['category_ids'] (from its reader)")
        return write_herbarium_submission(path, test_ids, probs.argmax(1), meta["category_ids"], expected_ids)
    if dataset == "plant_pathology":
        return write_plant_pathology_submission(path, test_ids, probs, expected_ids=expected_ids)
    raise SubmissionError(f"{dataset!r} has no Kaggle submission format; only 'herbarium2020' and 'plant_pathology'")


def check_submission(path: Path, sample_or_ids: Path | Sequence[str], columns: Sequence[str]) -> int:
    """Check the submission at ``path`` has header ``columns`` (ids first), no empty cell, and exactly the ids of
    the sample submission file or id list ``sample_or_ids``; returns the number of rows."""
    table = read_table(Path(path), "submission", ",".join(columns))
    if table.header != tuple(columns):
        raise SubmissionError(f"{str(path)!r} has header {','.join(table.header)}; expected {','.join(columns)}")
    for i, row in enumerate(table.rows):
        if "" in row:
            raise SubmissionError(f"{table.where(i)}: column {columns[row.index('')]!r} is empty")
    if isinstance(sample_or_ids, (str, Path)):
        sample = read_table(Path(sample_or_ids), "sample submission", ",".join(columns))
        expected = sample.column(sample.header[0])
    else:
        expected = [str(i) for i in sample_or_ids]
    _check_ids(table.column(columns[0]), expected, str(path))
    return len(table.rows)
