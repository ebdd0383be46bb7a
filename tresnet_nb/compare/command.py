"""The end of a comparison (plot, sentence, metrics.json) and ``python -m tresnet_nb compare``: the notebook's
steps in one process, headless."""

from __future__ import annotations

import sys
from typing import Any

from ..report.record import write_metrics
from .candidates import ComparisonPlan, comparison_plan
from .plot import plot_comparison
from .run import compare_backbones
from .table import Comparison


def finish_comparison(comparison: Comparison) -> dict[str, Any]:
    """comparison.png and metrics.json (the contract's keys for the most accurate candidate, every row), the
    sentence printed; a comparison in which no candidate finished raises, after its table was written."""
    out = comparison.plan.cfg.out
    if not comparison.done:
        raise RuntimeError(f"{comparison.sentence()} The errors: {out / 'comparison.csv'}")
    plot_comparison(comparison, out / "comparison.png")
    record = comparison.record()
    write_metrics(record, out / "metrics.json")
    print(comparison.sentence())
    return record


def compare_config(preset: str | None, params: dict[str, Any], out: str | None) -> ComparisonPlan:
    """The plan of a ``compare`` command: ``params`` as :func:`comparison_plan` takes them; ``out`` is OUTPUT_DIR."""
    if out is not None:
        given = {key.upper(): value for key, value in params.items()}.get("OUTPUT_DIR")
        if given not in (None, out):
            raise ValueError(f"--out {out!r} and -p OUTPUT_DIR {given!r} disagree; give one")
        params = {**{k: v for k, v in params.items() if k.upper() != "OUTPUT_DIR"}, "OUTPUT_DIR": out}
    return comparison_plan(params, preset)


def compare_command(preset: str | None, params: dict[str, Any], out: str | None) -> int:
    """``python -m tresnet_nb compare``: exit 0 when every candidate finished, 1 when one failed (its error is in
    comparison.csv), 2 for bad input (before anything runs)."""
    try:
        plan = compare_config(preset, params, out)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    plan.cfg.save()
    comparison = compare_backbones(plan)
    try:
        finish_comparison(comparison)
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"comparison.csv, comparison.md, comparison.png and metrics.json in {plan.cfg.out}")
    return 0 if len(comparison.done) == len(comparison.rows) else 1
