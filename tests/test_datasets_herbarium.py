"""Herbarium 2020 reader: the COCO-style metadata, non-contiguous category ids, holdout, and named errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tresnet_nb.data import herbarium2020 as herb
from tresnet_nb.data.base import DatasetError

FIXTURE_IDS = [3, 17, 911, 5120, 23004]  # the fixture's category ids, ascending


@pytest.fixture
def root(tmp_path):
    return herb.write_fixture(tmp_path / "herbarium")


def edit(root, split, change):
    """Apply ``change`` to the parsed metadata of ``split`` and write it back."""
    path = root / "nybg2020" / split / "metadata.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def train_meta(root):
    return json.loads((root / "nybg2020" / "train" / "metadata.json").read_text())


def test_fixture_is_in_the_official_format(root):
    meta = train_meta(root)
    assert set(meta) == {"annotations", "categories", "images", "info", "licenses", "regions"}
    assert set(meta["images"][0]) == {"id", "file_name", "height", "width", "license"}
    assert set(meta["annotations"][0]) == {"id", "image_id", "category_id", "region_id"}
    assert set(meta["categories"][0]) == {"id", "name", "family", "genus"}
    test = json.loads((root / "nybg2020" / "test" / "metadata.json").read_text())
    assert "annotations" not in test and test["images"][0]["file_name"] == "images/000/0.jpg"
    first = meta["images"][0]
    assert (root / "nybg2020" / "train" / first["file_name"]).read_bytes()[:2] == b"\xff\xd8"  # a real JPEG


def test_read_counts_splits_and_class_names(root):
    ds = herb.read(root)
    assert ds.task == "single-label" and set(ds.splits) == {"train", "valid", "test"}
    assert len(ds["train"]) + len(ds["valid"]) == 19 and len(ds["test"]) == 7
    assert ds["test"].labels is None and ds["test"].ids == tuple(str(i) for i in range(7))
    names = {c["id"]: c["name"] for c in train_meta(root)["categories"]}
    assert ds.class_names == tuple(names[i] for i in FIXTURE_IDS)
    for split in ("train", "valid"):
        assert ds[split].labels.dtype == np.int64 and 0 <= ds[split].labels.min() <= ds[split].labels.max() < 5
    assert ds["train"].load(0).size == (16, 24)


def test_category_ids_round_trip_to_the_annotations(root):
    ds = herb.read(root)
    ids = herb.category_ids(ds)
    assert ids.tolist() == FIXTURE_IDS and herb.category_ids(root).tolist() == FIXTURE_IDS
    truth = {str(a["image_id"]): a["category_id"] for a in train_meta(root)["annotations"]}
    for split in ("train", "valid"):
        back = ids[ds[split].labels]
        assert back.tolist() == [truth[i] for i in ds[split].ids]


def test_holdout_is_stratified_and_keeps_singletons_in_train(root):
    ds = herb.read(root, holdout=0.1, seed=0)
    train, valid = ds["train"], ds["valid"]
    assert not set(train.ids) & set(valid.ids)
    # one of each class with two or more images (6, 4, 3, 5 images); category 911 has a single image
    assert valid.class_counts(5).tolist() == [1, 1, 0, 1, 1]
    assert train.class_counts(5).tolist() == [5, 3, 1, 2, 4]
    assert any("1 classes with a single item stay in train" in n for n in ds.notes)
    again = herb.read(root, holdout=0.1, seed=0)
    assert again["valid"].ids == valid.ids
    assert "valid" not in herb.read(root, holdout=0).splits


def test_class_balanced_weights_give_each_class_equal_mass():
    labels = np.array([0, 0, 0, 1, 2, 2])
    w = herb.class_balanced_weights(labels, 4)
    assert w.sum() == pytest.approx(1)
    assert [w[labels == c].sum() for c in range(3)] == pytest.approx([1 / 3] * 3)
    with pytest.raises(ValueError, match="outside the classes 0..1"):
        herb.class_balanced_weights(labels, 2)


def test_missing_metadata_names_file_and_layout(tmp_path):
    with pytest.raises(DatasetError, match=r"metadata\.json.*Expected layout: ROOT/nybg2020/train"):
        (tmp_path / "h").mkdir()
        herb.read(tmp_path / "h")


def test_invalid_json_names_file_and_position(root):
    path = root / "nybg2020" / "test" / "metadata.json"
    path.write_text('{"images": [\n  {"id": 0,}\n]}')
    with pytest.raises(DatasetError, match=r"test/metadata\.json' is not valid JSON: .* line 2 column 12"):
        herb.read(root)


def test_annotation_of_unknown_image_is_named(root):
    edit(root, "train", lambda m: m["annotations"][0].update(image_id=99_999_999))
    with pytest.raises(DatasetError, match="refers to image_id 99999999, which has no entry in images"):
        herb.read(root)


def test_image_without_annotation_is_named(root):
    image_id = train_meta(root)["annotations"][-1]["image_id"]
    edit(root, "train", lambda m: m["annotations"].pop())
    with pytest.raises(DatasetError, match=f"image {image_id} .* has no annotation"):
        herb.read(root)


def test_two_annotations_of_one_image_are_named(root):
    image_id = train_meta(root)["images"][0]["id"]
    edit(root, "train", lambda m: m["annotations"].append(dict(m["annotations"][0], id=-1)))
    with pytest.raises(DatasetError, match=f"image {image_id} has two annotations"):
        herb.read(root)


@pytest.mark.parametrize("split", ["train", "test"])
def test_duplicate_image_id_is_named(root, split):
    def duplicate(meta):
        meta["images"][1]["id"] = meta["images"][0]["id"]

    edit(root, split, duplicate)
    with pytest.raises(DatasetError, match=r"image id \d+ appears twice"):
        herb.read(root)


def test_unknown_category_id_is_named(root):
    edit(root, "train", lambda m: m["annotations"][0].update(category_id=4242))
    with pytest.raises(DatasetError, match="category_id 4242, which has no entry in categories"):
        herb.read(root)


@pytest.mark.parametrize("split", ["train", "test"])
def test_missing_image_file_is_named(root, split):
    name = json.loads((root / "nybg2020" / split / "metadata.json").read_text())["images"][2]["file_name"]
    (root / "nybg2020" / split / name).unlink()
    with pytest.raises(DatasetError, match=f"{name}.*1 of .* images .* are missing"):
        herb.read(root)
    assert len(herb.read(root, check_files=False)[split].paths) > 0


def test_empty_category_is_noted_or_an_error_when_strict(root):
    edit(root, "train", lambda m: m["categories"].append({"id": 30000, "name": "Nemo", "family": "F", "genus": "G"}))
    ds = herb.read(root)
    assert herb.category_ids(ds).tolist() == [*FIXTURE_IDS, 30000] and ds.class_names[-1] == "Nemo"
    assert any("1 categories have no training image (e.g. category_id 30000)" in n for n in ds.notes)
    with pytest.raises(DatasetError, match="category_id 30000"):
        herb.read(root, strict=True)


def test_metadata_without_a_section_is_named(root):
    edit(root, "train", lambda m: m.pop("categories"))
    with pytest.raises(DatasetError, match="has no 'categories' list"):
        herb.read(root)


def test_category_ids_of_another_dataset_is_an_error(root):
    ds = herb.read(root)
    other = type(ds)("other", ds.class_names, ds.task, ds.splits)
    with pytest.raises(DatasetError, match=r"has no Herbarium category ids; read it with herbarium2020.read"):
        herb.category_ids(other)
