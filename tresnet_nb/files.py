"""Where the package keeps files, and how it writes them: one cache folder, and atomic writes (a temporary file in
the same folder, then a rename), so that a crash never leaves half a file where a whole one was expected."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

CACHE_ENV = "TRESNET_NB_CACHE"
_UMASK_LOCK = threading.Lock()


def file_mode() -> int:
    """The mode a new file gets under the process's umask (0o644 under the usual 0o022): what ``open`` would give,
    where ``mkstemp`` always gives 0o600."""
    with _UMASK_LOCK:  # reading the umask means setting it: put it back at once, one thread at a time
        mask = os.umask(0o077)
        os.umask(mask)
    return 0o666 & ~mask


def cache_dir() -> Path:
    """``$TRESNET_NB_CACHE`` or ``~/.cache/tresnet_nb``: resized image copies, screening results, the 21K tree file."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tresnet_nb")


def atomic_write(path: Path | str, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it to ``path`` with the mode the user's
    umask gives new files (so a teammate can read a run's results where the umask allows it); the old file (if any)
    stays intact when ``write`` fails, and the temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: Path | str, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))
