"""Scores of a run's predictions: the dataset's metric and the secondary numbers, in one :class:`Evaluation` that the
run record, the plots and the notebooks read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .metrics import ClassificationReport, classify_report, column_aucs, macro_f1, mean_average_precision

METRICS = ("accuracy", "macro_f1", "mean_roc_auc")


@dataclass(frozen=True)
class Evaluation:
    """A run's predictions on the evaluation split and its metrics."""

    metric_name: str
    metric_value: float
    probs: torch.Tensor
    targets: torch.Tensor
    report: ClassificationReport | None  # single-label
    aucs: dict[str, float] | None  # multi-label: ROC-AUC per label
    mean_ap: float | None  # multi-label

    def extras(self) -> dict[str, Any]:
        """The secondary numbers for metrics.json."""
        out: dict[str, Any] = {"n_eval": len(self.targets)}
        if self.report is not None:
            out.update(top1=self.report.top1, top5=self.report.top5, macro_f1=self.report.macro_f1)
        if self.aucs is not None:
            out.update(column_auc=self.aucs, mean_ap=self.mean_ap)
        return out


def score(probs: torch.Tensor, targets: torch.Tensor, class_names: Sequence[str], task: str = "single-label",
          metric: str = "accuracy") -> Evaluation:  # fmt: skip
    """Score ``probs`` against ``targets`` with ``metric`` ('accuracy' or 'macro_f1' for single-label; multi-label
    tasks are scored by mean column ROC-AUC, with mAP beside it)."""
    names = tuple(class_names)
    if task == "multi-label":
        p, t = probs.numpy(), targets.numpy()
        aucs = column_aucs(p, t, names)
        return Evaluation("mean_roc_auc", float(np.mean(list(aucs.values()))), probs, targets, None, aucs,
                          mean_average_precision(p, t))  # fmt: skip
    if task != "single-label":
        raise ValueError(f"Unknown task {task!r}; choose 'single-label' or 'multi-label'")
    if metric not in ("accuracy", "macro_f1"):
        raise ValueError(f"Unknown single-label metric {metric!r}; choose 'accuracy' or 'macro_f1'")
    report = classify_report(probs, targets, names)
    value = report.top1 if metric == "accuracy" else macro_f1(probs.numpy(), targets.numpy(), len(names))
    return Evaluation(metric, float(value), probs, targets, report, None, None)
