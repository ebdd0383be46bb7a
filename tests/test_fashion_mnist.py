"""Fashion-MNIST idx reading and writing, and the embedded subset."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from tresnet_nb.data import fashion_mnist as fm
from tresnet_nb.data.arrays import load_splits, stratified_head, to_tensor_images

DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, suffix):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([0, 3, 9, 1, 2], dtype=np.uint8)
    fm.write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images)
    fm.write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels)
    x, y = fm.read_split(tmp_path, "train")
    assert np.array_equal(x, images) and np.array_equal(y, labels)


def test_idx_header_is_big_endian_as_published(tmp_path):
    fm.write_idx(tmp_path / "l", np.array([7, 1], dtype=np.uint8))
    assert (tmp_path / "l").read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 2, 7, 1])


def test_bad_magic_and_truncation_are_reported(tmp_path):
    (tmp_path / "x").write_bytes(b"\x00\x00\x08\x01" + b"\x00\x00\x00\x02" + b"\x00")
    with pytest.raises(ValueError, match="holds 1 labels; its header promises 2"):
        fm.read_idx_labels(tmp_path / "x")
    (tmp_path / "y").write_bytes(b"\x00\x00\x08\x01" + bytes(16))
    with pytest.raises(ValueError, match="magic 0x00000801; an idx image file has 0x00000803"):
        fm.read_idx_images(tmp_path / "y")


def test_missing_files_name_where_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        fm.read_split(tmp_path, "train")


def test_embedded_subset_is_balanced_and_complete():
    for split, per_class in fm.EMBEDDED_PER_CLASS.items():
        images, labels = fm.read_split(None, split)
        assert images.shape == (10 * per_class, 28, 28) and images.dtype == np.uint8
        assert np.bincount(labels, minlength=10).tolist() == [per_class] * 10
        assert images.std() > 30  # real pictures, not blanks


@pytest.mark.skipif(
    not DEBIAN_ROOT.is_dir(), reason="apt-get install dataset-fashion-mnist to compare with the originals"
)
def test_embedded_subset_equals_the_documented_selection_of_the_originals():
    for split, per_class in fm.EMBEDDED_PER_CLASS.items():
        images, labels = fm.read_split(DEBIAN_ROOT, split)
        keep = fm.balanced_indices(labels, per_class)
        sub_images, sub_labels = fm.read_split(None, split)
        assert np.array_equal(images[keep], sub_images) and np.array_equal(labels[keep], sub_labels)


def test_embedded_files_are_gzip_idx():
    for path in sorted(fm.EMBEDDED_ROOT.glob("*-ubyte.gz")):
        with gzip.open(path) as f:
            assert f.read(4)[2] in (8,)  # idx: two zero bytes, type 0x08 (uint8)


def test_stratified_head_is_balanced():
    labels = np.repeat(np.arange(4), 10)
    keep = stratified_head(labels, 8, 4)
    assert np.bincount(labels[keep], minlength=4).tolist() == [2, 2, 2, 2]
    assert len(stratified_head(labels, None, 4)) == 40


def test_load_splits_caps_and_resizes():
    splits = load_splits("fashion_mnist", None, max_items=40)
    assert len(splits.train_y) == 40 and len(splits.valid_y) == 20
    assert splits.counts()["train"].tolist() == [4] * 10
    tensor = to_tensor_images(splits.train_x[:3], 64)
    assert tensor.shape == (3, 3, 64, 64) and tensor.dtype.is_floating_point is False
    assert (tensor[:, 0] == tensor[:, 2]).all()  # grey replicated to 3 channels


def test_a_regular_install_carries_the_embedded_subset_as_data_files():
    import tomllib

    from tresnet_nb.data import fashion_mnist as fm

    data_files = tomllib.loads((fm.CHECKOUT_ROOT.parents[1] / "pyproject.toml").read_text())["tool"]["setuptools"][
        "data-files"
    ]
    target = "share/tresnet-nb/data/fashion_mnist"
    assert data_files[target] == ["data/fashion_mnist/*"]
    assert fm.INSTALLED_ROOT.as_posix().endswith(target)  # where the reader looks when there is no checkout
    assert fm.EMBEDDED_ROOT == fm.CHECKOUT_ROOT  # in a checkout the repository's own copy wins
