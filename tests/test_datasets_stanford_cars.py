"""Stanford Cars reader: the devkit .mat structs, 1-based classes and boxes, exact crops, and named errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from tresnet_nb.data import stanford_cars as cars
from tresnet_nb.data.base import DatasetError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return cars.write_fixture(tmp_path_factory.mktemp("cars"))


@pytest.fixture
def fresh(tmp_path):
    return cars.write_fixture(tmp_path / "cars")


def raw_annotations(path):
    """The annotations as MATLAB shapes them: a (1, N) struct array."""
    return scipy.io.loadmat(path)["annotations"]


def edit(path, index, **fields):
    """Set ``fields`` of annotation ``index`` in ``path`` and write the file back."""
    ann = raw_annotations(path)
    for name, value in fields.items():
        ann[0, index][name] = np.array([[value]], dtype=np.int32) if isinstance(value, int) else np.array([value])
    scipy.io.savemat(path, {"annotations": ann})


def test_fixture_is_in_the_official_format(root):
    assert scipy.io.whosmat(root / "devkit" / "cars_meta.mat") == [("class_names", (1, 196), "cell")]
    assert scipy.io.whosmat(root / "devkit" / "cars_train_annos.mat") == [("annotations", (1, 196), "struct")]
    assert scipy.io.whosmat(root / "cars_test_annos_withlabels.mat") == [("annotations", (1, 196), "struct")]
    ann = raw_annotations(root / "devkit" / "cars_train_annos.mat")
    assert ann.shape == (1, 196) and ann.dtype.names == cars.FIELDS
    assert ann[0, 0]["fname"][0] == "00001.jpg" and ann[0, 0]["bbox_x1"].shape == (1, 1)
    assert "class" not in raw_annotations(root / "devkit" / "cars_test_annos.mat").dtype.names
    assert (root / "cars_train" / "00001.jpg").read_bytes()[:2] == b"\xff\xd8"


def test_read_splits_labels_names_and_boxes(root):
    ds = cars.read(root)
    assert set(ds.splits) == {"train", "test"} and len(ds["train"]) == 196 and len(ds["test"]) == 196
    assert len(ds.class_names) == 196 and ds.class_names[0] == "Fixture Make Model1 2001"
    ann = raw_annotations(root / "devkit" / "cars_train_annos.mat")[0]
    assert ds["train"].ids == tuple(a["fname"][0] for a in ann)
    assert ds["train"].labels.tolist() == [int(a["class"][0, 0]) - 1 for a in ann]
    assert sorted(set(ds["train"].labels.tolist())) == list(range(196))  # every class, for verify()
    first = ann[0]
    x1, y1, x2, y2 = (int(first[f][0, 0]) for f in cars.FIELDS[:4])
    assert ds["train"].boxes[0].tolist() == [x1 - 1, y1 - 1, x2, y2]
    assert ds["train"].boxes.dtype == np.int64 and ds["test"].paths[0].parent.name == "cars_test"


def test_crop_is_exactly_the_annotated_box(root):
    # the fixture paints the box red on green; the crop must hold every red pixel and no green one
    split = cars.read(root)["train"]
    ann = raw_annotations(root / "devkit" / "cars_train_annos.mat")[0]
    for i in range(len(split)):
        x1, y1, x2, y2 = (int(ann[i][f][0, 0]) for f in cars.FIELDS[:4])  # 1-based, last pixel inclusive
        crop = np.asarray(split.load(i, crop=True)).astype(int)
        assert crop.shape == (y2 - y1 + 1, x2 - x1 + 1, 3)
        for edge in (crop[0], crop[-1], crop[:, 0], crop[:, -1]):
            assert (edge[:, 0] > 150).all() and (edge[:, 1] < 80).all()
        full = np.asarray(split.load(i)).astype(int)
        red = (full[..., 0] > 150) & (full[..., 1] < 80)
        assert red.sum() == crop.shape[0] * crop.shape[1]  # nothing red is left outside the crop


def test_torchvision_nesting_is_accepted(tmp_path):
    cars.write_fixture(tmp_path / "stanford_cars")
    assert len(cars.read(tmp_path)["test"]) == 196


def test_check_image_sizes_names_a_box_past_the_edge(fresh):
    path = fresh / "devkit" / "cars_train_annos.mat"
    assert len(cars.read(fresh, check_image_sizes=True)["train"]) == 196
    edit(path, 4, bbox_x2=999)
    assert cars.read(fresh)["train"].boxes[4, 2] == 999  # only a lazy check would catch it
    with pytest.raises(DatasetError, match=r"00005\.jpg' is \d+x\d+ pixels but its box reaches x2=999"):
        cars.read(fresh, check_image_sizes=True)


@pytest.mark.parametrize("bad", [0, 197])
def test_class_outside_1_to_196_is_named_with_its_fname(fresh, bad):
    edit(fresh / "cars_test_annos_withlabels.mat", 2, **{"class": bad})
    with pytest.raises(
        DatasetError, match=rf"cars_test_annos_withlabels\.mat.*00003\.jpg has class {bad}, outside 1\.\.196"
    ):
        cars.read(fresh)


@pytest.mark.parametrize(
    "fields, shown",
    [({"bbox_x2": 0}, "x2=0"), ({"bbox_y1": 50, "bbox_y2": 40}, "y1=50, x2=\\d+, y2=40"), ({"bbox_x1": 0}, "x1=0")],
)
def test_inverted_or_outside_box_is_named(fresh, fields, shown):
    edit(fresh / "devkit" / "cars_train_annos.mat", 7, **fields)
    with pytest.raises(DatasetError, match=rf"cars_train_annos\.mat.*00008\.jpg has box .*{shown}"):
        cars.read(fresh)


def test_missing_image_is_named(fresh):
    (fresh / "cars_test" / "00006.jpg").unlink()
    with pytest.raises(DatasetError, match=r"cars_test/00006\.jpg.*cars_test_annos_withlabels\.mat.*1 of 196 missing"):
        cars.read(fresh)


@pytest.mark.parametrize(
    "name", ["devkit/cars_meta.mat", "devkit/cars_train_annos.mat", "cars_test_annos_withlabels.mat"]
)
def test_missing_devkit_file_is_named_with_the_layout(fresh, name):
    (fresh / name).unlink()
    with pytest.raises(DatasetError, match=rf"{name}.*Expected layout: ROOT/devkit/cars_meta\.mat"):
        cars.read(fresh)


def test_annotations_without_class_are_named(fresh):
    # a common mix-up: the devkit's label-free test annotations in place of cars_test_annos_withlabels.mat
    (fresh / "cars_test_annos_withlabels.mat").write_bytes((fresh / "devkit" / "cars_test_annos.mat").read_bytes())
    with pytest.raises(DatasetError, match=r"withlabels\.mat.*lack the field\(s\) \['class'\]"):
        cars.read(fresh)


def test_repeated_fname_and_wrong_class_count_are_named(fresh):
    edit(fresh / "devkit" / "cars_train_annos.mat", 3, fname="00001.jpg")
    with pytest.raises(DatasetError, match=r"cars_train_annos\.mat.*00001\.jpg is annotated 2 times"):
        cars.read(fresh)
    fresh2 = cars.write_fixture(fresh.parent / "again")
    names = np.empty((1, 195), dtype=object)
    names[0, :] = [f"car {i}" for i in range(195)]
    scipy.io.savemat(fresh2 / "devkit" / "cars_meta.mat", {"class_names": names})
    with pytest.raises(DatasetError, match=r"cars_meta\.mat.*195 entries; Stanford Cars has 196"):
        cars.read(fresh2)
