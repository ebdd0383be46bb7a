"""Suggestions for names a user got slightly wrong: "did you mean" for parameters, presets and the like."""

from __future__ import annotations

import difflib
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
