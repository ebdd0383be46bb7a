"""Screening results remembered per file, so that an image is decoded to check it once, not on every run.

What checking an image found (nothing, or why it cannot be used) is kept with the file's absolute path, size and
modification time in one SQLite file in the cache folder (``$TRESNET_NB_CACHE``). A rerun, the next phase of a
progressive plan and every process of a data-parallel job then skip each image that was checked and has not changed
since; a file whose size or modification time differs is checked again, and ``recheck`` checks every file (``data
verify --recheck``). SQLite's write-ahead log lets the processes of a job read and write the file at once.

A cache that cannot be opened or written (a read-only home, a full disk) costs the time it would have saved, not the
run: the images are checked as if nothing were remembered, and a warning names the file and the fix.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import closing
from pathlib import Path

from ..files import cache_dir
from ..hints import warn

SCREEN_FILE = "screened-v1.sqlite"  # the schema's version in the name: a new schema starts a new file
CHUNK = 900  # paths per query: under SQLite's oldest limit of 999 parameters
Stamp = tuple[str, int, int]  # (absolute path, size in bytes, modification time in ns)


def screen_db() -> Path:
    """The SQLite file that holds the screening results: ``cache_dir()/screened-v1.sqlite``."""
    return cache_dir() / SCREEN_FILE


def file_stamps(paths: Sequence[Path | str]) -> list[Stamp | None]:
    """The (absolute path, size, modification time) of each of ``paths``; None where the file cannot be stat'ed
    (missing: checking it says so, and nothing is remembered)."""
    stamps: list[Stamp | None] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            stamps.append(None)
        else:  # abspath, not resolve: no system call per path component, on a million files
            stamps.append((os.path.abspath(path), st.st_size, st.st_mtime_ns))
    return stamps


def _connect(db: Path) -> sqlite3.Connection:
    db.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(db, timeout=120)  # other processes of the job may hold the write lock for a moment
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(
        "CREATE TABLE IF NOT EXISTS screened (path TEXT PRIMARY KEY, size INTEGER NOT NULL, "
        "mtime_ns INTEGER NOT NULL, problem TEXT)"
    )
    return con


def _unusable(db: Path, err: Exception) -> None:
    warn(
        f"The screening cache {db} cannot be used ({type(err).__name__}: {err}); every image is checked as if none "
        f"had been before. Fix: make its folder writable, or point TRESNET_NB_CACHE at one that is.",
        stacklevel=4,
    )


def recall(stamps: Sequence[Stamp | None], db: Path | None = None) -> dict[int, str | None]:
    """For each of ``stamps`` whose file was checked before and has the same size and modification time now: its
    index -> what the check found (None: the image is fine)."""
    db = screen_db() if db is None else db
    wanted: dict[str, list[int]] = {}
    for i, s in enumerate(stamps):
        if s is not None:
            wanted.setdefault(s[0], []).append(i)  # a file listed twice has one record
    if not wanted or not db.exists():
        return {}
    found: dict[int, str | None] = {}
    keys = list(wanted)
    try:
        with closing(_connect(db)) as con:
            for start in range(0, len(keys), CHUNK):
                part = keys[start : start + CHUNK]
                rows = con.execute(
                    f"SELECT path, size, mtime_ns, problem FROM screened WHERE path IN ({','.join('?' * len(part))})",
                    part,
                )
                for path, size, mtime_ns, problem in rows:
                    for i in wanted[path]:
                        if stamps[i][1:] == (size, mtime_ns):
                            found[i] = problem
    except (sqlite3.Error, OSError) as err:
        _unusable(db, err)
        return {}
    return found


def remember(results: Iterable[tuple[Stamp, str | None]], db: Path | None = None) -> None:
    """Keep what checking each file found: ``(stamp, problem or None)`` pairs."""
    db = screen_db() if db is None else db
    rows = [(s[0], s[1], s[2], problem) for s, problem in results]
    if not rows:
        return
    try:
        with closing(_connect(db)) as con, con:
            con.executemany("INSERT OR REPLACE INTO screened VALUES (?, ?, ?, ?)", rows)
    except (sqlite3.Error, OSError) as err:
        _unusable(db, err)
