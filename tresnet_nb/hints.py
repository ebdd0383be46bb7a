"""Messages for users: "did you mean" for names they got slightly wrong (parameters, presets and the like), and the
package's warnings, each shown once and on one line."""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Iterable


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'X'?)"`` (or ``'X' or 'Y'``) for the ``choices`` closest to ``name``, case ignored and the
    choices' own spelling given; ``""`` when none is close."""
    by_key = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(str(name).lower(), list(by_key), n=2, cutoff=0.7)
    return f" (did you mean {' or '.join(repr(by_key[c]) for c in close)}?)" if close else ""


def unknown_names(names: Iterable[str], choices: Iterable[str]) -> str:
    """Each of ``names`` quoted, with its nearest ``choices`` where one is close: ``'LRR' (did you mean 'LR'?)``."""
    choices = list(choices)
    return ", ".join(f"{name!r}{did_you_mean(name, choices)}" for name in names)


class TnbWarning(UserWarning):
    """A warning of this package: shown once per message, as one line without the Python source line under it."""


def warn(message: str, stacklevel: int = 3) -> None:
    """Warn the user with ``message`` (a :class:`TnbWarning`), attributed to the caller's caller by default."""
    warnings.warn(message, TnbWarning, stacklevel=stacklevel)


def short_format(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001 (warnings' signature)
    """``warnings.formatwarning`` for :class:`TnbWarning`: ``"Warning: message"`` on one line; any other warning as
    Python formats it (:func:`install` keeps Python's function for them)."""
    if issubclass(category, TnbWarning):
        return f"Warning: {message}\n"
    return _PYTHON_FORMAT(message, category, filename, lineno, line)


_PYTHON_FORMAT = warnings.formatwarning


def install() -> None:
    """Show each :class:`TnbWarning` once and short (``import tresnet_nb`` calls this); other warnings unchanged."""
    warnings.filterwarnings("once", category=TnbWarning)
    if warnings.formatwarning is not short_format:
        warnings.formatwarning = short_format
