"""The transplant comparison of notebook 07: zero-shot (transplanted head, no training), transplant + fine-tune, and
random head + fine-tune, on the run's dataset, with the metrics.json record. With random weights it says plainly
that the comparison means nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from torch import nn

from ..config import RunConfig
from ..evaluation.scores import Evaluation
from ..model.load import weights_info
from ..report.record import build_metrics
from ..steps.data import Data
from ..steps.results import evaluate
from ..train.fit import fit
from ..train.learner import build_learner
from .hierarchy import Hierarchy
from .matching import HeadMatch

METRIC = "transplant_coverage"  # share of the dataset's classes whose row comes from the 21K head


@dataclass(frozen=True)
class Arm:
    """One way of starting the classifier, and what it scored."""

    name: str
    metric_name: str
    metric_value: float
    epochs: int
    train_seconds: float
    evaluation: Evaluation | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            self.metric_name: self.metric_value,
            "epochs": self.epochs,
            "train_seconds": round(self.train_seconds, 2),
        }


def zero_shot(cfg: RunConfig, model: nn.Module, data: Data) -> Arm:
    """Evaluate the transplanted ``model`` on ``data`` without any training."""
    learn = build_learner(cfg, data.dls, model, task=data.task)
    evaluation = evaluate(learn, data)
    return Arm(
        "zero-shot (transplanted head, no training)",
        evaluation.metric_name,
        evaluation.metric_value,
        0,
        0.0,
        evaluation,
    )


def fine_tune(cfg: RunConfig, model: nn.Module, data: Data, name: str) -> Arm:
    """Fine-tune ``model`` on ``data`` with the run's recipe (checkpoints in OUTPUT_DIR/``name``) and evaluate it."""
    learn = build_learner(cfg, data.dls, model, task=data.task)
    (cfg.out / name).mkdir(parents=True, exist_ok=True)
    result = fit(learn, cfg, checkpoint_dir=cfg.out / name)
    evaluation = evaluate(learn, data)
    start = {"transplant": "transplanted head", "random_head": "random head"}.get(name, name)
    return Arm(
        f"{start} + fine-tune",
        evaluation.metric_name,
        evaluation.metric_value,
        result.epochs,
        result.seconds,
        evaluation,
    )


def verdict(model: nn.Module) -> str:
    """What the comparison can say, given where ``model``'s weights came from."""
    if not weights_info(model).pretrained:
        return (
            "The weights are RANDOM (not pretrained): the transplanted rows are random too, so the zero-shot score "
            "is chance and the two fine-tuned runs differ by noise. This comparison is NOT meaningful; run with "
            "pretrained 21K weights (WEIGHTS='auto' online, or a checkpoint file) to compare."
        )
    return (
        "Pretrained 21K weights: the zero-shot row shows what the transplanted head knows before any training; "
        "the fine-tuned rows compare a warm start with a random head for the same training budget."
    )


def comparison_table(arms: Sequence[Arm], model: nn.Module) -> pd.DataFrame:
    """The arms side by side; prints the verdict (see :func:`verdict`) above it."""
    print(verdict(model))
    return pd.DataFrame(
        [
            {
                "start": a.name,
                a.metric_name: round(a.metric_value, 4),
                "epochs": a.epochs,
                "train s": round(a.train_seconds, 1),
            }
            for a in arms
        ]
    )


def record(
    cfg: RunConfig, model: nn.Module, match: HeadMatch, arms: Sequence[Arm], hierarchy: Hierarchy, **extra: Any
) -> dict[str, Any]:
    """The metrics.json record: transplant coverage of the run's dataset as the metric, the arms' scores beside."""
    cover = match.coverage()
    value = (cover["matched"] + cover["via ancestor"]) / max(cover["classes"], 1)
    return build_metrics(
        cfg,
        weights_info(model),
        METRIC,
        value,
        sum(a.train_seconds for a in arms),
        paper_target=None,
        label_set=match.label_set,
        coverage=cover,
        hierarchy=hierarchy.source,
        arms=[a.to_dict() for a in arms],
        comparison_meaningful=weights_info(model).pretrained,
        **extra,
    )
