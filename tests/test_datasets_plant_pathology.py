"""Plant Pathology 2020 reader: the CSVs, the one-hot label matrix, holdout, and named errors."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from tresnet_nb.data import plant_pathology as pp
from tresnet_nb.data.base import DatasetError

HEADER = "image_id,healthy,multiple_diseases,rust,scab"


@pytest.fixture
def root(tmp_path):
    return pp.write_fixture(tmp_path / "plants")


def rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def write_rows(path, table):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(table)


def test_fixture_is_in_the_official_format(root):
    assert (root / "train.csv").read_text().splitlines()[0] == HEADER
    assert (root / "sample_submission.csv").read_text().splitlines()[0] == HEADER
    assert rows(root / "test.csv")[:2] == [["image_id"], ["Test_0"]]
    assert (root / "images" / "Train_0.jpg").read_bytes()[:2] == b"\xff\xd8"
    classes = [r[1:].index("1") for r in rows(root / "train.csv")[1:]]
    assert np.bincount(classes).tolist() == [6, 3, 7, 6]  # multiple_diseases is rare but present


def test_read_counts_labels_and_test_order(root):
    ds = pp.read(root)
    assert ds.task == "multi-label" and ds.class_names == ("healthy", "multiple_diseases", "rust", "scab")
    assert len(ds["train"]) + len(ds["valid"]) == 22 and len(ds["test"]) == 8
    for split in ("train", "valid"):
        labels = ds[split].labels
        assert labels.dtype == np.float32 and labels.shape[1] == 4 and (labels.sum(1) == 1).all()
    assert ds["test"].labels is None
    assert ds["test"].ids == tuple(r[0] for r in rows(root / "test.csv")[1:])
    assert ds["test"].paths[0] == root / "images" / "Test_0.jpg"
    truth = {r[0]: [float(v) for v in r[1:]] for r in rows(root / "train.csv")[1:]}
    assert ds["train"].labels.tolist() == [truth[i] for i in ds["train"].ids]


def test_holdout_is_stratified_and_holds_out_the_rare_class(root):
    ds = pp.read(root, holdout=0.2, seed=0)
    assert not set(ds["train"].ids) & set(ds["valid"].ids)
    # round(0.2 * n) of each class, at least one: 6, 3, 7, 6 -> 1, 1, 1, 1
    assert ds["valid"].class_counts(4).tolist() == [1, 1, 1, 1]
    assert ds["train"].class_counts(4).tolist() == [5, 2, 6, 5]
    assert pp.read(root, holdout=0.2, seed=0)["valid"].ids == ds["valid"].ids
    assert "valid" not in pp.read(root, holdout=0).splits


def test_missing_csv_names_it_and_the_layout(root):
    (root / "test.csv").unlink()
    with pytest.raises(DatasetError, match=r"test\.csv not found: .*Expected layout: ROOT/train\.csv"):
        pp.read(root)


def test_missing_and_extra_columns_are_named_with_the_header(root):
    table = rows(root / "train.csv")
    write_rows(root / "train.csv", [[*r[:4], r[4]] if i else [*r[:4], "scabs"] for i, r in enumerate(table)])
    with pytest.raises(DatasetError, match=rf"missing \['scab'\], extra \['scabs'\]; expected the header {HEADER}"):
        pp.read(root)


def test_reordered_columns_are_read_by_name(root):
    table = rows(root / "train.csv")
    write_rows(root / "train.csv", [[r[0], r[4], r[3], r[2], r[1]] for r in table])
    assert pp.read(root, holdout=0)["train"].labels.tolist() == [[float(v) for v in r[1:]] for r in table[1:]]


def test_row_that_is_not_one_hot_is_named_with_its_values(root):
    table = rows(root / "train.csv")
    table[3][1:] = ["1", "0", "1", "0"]
    write_rows(root / "train.csv", table)
    with pytest.raises(DatasetError, match="line 4: image_id 'Train_2' has .*'healthy': '1'.*'rust': '1'"):
        pp.read(root)


def test_value_other_than_0_or_1_is_named(root):
    table = rows(root / "train.csv")
    table[5][3] = "0.7"
    write_rows(root / "train.csv", table)
    with pytest.raises(DatasetError, match="line 6: image_id 'Train_4' has '0.7' in column 'rust'"):
        pp.read(root)


@pytest.mark.parametrize("name", ["train.csv", "test.csv"])
def test_duplicate_image_id_is_named(root, name):
    table = rows(root / name)
    table.append(table[1])
    write_rows(root / name, table)
    with pytest.raises(DatasetError, match=f"image_id {table[1][0]!r} occurs on line 2 and again on line"):
        pp.read(root)


def test_image_id_without_image_is_named(root):
    (root / "images" / "Test_3.jpg").unlink()
    with pytest.raises(DatasetError, match=r"image_id 'Test_3' has no image file .*Test_3\.jpg"):
        pp.read(root)


def test_unreadable_csv_is_named(root):
    (root / "train.csv").write_bytes(HEADER.encode() + b"\nTrain_0,\xff\xfe,0,0,0\n")
    with pytest.raises(DatasetError, match=r"train\.csv' is not a readable UTF-8 CSV"):
        pp.read(root)
    (root / "train.csv").write_text(HEADER + "\nTrain_0,1,0,0,0,7\n")
    with pytest.raises(DatasetError, match="line 2 has 6 fields but the header"):
        pp.read(root)
