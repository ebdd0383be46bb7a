"""Python 2 pickles as the CIFAR files hold them: read through a restricted unpickler that hands out only the few
globals a numpy array needs (any other is refused before it runs), and written byte for byte as Python 2's cPickle
wrote them (protocol 2, numpy 1.x globals), so that the CIFAR fixtures exercise the same opcodes and globals as the
real files."""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import numpy as np

from .base import DatasetError

# The globals a CIFAR pickle may name. Python 2's numpy spelled the array rebuilder numpy.core.multiarray, numpy 2
# spells it numpy._core.multiarray; a Python 3 protocol-2 pickle stores bytes as _codecs.encode(text, 'latin1').
_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(0))[0]  # the rebuilder of this numpy, whichever module it lives in


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """Python 3's protocol-2 spelling of bytes: ``text`` encoded with ``encoding``, which must be latin-1."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}; CIFAR pickles only use 'latin1'")
    return text.encode("latin1")


ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class CifarUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS`; any other global is refused before it is called."""

    def __init__(self, file: io.BufferedIOBase, path: Path, hint: str = "") -> None:
        super().__init__(file, encoding="bytes")
        self.path, self.hint = path, hint

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in ALLOWED_GLOBALS:
            return ALLOWED_GLOBALS[(module, name)]
        allowed = ", ".join(f"{m}.{n}" for m, n in ALLOWED_GLOBALS)
        raise DatasetError(
            f"{str(self.path)!r} refused: it references {module}.{name}, which no CIFAR file contains (only {allowed}); "
            "unpickling it could run code, so it was not executed. Fix: delete it and download the official "
            f"tarball again. {self.hint}"
        )


def load_pickle(path: Path, hint: str = "") -> dict:
    """The dict pickled in the CIFAR file ``path``, read with :class:`CifarUnpickler`; DatasetError naming the file
    (and ``hint``, how to get the official files, when a file is refused)."""
    try:
        with open(path, "rb") as f:
            obj = CifarUnpickler(f, path, hint).load()
    except DatasetError:
        raise
    except Exception as e:  # truncated or corrupt files fail in many ways (EOFError, UnpicklingError, ValueError...)
        raise DatasetError(
            f"{str(path)!r} is not a readable CIFAR pickle ({type(e).__name__}: {e}); the download may be truncated: "
            "unpack the tarball again"
        ) from e
    if not isinstance(obj, dict):
        raise DatasetError(f"{str(path)!r} holds a {type(obj).__name__}; a CIFAR file holds a dict")
    return obj


def _py2_save(obj: object, out: bytearray) -> None:
    """Append the protocol-2 opcodes Python 2's cPickle wrote for ``obj`` (one str type, numpy 1.x globals)."""
    if obj is None:
        out += b"N"
    elif isinstance(obj, bool):
        out += b"\x88" if obj else b"\x89"
    elif isinstance(obj, int):
        if 0 <= obj < 256:
            out += b"K" + bytes([obj])
        elif 0 <= obj < 65536:
            out += b"M" + struct.pack("<H", obj)
        else:
            out += b"J" + struct.pack("<i", obj)
    elif isinstance(obj, (bytes, str)):  # Python 2's str: SHORT_BINSTRING below 256 bytes, else BINSTRING
        data = obj.encode("ascii") if isinstance(obj, str) else obj
        out += (b"U" + bytes([len(data)]) if len(data) < 256 else b"T" + struct.pack("<I", len(data))) + data
    elif isinstance(obj, tuple):  # TUPLE1..3 for short tuples, MARK ... TUPLE otherwise, as protocol 2 does
        out += b"" if 1 <= len(obj) <= 3 else b"("
        for item in obj:
            _py2_save(item, out)
        out += b"\x85\x86\x87"[len(obj) - 1 : len(obj)] if 1 <= len(obj) <= 3 else b"t"
    elif isinstance(obj, list):
        out += b"]("
        for item in obj:
            _py2_save(item, out)
        out += b"e"
    elif isinstance(obj, dict):
        out += b"}("
        for key, value in obj.items():
            _py2_save(key, out)
            _py2_save(value, out)
        out += b"u"
    elif isinstance(obj, np.ndarray) and obj.dtype == np.uint8:
        # ndarray.__reduce__ of numpy 1.x: _reconstruct(ndarray, (0,), 'b'), then the state
        # (version 1, shape, dtype('u1') with its version-3 state, fortran order False, raw bytes).
        out += b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
        _py2_save((0,), out)
        _py2_save(b"b", out)
        out += b"\x87R("  # TUPLE3, REDUCE, then MARK for the state tuple
        _py2_save(1, out)
        _py2_save(obj.shape, out)
        out += b"cnumpy\ndtype\n"
        _py2_save((b"u1", 0, 1), out)
        out += b"R"
        _py2_save((3, b"|", None, None, None, -1, -1, 0), out)
        out += b"b"  # BUILD the dtype from its state
        _py2_save(False, out)
        _py2_save(np.ascontiguousarray(obj).tobytes(), out)
        out += b"tb"  # close the state tuple and BUILD the array
    else:
        raise TypeError(f"the CIFAR fixture writer cannot pickle a {type(obj).__name__}")


def write_py2_pickle(path: Path, obj: dict) -> Path:
    """Write ``obj`` to ``path`` byte for byte as Python 2's cPickle.dump(obj, f, 2) did for the CIFAR files."""
    out = bytearray(b"\x80\x02")
    _py2_save(obj, out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(out + b"."))
    return path
