"""Screening results remembered per file (path, size, modification time): unchanged images are not decoded again,
changed ones are, ``recheck`` and ``data verify --recheck`` decode all, and a cache that cannot be used costs time only."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from tresnet_nb.__main__ import main
from tresnet_nb.data import get_dataset, screened, verify
from tresnet_nb.data.base import Split
from tresnet_nb.data.fixtures import write_image


def image_split(root: Path, n: int, truncated: tuple[int, ...] = ()) -> Split:
    """``n`` small JPEGs under ``root``, those at ``truncated`` cut to half their bytes."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = root / f"img_{i}.jpg"
        write_image(path, (40 + i % 200, 90, 160), rng, (24, 20))
        if i in truncated:
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
        paths.append(path)
    return Split(ids=tuple(p.name for p in paths), labels=None, paths=tuple(paths))


@pytest.fixture
def counted(monkeypatch, tmp_path):
    """The screening cache in a fresh folder, and the paths ``image_problem`` decodes, in order."""
    monkeypatch.setenv("TRESNET_NB_CACHE", str(tmp_path / "cache"))
    seen: list[Path] = []
    real = verify.image_problem

    def counting(path: Path) -> str | None:
        seen.append(Path(path))
        return real(path)

    monkeypatch.setattr(verify, "image_problem", counting)
    return seen


def test_a_second_screening_decodes_nothing_and_finds_the_same_problems(tmp_path, counted, capsys):
    split = image_split(tmp_path / "imgs", 12, truncated=(3,))
    first = verify.bad_images(split, workers=1, label="train")
    assert [i for i, _ in first] == [3] and "img_3.jpg" in first[0][1] and len(counted) == 12
    counted.clear()
    capsys.readouterr()
    second = verify.bad_images(split, workers=1, label="train")
    assert second == first and counted == []  # the truncated file's finding comes from the cache too
    assert "train: 12 of 12 images unchanged since they were checked, skipped; 0 checked now" in capsys.readouterr().out


def test_a_changed_file_is_checked_again_and_a_repaired_one_is_fine(tmp_path, counted):
    split = image_split(tmp_path / "imgs", 8, truncated=(5,))
    verify.bad_images(split, workers=1)
    good = split.paths[1]
    write_image(good, (250, 10, 10), np.random.default_rng(1), (30, 20))  # another picture at the same path
    repaired = image_split(tmp_path / "fresh", 6).paths[5]
    os.replace(repaired, split.paths[5])  # the truncated file replaced by a whole one
    counted.clear()
    assert verify.bad_images(split, workers=1) == []
    assert sorted(counted) == sorted([good, split.paths[5]])


def test_a_touched_file_is_checked_again(tmp_path, counted):
    split = image_split(tmp_path / "imgs", 4)
    verify.bad_images(split, workers=1)
    stat = split.paths[2].stat()
    os.utime(split.paths[2], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    counted.clear()
    verify.bad_images(split, workers=1)
    assert counted == [split.paths[2]]


def test_recheck_decodes_every_file(tmp_path, counted):
    split = image_split(tmp_path / "imgs", 5, truncated=(0,))
    verify.bad_images(split, workers=1)
    counted.clear()
    found = verify.bad_images(split, workers=1, recheck=True)
    assert [i for i, _ in found] == [0] and len(counted) == 5


def test_worker_processes_fill_the_same_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRESNET_NB_CACHE", str(tmp_path / "cache"))
    split = image_split(tmp_path / "imgs", 80, truncated=(7, 70))
    in_pool = verify.bad_images(split, workers=2)
    assert [i for i, _ in in_pool] == [7, 70]
    with sqlite3.connect(screened.screen_db()) as con:
        rows = dict(con.execute("SELECT path, problem FROM screened").fetchall())
    assert set(rows) == {os.path.abspath(p) for p in split.paths}
    assert {Path(p).name for p, problem in rows.items() if problem} == {"img_7.jpg", "img_70.jpg"}
    assert verify.bad_images(split, workers=1) == in_pool


def test_a_missing_file_is_reported_every_time_and_never_remembered(tmp_path, counted):
    split = image_split(tmp_path / "imgs", 3)
    split.paths[1].unlink()
    verify.bad_images(split, workers=1)
    for _ in range(2):
        counted.clear()
        found = verify.bad_images(split, workers=1)
        assert [i for i, _ in found] == [1] and "file not found" in found[0][1] and counted == [split.paths[1]]


def test_a_cache_that_cannot_be_written_costs_time_not_the_check(tmp_path, monkeypatch):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("TRESNET_NB_CACHE", str(blocker))
    split = image_split(tmp_path / "imgs", 4, truncated=(2,))
    with pytest.warns(UserWarning, match=r"screening cache .* cannot be used.*TRESNET_NB_CACHE"):
        found = verify.bad_images(split, workers=1)
    assert [i for i, _ in found] == [2]


def test_data_verify_skips_what_it_checked_and_recheck_decodes_all(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TRESNET_NB_CACHE", str(tmp_path / "cache"))
    root = get_dataset("folder").write_fixture(tmp_path / "data")
    ds = get_dataset("folder").read(root)
    sizes = {name: len(split) for name, split in ds.splits.items()}
    assert main(["data", "verify", "folder", "--root", str(root)]) == 0
    assert "unchanged since they were checked" not in capsys.readouterr().out
    assert main(["data", "verify", "folder", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    for name, n in sizes.items():
        assert f"{name}: {n} of {n} images unchanged since they were checked, skipped; 0 checked now" in out
    assert main(["data", "verify", "folder", "--root", str(root), "--recheck"]) == 0
    out = capsys.readouterr().out
    assert "unchanged since they were checked" not in out and "OK" in out
