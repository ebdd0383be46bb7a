"""Where the package keeps files, and how it writes them: one cache folder, and atomic writes (a temporary file in
the same folder, then a rename), so that a crash never leaves half a file where a whole one was expected."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

CACHE_ENV = "TRESNET_NB_CACHE"


def cache_dir() -> Path:
    """``$TRESNET_NB_CACHE`` or ``~/.cache/tresnet_nb``: resized image copies, screening results, the 21K tree file."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tresnet_nb")


def atomic_write(path: Path | str, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it to ``path``; the old file (if any)
    stays intact when ``write`` fails, and the temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: Path | str, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))
