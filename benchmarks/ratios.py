"""The one format of the benchmarks' ratio lines, with both operands, which tests/test_benchmarks.py parses and
recomputes. Standard library only, so that the test imports it in milliseconds."""

from __future__ import annotations

import math


def ratio_line(label: str, numerator: float, denominator: float, unit: str, note: str = "") -> str:
    """``label``, then ``numerator / denominator`` with both operands and their ``unit``, then ``; note`` if given:
    "cached / naive: x18.70 (630.12 img/s / 33.697 img/s)". The ratio has 4 significant digits, a float operand 5
    and an int operand all of its digits (trailing zeros kept), so that the ratio can be recomputed within the
    printed rounding; a zero denominator prints ``xnan`` rather than ending a run after its timings."""
    ratio = numerator / denominator if denominator else math.nan

    def operand(value: float) -> str:
        return f"{value:d} {unit}" if isinstance(value, int) else f"{value:#.5g} {unit}"

    return f"{label}: x{ratio:#.4g} ({operand(numerator)} / {operand(denominator)})" + (f"; {note}" if note else "")
