"""The dataset table, verification, bad-image screening, the resize-once cache and the CLI, over every format."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tresnet_nb.__main__ import main
from tresnet_nb.data import DATASETS, DatasetError, Split, get_dataset
from tresnet_nb.data.highres import cache_split, decode_resized, file_dls
from tresnet_nb.data.verify import screen_images, verify


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_dataset_reads_and_verifies_its_fixture(tmp_path, name):
    spec = get_dataset(name)
    root = spec.write_fixture(tmp_path / name, seed=0)
    ds = spec.read(root)
    assert spec.eval_split in ds.splits and "train" in ds.splits
    assert ds.task == spec.task
    n = len(ds.class_names)
    for split in ds.splits.values():
        if split.labels is not None and ds.task == "single-label":
            assert split.labels.dtype == np.int64 and split.labels.min() >= 0 and split.labels.max() < n
        if split.labels is not None and ds.task == "multi-label":
            assert split.labels.shape == (len(split), n) and set(np.unique(split.labels)) <= {0.0, 1.0}
    assert len(ds["train"]) > 0 and len(ds[spec.eval_split]) > 0
    report = verify(name, root)
    assert report.ok, report.text()
    assert sum(report.counts["train"].values()) >= len(ds["train"])
    img = ds["train"].load(0)
    assert img.mode == "RGB" and min(img.size) > 0


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_missing_root_is_named_with_the_layout(tmp_path, name):
    report = verify(name, tmp_path / "absent")
    assert not report.ok and "absent" in report.problems[0]


def write_images(folder, n=4, size=(96, 64)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"img_{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def image_split(paths, boxes=None):
    return Split(ids=tuple(p.stem for p in paths), labels=np.arange(len(paths)) % 2, paths=tuple(paths), boxes=boxes)


def break_images(paths):
    """Truncate the second image and overwrite the third with garbage."""
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) // 2])
    paths[2].write_bytes(b"this is not an image")


def test_verify_names_truncated_and_corrupt_images(tmp_path):
    root = get_dataset("folder").write_fixture(tmp_path / "f")
    ds = get_dataset("folder").read(root)
    paths = list(ds["train"].paths)
    break_images(paths)
    report = verify("folder", root)
    assert not report.ok
    text = "\n".join(report.problems)
    assert str(paths[1]) in text and "truncated" in text
    assert str(paths[2]) in text and "cannot identify image" in text


def test_screen_images_error_names_each_bad_file_and_skip_lists_them(tmp_path):
    paths = write_images(tmp_path / "imgs", n=5)
    break_images(paths)
    split = image_split(paths)
    with pytest.raises(DatasetError) as err:
        screen_images(split, "error", label="train")
    assert "img_1" in str(err.value) and "img_2" in str(err.value) and "on_bad_image='skip'" in str(err.value)
    log = tmp_path / "run" / "skipped_images.txt"
    kept = screen_images(split, "skip", log=log)
    assert kept.ids == ("img_0", "img_3", "img_4")
    assert log.read_text().count("\n") == 2 and "img_1" in log.read_text()
    with pytest.raises(ValueError, match="Unknown on_bad_image 'ignore'"):
        screen_images(split, "ignore")


def test_cache_resizes_once_and_is_reused(tmp_path):
    paths = write_images(tmp_path / "imgs", n=3, size=(300, 200))
    cached = cache_split(image_split(paths), 64, tmp_path / "cache", workers=1)
    assert all(Image.open(p).size == (64, 64) for p in cached.paths)
    assert cached.ids == tuple(p.stem for p in paths) and np.array_equal(cached.labels, [0, 1, 0])
    stamps = [os.stat(p).st_mtime_ns for p in cached.paths]
    again = cache_split(image_split(paths), 64, tmp_path / "cache", workers=1)
    assert again.paths == cached.paths and [os.stat(p).st_mtime_ns for p in again.paths] == stamps
    other = cache_split(image_split(paths), 96, tmp_path / "cache", workers=1)
    assert set(other.paths).isdisjoint(cached.paths)
    # the cached pixels are the directly resized ones, up to JPEG re-encoding
    direct = np.asarray(decode_resized(paths[0], 64, draft=False), dtype=float)
    assert np.abs(np.asarray(Image.open(cached.paths[0]), dtype=float) - direct).mean() < 12


def test_progress_in_a_log_is_a_line_per_tenth_not_a_redrawn_bar(capsys):
    from tresnet_nb.runtime import progress

    assert list(progress(iter(range(40)), True, total=40)) == list(range(40))  # captured stdout: not a terminal
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0].strip() for line in lines] == [f"{4 * k}/40 ({10 * k}%)" for k in range(1, 11)]
    assert list(progress(iter(range(3)), True)) == [0, 1, 2]  # the total unknown: one line at the end
    assert capsys.readouterr().out.strip().startswith("3 done")
    assert list(progress(range(3), False)) == [0, 1, 2] and capsys.readouterr().out == ""


def test_cache_crops_to_boxes(tmp_path):
    path = tmp_path / "two_halves.png"
    pixels = np.zeros((100, 200, 3), dtype=np.uint8)
    pixels[:, 100:] = 255
    Image.fromarray(pixels).save(path)
    split = image_split([path], boxes=np.array([[100, 0, 200, 100]]))
    cached = cache_split(split, 32, tmp_path / "cache", crop=True, workers=1)
    assert np.asarray(Image.open(cached.paths[0])).mean() > 250  # only the white half


def test_cache_names_undecodable_images(tmp_path):
    paths = write_images(tmp_path / "imgs", n=4)
    break_images(paths)
    with pytest.raises(DatasetError, match="img_2.jpg"):
        cache_split(image_split(paths), 32, tmp_path / "cache", workers=1)


def test_file_dls_deliver_batches_at_the_run_size(tmp_path):
    import torch

    paths = write_images(tmp_path / "imgs", n=6, size=(120, 80))
    split = cache_split(image_split(paths), 64, tmp_path / "cache", workers=1)
    cfg = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
    dls = file_dls(split, split, 64, 4, cfg, torch.device("cpu"), num_workers=0)
    x, y = dls.valid.one_batch()
    assert x.shape == (6, 3, 64, 64) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y.tolist() == [0, 1, 0, 1, 0, 1]


def test_cli_fixtures_verify_and_get(tmp_path, capsys):
    assert main(["data", "fixtures", "flowers102", "--root", str(tmp_path / "fl")]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["data", "verify", "flowers102", "--root", str(tmp_path / "fl"), "--recheck"]) == 0
    # every image decoded again, too few for a progress bar: none of a bar's block characters or carriage returns
    printed = capsys.readouterr().out
    assert printed.startswith("flowers102 at ") and "\r" not in printed and "\u2588" not in printed, printed[:80]
    assert main(["data", "verify", "flowers102", "--root", str(tmp_path / "nothing")]) == 1
    assert "nothing" in capsys.readouterr().out
    assert main(["data", "get", "stanford_cars", "--root", str(tmp_path / "cars")]) == 1
    assert "Expected layout" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["folder", "plant_pathology", "stanford_cars"])
def test_prepare_file_dls_end_to_end_on_fixtures(tmp_path, name):
    import torch

    from tresnet_nb.data.highres import prepare_file_dls

    spec = get_dataset(name)
    ds = spec.read(spec.write_fixture(tmp_path / name))
    cfg = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
    dls = prepare_file_dls(
        ds, spec.eval_split, 32, 4, cfg, torch.device("cpu"), tmp_path / "run", cache_dir=tmp_path / "c"
    )
    x, y = dls.train.one_batch()
    assert x.shape[1:] == (3, 32, 32) and len(y) == len(x)
    assert (y.ndim == 2) == (ds.task == "multi-label")


def test_verify_reports_empty_classes_by_name(tmp_path):
    import json

    root = get_dataset("herbarium2020").write_fixture(tmp_path / "h")
    meta_path = root / "nybg2020" / "train" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["categories"].append({"id": 30000, "name": "Nemo", "family": "F", "genus": "G"})
    meta_path.write_text(json.dumps(meta))
    report = verify("herbarium2020", root)
    assert not report.ok and any("classes have no images: ['Nemo']" in p for p in report.problems)


def test_verify_reports_a_hostile_pickle_without_running_it(tmp_path):
    import pickle

    root = get_dataset("cifar10").write_fixture(tmp_path / "c")
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    batch = root / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(pickle.dumps({b"data": Payload()}, protocol=2))
    report = verify("cifar10", root)
    assert not report.ok and "data_batch_3" in report.problems[0] and "mkdir" in report.problems[0]
    assert not marker.exists()


def test_balanced_sampling_evens_out_a_long_tail():
    from tresnet_nb.data.highres import balanced_indices

    labels = np.array([0] * 90 + [1] * 9 + [2] * 1)
    draw = balanced_indices(labels, seed=0)
    counts = np.bincount(labels[np.concatenate([draw() for _ in range(30)])], minlength=3)
    assert counts.sum() == 3000 and np.all(np.abs(counts / 3000 - 1 / 3) < 0.05), counts
    assert np.bincount(labels)[0] / len(labels) == 0.9  # the unbalanced source it started from
    with pytest.raises(ValueError, match="single-label"):
        balanced_indices(np.zeros((4, 2)), 0)


def test_file_dls_balanced_loader_draws_every_class(tmp_path):
    import torch

    paths = write_images(tmp_path / "imgs", n=12, size=(40, 40))
    split = Split(ids=tuple(p.stem for p in paths), labels=np.array([0] * 11 + [1]), paths=tuple(paths))
    cfg = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
    dls = file_dls(split, split, 32, 12, cfg, torch.device("cpu"), num_workers=0, balanced=True, seed=1)
    ys = torch.cat([y for _, y in dls.train] + [y for _ in range(3) for _, y in dls.train])
    assert 0.25 < ys.float().mean() < 0.75  # class 1 is 1 of 12 items but about half of the draws


@pytest.mark.parametrize(
    ("cpus", "local", "device", "workers", "pinned"),
    [
        (16, "1", "cuda", 15, True),  # a GPU box: every core of this process's share but one feeds the GPU
        (16, "4", "cuda", 3, True),  # four ranks on the machine share its cores
        (2, "1", "cuda", 1, True),
        (16, "1", "cpu", 2, False),  # on a CPU the training threads need the cores
        (1, "1", "cpu", 1, False),
    ],
)
def test_loaders_take_workers_from_the_cpus_this_process_may_use(
    tmp_path, monkeypatch, cpus, local, device, workers, pinned
):
    import torch

    from tresnet_nb import runtime
    from tresnet_nb.data.highres import predict_dl

    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: set(range(cpus)))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", local)
    paths = write_images(tmp_path / "imgs", n=4, size=(40, 30))
    split = cache_split(image_split(paths), 32, tmp_path / "cache", workers=1)
    cfg = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
    dls = file_dls(split, split, 32, 2, cfg, torch.device(device))  # built only: nothing is moved to the device
    dl = predict_dl(split, 32, 2, cfg, torch.device(device), cache_dir=tmp_path / "cache")
    for loader in (dls.train, dls.valid, dl):
        assert (loader.fake_l.num_workers, loader.fake_l.pin_memory) == (workers, pinned)
    assert file_dls(split, split, 32, 2, cfg, torch.device(device), num_workers=0).train.fake_l.num_workers == 0


def test_cache_keys_are_the_resolved_paths_keys_with_one_lstat_per_file(tmp_path, monkeypatch):
    import hashlib

    from tresnet_nb.data.highres import cache_key

    def resolved_key(path, size, box):  # the key as it was: a full resolve() per file
        st = path.stat()
        return hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{size}|{box}".encode()).hexdigest()

    (real := tmp_path / "real").mkdir()
    plain = write_images(real, n=2)[0]
    (tmp_path / "linked_dir").symlink_to(real)
    (tmp_path / "linked_file.jpg").symlink_to(plain)
    monkeypatch.chdir(tmp_path)
    cases = [plain, tmp_path / "linked_dir" / plain.name, tmp_path / "linked_file.jpg", Path("real") / plain.name]
    dirs: dict = {}
    for path in cases:
        expected = resolved_key(path, 64, None)
        assert cache_key(path, 64, None) == cache_key(path, 64, None, dirs) == expected, path
    assert cache_key(plain, 64, (1, 2, 3, 4), dirs) != cache_key(plain, 64, None, dirs)  # the box is in the key


def test_stratified_holdout_draws_what_the_per_class_scan_drew():
    from tresnet_nb.data.base import stratified_holdout

    def scanned(keys, fraction, seed):  # the former loop: one scan of every label per class
        rng, held = np.random.default_rng(seed), []
        for key in np.unique(keys):
            members = np.flatnonzero(keys == key)
            if len(members) >= 2:
                held.extend(rng.choice(members, size=max(1, int(round(fraction * len(members)))), replace=False))
        held = np.sort(np.array(held, dtype=np.int64))
        return np.setdiff1d(np.arange(len(keys)), held), held

    labels = np.random.default_rng(3).zipf(1.5, 5000) % 400  # long-tailed, with singletons
    for fraction, seed in ((0.1, 0), (0.25, 7)):
        for got, want in zip(stratified_holdout(labels, fraction, seed), scanned(labels, fraction, seed), strict=True):
            assert np.array_equal(got, want)


def test_the_cache_keeps_jpeg_for_scaled_down_training_images_only(tmp_path):
    # JPEG copies only where decoding them pays (a large photo scaled down for training); an image scaled up, and
    # every evaluation copy, are stored losslessly, so that they decode to exactly what decode_resized gives
    rng = np.random.default_rng(0)
    big, small = tmp_path / "big.png", tmp_path / "small.png"
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(big)
    Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(small)
    split = Split(ids=("big", "small"), labels=np.array([0, 1]), paths=(big, small))
    train = cache_split(split, 64, tmp_path / "cache")
    valid = cache_split(split, 64, tmp_path / "cache", lossless=True)
    formats = [[Image.open(p).format for p in s.paths] for s in (train, valid)]
    assert formats == [["JPEG", "PNG"], ["PNG", "PNG"]]
    for cached, source in zip(valid.paths, split.paths, strict=True):
        assert np.array_equal(np.asarray(Image.open(cached).convert("RGB")), np.asarray(decode_resized(source, 64)))
    assert np.array_equal(np.asarray(Image.open(train.paths[1]).convert("RGB")), np.asarray(decode_resized(small, 64)))
