"""Flowers-102 reader: the .mat files, 1-based image numbers and labels, train_on_trainval, named errors, and the
md5 check and safe unpacking of download() on local files (no network)."""

from __future__ import annotations

import tarfile
import time

import numpy as np
import pytest
import scipy.io

from tresnet_nb.data import flowers102 as flowers
from tresnet_nb.data.base import DatasetError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return flowers.write_fixture(tmp_path_factory.mktemp("flowers"))


@pytest.fixture
def fresh(tmp_path):
    return flowers.write_fixture(tmp_path / "flowers")


def mat(path, name):
    return scipy.io.loadmat(path)[name]


def save(path, **variables):
    scipy.io.savemat(path, {k: np.asarray([v], dtype=np.float64) for k, v in variables.items()})


def test_class_names_are_the_102_standard_ones():
    names = flowers.CLASS_NAMES
    assert len(names) == 102 and len(set(names)) == 102
    assert names[:3] == ("pink primrose", "hard-leaved pocket orchid", "canterbury bells")
    assert names[50] == "petunia" and names[-1] == "blackberry lily"
    assert all(n == n.strip() for n in names)


def test_fixture_is_in_the_official_format(root):
    assert dict((n, (s, t)) for n, s, t in scipy.io.whosmat(root / "setid.mat")) == {
        "trnid": ((1, 102), "double"),
        "valid": ((1, 102), "double"),
        "tstid": ((1, 204), "double"),
    }
    assert scipy.io.whosmat(root / "imagelabels.mat") == [("labels", (1, 408), "double")]
    jpgs = sorted(p.name for p in (root / "jpg").iterdir())
    assert jpgs[0] == "image_00001.jpg" and jpgs[-1] == "image_00408.jpg" and len(jpgs) == 408
    assert (root / "jpg" / "image_00001.jpg").read_bytes()[:2] == b"\xff\xd8"


def test_read_splits_labels_and_ids(root):
    ds = flowers.read(root)
    assert ds.class_names == flowers.CLASS_NAMES and set(ds.splits) == {"train", "valid", "test"}
    assert {s: len(ds[s]) for s in ds.splits} == {"train": 102, "valid": 102, "test": 204}
    labels = mat(root / "imagelabels.mat", "labels")[0]
    for split, var in flowers.SPLIT_VARIABLES.items():
        numbers = mat(root / "setid.mat", var)[0].astype(int)
        assert ds[split].ids == tuple(f"image_{n:05d}" for n in numbers)
        assert ds[split].paths[0].name == f"image_{numbers[0]:05d}.jpg"
        # 1-based label of image n is labels[n - 1]; the reader gives it 0-based
        assert ds[split].labels.tolist() == (labels[numbers - 1] - 1).astype(int).tolist()
    assert sorted(set(ds["train"].labels.tolist())) == list(range(102))  # every class, for verify()
    assert ds.class_names[101] == "blackberry lily"
    assert ds["train"].load(0).size == (24, 20)


def test_train_on_trainval_merges_valid_into_train(root):
    plain, merged = flowers.read(root), flowers.read(root, train_on_trainval=True)
    assert set(merged.splits) == {"train", "test"}
    assert merged["train"].ids == plain["train"].ids + plain["valid"].ids
    assert merged["test"].ids == plain["test"].ids
    assert any("trnid + valid" in note for note in merged.notes)


def test_missing_jpg_is_named(fresh):
    number = int(mat(fresh / "setid.mat", "tstid")[0][3])
    (fresh / "jpg" / f"image_{number:05d}.jpg").unlink()
    with pytest.raises(DatasetError, match=rf"image_{number:05d}\.jpg.*1 of 204"):
        flowers.read(fresh)


@pytest.mark.parametrize("name", ["imagelabels.mat", "setid.mat", "jpg"])
def test_missing_file_is_named_with_the_layout(fresh, name):
    target = fresh / name
    if target.is_dir():
        for p in target.iterdir():
            p.unlink()
        target.rmdir()
    else:
        target.unlink()
    with pytest.raises(DatasetError, match=rf"{name}.*Expected layout"):
        flowers.read(fresh)


@pytest.mark.parametrize("bad", [0, 103])
def test_label_outside_1_to_102_is_named_with_the_image(fresh, bad):
    labels = mat(fresh / "imagelabels.mat", "labels")[0]
    labels[6] = bad
    save(fresh / "imagelabels.mat", labels=labels)
    with pytest.raises(
        DatasetError, match=rf"imagelabels\.mat.*image 7 \(image_00007\.jpg\) has label {bad}, outside 1\.\.102"
    ):
        flowers.read(fresh)


def test_image_number_out_of_range_is_named(fresh):
    sets = {v: mat(fresh / "setid.mat", v)[0] for v in ("trnid", "valid", "tstid")}
    sets["valid"][2] = 409
    save(fresh / "setid.mat", **sets)
    with pytest.raises(DatasetError, match=r"setid\.mat.*valid lists image number 409, outside 1\.\.408"):
        flowers.read(fresh)


def test_image_in_two_splits_is_named(fresh):
    sets = {v: mat(fresh / "setid.mat", v)[0] for v in ("trnid", "valid", "tstid")}
    twice = int(sets["trnid"][1])
    sets["tstid"][0] = twice
    save(fresh / "setid.mat", **sets)
    with pytest.raises(
        DatasetError, match=rf"image {twice} \(image_{twice:05d}\.jpg\) is listed in trnid and in tstid"
    ):
        flowers.read(fresh)


def test_fractional_image_number_and_missing_variable_are_named(fresh):
    sets = {v: mat(fresh / "setid.mat", v)[0] for v in ("trnid", "valid", "tstid")}
    sets["trnid"][0] = 2.5
    save(fresh / "setid.mat", **sets)
    with pytest.raises(DatasetError, match=r"trnid\[0\] = 2\.5 is not a whole number"):
        flowers.read(fresh)
    save(fresh / "setid.mat", trnid=sets["trnid"], valid=sets["valid"])
    with pytest.raises(
        DatasetError, match=r"setid\.mat.*lacks the variable\(s\) \['tstid'\].*found \['trnid', 'valid'\]"
    ):
        flowers.read(fresh)


def test_unreadable_mat_is_named(fresh):
    (fresh / "setid.mat").write_bytes(b"not a MATLAB file at all")
    with pytest.raises(DatasetError, match=r"setid\.mat.*not a readable MATLAB file"):
        flowers.read(fresh)


# ---- download: local files only ----------------------------------------------------------------------------


@pytest.fixture
def source(tmp_path):
    """A folder with 102flowers.tgz (jpg/ inside, as officially), imagelabels.mat and setid.mat."""
    data = flowers.write_fixture(tmp_path / "data")
    src = tmp_path / "source"
    src.mkdir()
    with tarfile.open(src / "102flowers.tgz", "w:gz") as tar:
        tar.add(data / "jpg", arcname="jpg")
    for name in ("imagelabels.mat", "setid.mat"):
        (src / name).write_bytes((data / name).read_bytes())
    return src


def test_download_refuses_files_whose_md5_differs(source, tmp_path):
    dest = tmp_path / "dest"
    with pytest.raises(DatasetError) as err:
        flowers.download(dest, source=source)
    message = str(err.value)
    assert "102flowers.tgz" in message and flowers.FILES["102flowers.tgz"] in message and "not unpacked" in message
    assert not (dest / "jpg").exists()


def test_download_installs_verified_files(source, tmp_path, monkeypatch):
    from tresnet_nb.data.download import md5_of

    monkeypatch.setattr(flowers, "FILES", {name: md5_of(source / name) for name in flowers.FILES})
    root = flowers.download(tmp_path / "dest", source=source)
    assert flowers.read(root).splits.keys() == {"train", "valid", "test"}


def test_download_fails_fast_when_the_host_is_unreachable(tmp_path, monkeypatch):
    monkeypatch.setattr(flowers, "PAGE", "http://127.0.0.1:9/flowers/")  # refused at once; nothing leaves the host
    start = time.monotonic()
    with pytest.raises(DatasetError) as err:
        flowers.download(tmp_path)
    assert time.monotonic() - start < 2
    assert "http://127.0.0.1:9/flowers/102flowers.tgz" in str(err.value) and "imagelabels.mat" in str(err.value)
