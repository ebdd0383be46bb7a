"""Downloads of public datasets: md5-checked files and safe tarball extraction, failing fast when offline."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from ..runtime import REACH_BUDGET_S, host_reachable
from .base import DatasetError

DOWNLOAD_TIMEOUT_S = 60  # per socket operation once the download runs


def md5_of(path: Path) -> str:
    """Hex md5 of the file ``path``, read in 1 MiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_md5(path: Path, md5: str, url: str) -> Path:
    """Return ``path`` if its md5 is ``md5``, else raise naming the file, both sums and where ``url`` to get it."""
    if not Path(path).is_file():
        raise DatasetError(f"Archive not found: {str(path)!r}; download {url} (md5 {md5}) to that path")
    got = md5_of(path)
    if got != md5:
        raise DatasetError(
            f"{str(path)!r} has md5 {got}, but the official file has {md5}: it is truncated, corrupt or another "
            f"file, so it was not unpacked. Fix: delete it and download {url} again."
        )
    return path


def safe_extract(archive: Path, dest: Path) -> Path:
    """Unpack the tarball ``archive`` into ``dest``, first refusing any member that is not a plain file or folder
    inside ``dest`` (absolute paths, '..', links, devices: the classic tar path-traversal attacks)."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                parts = PurePosixPath(m.name).parts
                if m.name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                    raise DatasetError(
                        f"{str(archive)!r} refused: member {m.name!r} would be written outside {str(dest)!r}"
                    )
                if not (m.isfile() or m.isdir()):
                    raise DatasetError(f"{str(archive)!r} refused: member {m.name!r} is a link or device, not a file")
            dest.mkdir(parents=True, exist_ok=True)
            # the 'data' filter (Python >= 3.10.12/3.11.4) repeats these checks and drops unsafe permission bits
            extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(dest, members=members, **extra)
    except tarfile.TarError as e:
        raise DatasetError(f"{str(archive)!r} is not a readable tarball ({e}); delete it and download it again") from e
    return dest


def fetch(url: str, dest: Path, md5: str, layout: str) -> Path:
    """Download ``url`` to ``dest`` (kept if it already has ``md5``) and check its md5; fail within about 2 s,
    naming ``url`` and the expected ``layout``, when the host cannot be reached."""
    if dest.is_file() and md5_of(dest) == md5:
        return dest
    if not host_reachable(url):
        raise DatasetError(
            f"Cannot download {url}: {urlparse(url).hostname} cannot be reached (no connection within "
            f"{REACH_BUDGET_S} s). Fix: on a machine with internet download it (md5 {md5}), copy it here and unpack "
            f"it so that the data has this layout: {layout}"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(partial, "wb") as f:
            shutil.copyfileobj(response, f, 1 << 20)
    except (urllib.error.URLError, OSError) as e:
        partial.unlink(missing_ok=True)
        raise DatasetError(f"Download of {url} failed ({e}). Fix: retry, or get it by hand; layout: {layout}") from e
    try:
        check_md5(partial, md5, url)
    except DatasetError:
        partial.unlink()
        raise
    return partial.replace(dest)
