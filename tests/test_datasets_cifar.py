"""CIFAR reader: the Python 2 pickle format, plane order, CIFAR-100 coarse labels, refused hostile pickles, named
errors, and the md5 check and safe unpacking of download() (on local tarballs: no network)."""

from __future__ import annotations

import builtins
import dataclasses
import io
import os
import pickle
import pickletools
import socket
import tarfile
import time

import numpy as np
import pytest

from tresnet_nb.data import cifar
from tresnet_nb.data.base import DatasetError
from tresnet_nb.data.download import md5_of, safe_extract
from tresnet_nb.data.py2pickle import write_py2_pickle
from tresnet_nb.runtime import host_reachable


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return cifar.write_fixture(tmp_path_factory.mktemp("cifar"))


@pytest.fixture
def fresh(tmp_path):
    """A fixture of one's own, to damage."""
    return cifar.write_fixture(tmp_path / "cifar")


def globals_in(path):
    return {arg for op, arg, _ in pickletools.genops(path.read_bytes()) if op.name in ("GLOBAL", "STACK_GLOBAL")}


def test_fixture_files_are_python2_protocol2_pickles(root):
    folder = root / "cifar-10-batches-py"
    expected = {"data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"}
    assert {p.name for p in folder.iterdir()} == expected | {"batches.meta"}
    assert {p.name for p in (root / "cifar-100-python").iterdir()} == {"train", "test", "meta"}
    raw = (folder / "data_batch_1").read_bytes()
    assert raw[:2] == b"\x80\x02"  # PROTO 2
    # exactly what Python 2's numpy wrote: the numpy.core spelling, and bytes as plain strings (no _codecs)
    assert globals_in(folder / "data_batch_1") == {
        "numpy.core.multiarray _reconstruct",
        "numpy ndarray",
        "numpy dtype",
    }
    with open(folder / "data_batch_1", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape[1] == 3072
    assert isinstance(batch[b"labels"], list) and isinstance(batch[b"labels"][0], int)
    with open(folder / "batches.meta", "rb") as f:
        meta = pickle.load(f, encoding="bytes")
    assert set(meta) == {b"label_names", b"num_cases_per_batch", b"num_vis"} and meta[b"num_vis"] == 3072
    with open(root / "cifar-100-python" / "train", "rb") as f:
        assert set(pickle.load(f, encoding="bytes")) >= {b"fine_labels", b"coarse_labels", b"data", b"filenames"}


def test_read_cifar10_counts_shapes_labels_names(root):
    ds = cifar.read(root, variant="cifar10")
    assert ds.class_names == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    train, test = ds["train"], ds["test"]
    assert set(ds.splits) == {"train", "test"} and len(train) == 30 and len(test) == 10
    assert train.images.shape == (30, 32, 32, 3) and train.images.dtype == np.uint8
    assert train.labels.dtype == np.int64 and np.bincount(train.labels).tolist() == [3] * 10
    assert sorted(test.labels.tolist()) == list(range(10))
    assert train.ids[0].endswith(".png") and len(set(train.ids + test.ids)) == 40
    assert ds.class_names[train.labels[5]] in train.ids[5]  # the fixture names files after their class


def test_pixels_round_trip_with_the_planes_in_order(root):
    image = cifar.read(root)["train"].images[0]
    # the known image has red = 8 * row, green = 8 * column, blue = 200; a wrong reshape mixes planes or axes
    assert image[0, 0].tolist() == [0, 0, 200]
    assert image[3, 5].tolist() == [24, 40, 200]
    assert image[31, 1].tolist() == [248, 8, 200]
    np.testing.assert_array_equal(image, cifar.known_image())
    assert cifar.read(root)["train"].load(0).getpixel((5, 3)) == (24, 40, 200)  # PIL takes (x, y)


def test_root_may_be_the_folder_itself(root):
    a, b = cifar.read(root), cifar.read(root / "cifar-10-batches-py")
    np.testing.assert_array_equal(a["test"].images, b["test"].images)
    assert cifar.read(root / "cifar-100-python", variant="cifar100").class_names[0] == "apple"


def test_read_cifar100_fine_and_coarse(root):
    ds = cifar.read(root, variant="cifar100")
    assert len(ds.class_names) == 100 and ds.class_names[:3] == ("apple", "aquarium_fish", "baby")
    assert len(ds["train"]) == 200 and len(ds["test"]) == 100
    assert np.bincount(ds["train"].labels, minlength=100).tolist() == [2] * 100
    names, train_coarse, test_coarse = cifar.coarse_labels(root)
    assert len(names) == 20 and names[0] == "aquatic_mammals" and names[-1] == "vehicles_2"
    assert train_coarse.shape == (200,) and test_coarse.shape == (100,) and train_coarse.dtype == np.int64
    coarse_of = dict(zip(ds["train"].labels.tolist(), train_coarse.tolist(), strict=True))
    assert names[coarse_of[ds.class_names.index("apple")]] == "fruit_and_vegetables"
    assert names[coarse_of[ds.class_names.index("whale")]] == "aquatic_mammals"
    np.testing.assert_array_equal(ds.meta["coarse_labels"]["test"], test_coarse)


def test_a_python3_protocol2_pickle_is_read_too(fresh):
    # numpy 2 writes numpy._core.multiarray and Python 3 writes bytes as _codecs.encode(text, 'latin1')
    path = fresh / "cifar-10-batches-py" / "test_batch"
    before = cifar.read(fresh)["test"]
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    path.write_bytes(pickle.dumps(batch, protocol=2))
    assert {"_codecs encode", "numpy._core.multiarray _reconstruct"} <= globals_in(path)
    after = cifar.read(fresh)["test"]
    np.testing.assert_array_equal(before.images, after.images)
    assert before.ids == after.ids and before.labels.tolist() == after.labels.tolist()


class Payload:
    """Unpickles as ``func(arg)``: what a hostile pickle does."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def hostile_batch(path, func, arg):
    """Rewrite the batch at ``path`` with a payload that calls ``func(arg)`` when unpickled."""
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    batch[b"batch_label"] = Payload(func, arg)
    path.write_bytes(pickle.dumps(batch, protocol=2))


@pytest.mark.parametrize("func", ["mkdir", "system", "exec"])
def test_a_hostile_pickle_is_refused_and_never_runs(fresh, tmp_path, func):
    marker = tmp_path / "payload-ran"
    target, arg = {
        "mkdir": (os.mkdir, str(marker)),
        "system": (os.system, f"touch {marker}"),
        "exec": (builtins.exec, f"open({str(marker)!r}, 'w').close()"),
    }[func]
    path = fresh / "cifar-10-batches-py" / "data_batch_3"
    hostile_batch(path, target, arg)
    with pytest.raises(DatasetError) as err:
        cifar.read(fresh)
    message = str(err.value)
    assert "data_batch_3" in message and "refused" in message and "not executed" in message
    # the refused global as the file spells it: posix.mkdir, posix.system, __builtin__.exec (protocol 2 names)
    (refused,) = [g for g in globals_in(path) if g.endswith(f" {func}")]
    assert refused.replace(" ", ".") in message
    assert not marker.exists()


def test_control_plain_pickle_would_run_the_payload(fresh, tmp_path):
    marker = tmp_path / "payload-ran"
    path = fresh / "cifar-10-batches-py" / "data_batch_3"
    hostile_batch(path, os.mkdir, str(marker))
    with open(path, "rb") as f:
        pickle.load(f, encoding="bytes")  # what an unrestricted reader does
    assert marker.is_dir()


def test_codecs_encode_is_limited_to_latin1(fresh):
    path = fresh / "cifar-10-batches-py" / "batches.meta"
    # _codecs.encode('x', 'rot13') is allowed by name but not with another codec
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R.")
    with pytest.raises(DatasetError, match=r"batches\.meta.*rot13"):
        cifar.read(fresh)


def test_missing_root_batch_and_meta_are_named(fresh, tmp_path):
    with pytest.raises(DatasetError, match=r"nowhere.*cifar-10-batches-py.*Expected layout"):
        cifar.read(tmp_path / "nowhere")
    (fresh / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DatasetError, match=r"not found: .*data_batch_4"):
        cifar.read(fresh)
    (fresh / "cifar-100-python" / "meta").unlink()
    with pytest.raises(DatasetError, match=r"cifar-100-python"):
        cifar.read(fresh, variant="cifar100")


def rewrite(path, change):
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    change(batch)
    write_py2_pickle(path, batch)


def test_truncated_data_is_named(fresh):
    path = fresh / "cifar-10-batches-py" / "data_batch_2"
    rewrite(path, lambda b: b.update({b"data": b[b"data"][:-1]}))
    with pytest.raises(DatasetError, match=r"data_batch_2.* 5 image rows but 6 b'labels'.*truncated"):
        cifar.read(fresh)


def test_cut_off_file_is_named(fresh):
    path = fresh / "cifar-10-batches-py" / "data_batch_5"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DatasetError, match=r"data_batch_5.*not a readable CIFAR pickle"):
        cifar.read(fresh)


def test_wrong_data_shape_and_missing_key_are_named(fresh):
    path = fresh / "cifar-10-batches-py" / "test_batch"
    rewrite(path, lambda b: b.update({b"data": b[b"data"][:, :1024]}))
    with pytest.raises(DatasetError, match=r"test_batch.*\(10, 1024\).*\(N, 3072\)"):
        cifar.read(fresh)
    rewrite(path, lambda b: b.pop(b"data"))
    with pytest.raises(DatasetError, match=r"test_batch.*no b'data' entry"):
        cifar.read(fresh)


def test_label_out_of_range_is_named_with_its_file_and_item(fresh):
    path = fresh / "cifar-100-python" / "test"
    rewrite(path, lambda b: b[b"coarse_labels"].__setitem__(7, 20))
    with open(path, "rb") as f:
        name = pickle.load(f, encoding="bytes")[b"filenames"][7].decode()
    with pytest.raises(DatasetError, match=rf"test' b'coarse_labels': item '{name}' has label 20, outside 0\.\.19"):
        cifar.read(fresh, variant="cifar100")


def test_unknown_variant_lists_the_choices(root):
    with pytest.raises(ValueError, match=r"'cifar1000'.*\['cifar10', 'cifar100'\]"):
        cifar.read(root, variant="cifar1000")


# ---- download: tests build local tarballs; nothing here touches the network ---------------------------------


@pytest.fixture
def tarball(tmp_path):
    """A cifar-10-python.tar.gz of the fixture, laid out as the official one (one top-level folder)."""
    src = cifar.write_fixture(tmp_path / "src", variants=("cifar10",))
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return path


def test_download_refuses_an_archive_whose_md5_differs(tarball, tmp_path):
    dest = tmp_path / "dest"
    with pytest.raises(DatasetError) as err:
        cifar.download(dest, archive=tarball)
    message = str(err.value)
    assert tarball.name in message and cifar.VARIANTS["cifar10"].md5 in message and md5_of(tarball) in message
    assert not (dest / "cifar-10-batches-py").exists()


def test_download_unpacks_an_archive_with_the_right_md5(tarball, tmp_path, monkeypatch):
    official = cifar.VARIANTS["cifar10"]
    monkeypatch.setitem(cifar.VARIANTS, "cifar10", dataclasses.replace(official, md5=md5_of(tarball)))
    folder = cifar.download(tmp_path / "dest", archive=tarball)
    assert folder == tmp_path / "dest" / "cifar-10-batches-py"
    np.testing.assert_array_equal(cifar.read(tmp_path / "dest")["train"].images[0], cifar.known_image())
    assert cifar.download(tmp_path / "dest") == folder  # already there: no fetch


def evil_tar(path, name, kind):
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(name)
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    return path


@pytest.mark.parametrize(
    "name, kind, why",
    [
        ("../escaped.txt", "file", "outside"),
        ("ABS", "file", "outside"),
        ("cifar-10-batches-py/link", "symlink", "link"),
    ],
)
def test_safe_extract_refuses_escaping_members(tmp_path, name, kind, why):
    if name == "ABS":
        name = str(tmp_path / "absolute.txt")
    archive = evil_tar(tmp_path / "evil.tar", name, kind)
    dest = tmp_path / "dest"
    with pytest.raises(DatasetError, match=rf"evil\.tar.*refused.*{name.lstrip('/')}.*{why}"):
        safe_extract(archive, dest)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "absolute.txt").exists()
    assert not dest.exists()


def test_download_fails_fast_when_the_host_is_unreachable(tmp_path, monkeypatch):
    url = "http://127.0.0.1:9/cifar-10-python.tar.gz"  # loopback port 9: refused at once, no traffic leaves
    monkeypatch.setitem(cifar.VARIANTS, "cifar10", dataclasses.replace(cifar.VARIANTS["cifar10"], url=url))
    start = time.monotonic()
    with pytest.raises(DatasetError) as err:
        cifar.download(tmp_path)
    assert time.monotonic() - start < 2
    assert url in str(err.value) and "cifar-10-batches-py" in str(err.value)


def test_reachability_check_keeps_its_budget_when_connect_hangs(monkeypatch):
    def hang(*args, **kwargs):
        time.sleep(2)
        raise OSError("timed out")

    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.monotonic()
    assert host_reachable("https://www.cs.toronto.edu/x", budget_s=0.3) is False
    assert time.monotonic() - start < 1
