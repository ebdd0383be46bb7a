"""MATLAB .mat files of the Oxford and Stanford datasets, read with scipy and clear errors."""

from __future__ import annotations

from pathlib import Path

import scipy.io

from .base import DatasetError, require


def load_mat(path: Path, variables: tuple[str, ...], layout: str, **options) -> dict:
    """The ``variables`` of the MATLAB file ``path`` (scipy.io.loadmat with ``options``); DatasetError naming the
    file when it is missing, unreadable, or lacks one of them (the message shows ``layout``)."""
    require(path, "MATLAB file", layout)
    try:
        mat = scipy.io.loadmat(path, **options)
    except NotImplementedError as e:  # scipy reads MATLAB v4-v7.2 files; v7.3 is HDF5
        raise DatasetError(f"{str(path)!r} is a MATLAB v7.3 (HDF5) file, which this reader cannot open ({e})") from e
    except Exception as e:  # corrupt or truncated files fail in many ways inside scipy
        raise DatasetError(
            f"{str(path)!r} is not a readable MATLAB file ({type(e).__name__}: {e}); download it again"
        ) from e
    missing = [v for v in variables if v not in mat]
    if missing:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DatasetError(f"{str(path)!r} lacks the variable(s) {missing} (found {found}). Expected layout: {layout}")
    return mat
