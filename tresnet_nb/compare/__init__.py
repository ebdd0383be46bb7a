"""Which backbone for my data: the paper's comparison (accuracy against training and inference speed) run on the
user's data, size and device, one normal run per candidate (notebook 10, ``python -m tresnet_nb compare``).

``candidates`` parses CANDIDATES and plans the runs (no torch), ``run`` probes and trains each candidate,
``table`` holds the rows, Pareto fronts, the paper's ranking and the sentence, ``plot`` draws the trade-off and
``command`` ends a comparison and is the command line's entry.
"""

from __future__ import annotations

from .candidates import (
    DEFAULT_COUNT,
    NOTEBOOK,
    PAPER_SET,
    Budget,
    Candidate,
    ComparisonPlan,
    budget_from,
    comparison_plan,
    epochs_for,
    parse_candidates,
    plan_comparison,
    plan_from_notebook,
)
from .command import compare_command, compare_config, finish_comparison
from .plot import plot_comparison
from .run import compare_backbones, probe_candidate, run_candidate
from .table import COLUMNS, Comparison, pareto_front

__all__ = [
    "COLUMNS",
    "DEFAULT_COUNT",
    "NOTEBOOK",
    "PAPER_SET",
    "Budget",
    "Candidate",
    "Comparison",
    "ComparisonPlan",
    "budget_from",
    "comparison_plan",
    "compare_backbones",
    "compare_command",
    "compare_config",
    "epochs_for",
    "finish_comparison",
    "pareto_front",
    "parse_candidates",
    "plan_comparison",
    "plan_from_notebook",
    "plot_comparison",
    "probe_candidate",
    "run_candidate",
]
