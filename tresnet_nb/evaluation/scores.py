"""Scores of a run's predictions: the dataset's metric and the secondary numbers, in one :class:`Evaluation` that the
run record, the plots and the notebooks read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..hints import warn
from .metrics import ClassificationReport, as_columns, classify_report, column_aucs, mean_average_precision

METRICS = ("accuracy", "macro_f1", "mean_roc_auc")


@dataclass(frozen=True)
class Evaluation:
    """A run's predictions on the evaluation split and its metrics."""

    metric_name: str
    metric_value: float
    probs: torch.Tensor
    targets: torch.Tensor
    report: ClassificationReport | None  # single-label
    aucs: dict[str, float] | None  # multi-label, or metric mean_roc_auc: ROC-AUC per label (column)
    mean_ap: float | None  # beside aucs

    def extras(self) -> dict[str, Any]:
        """The secondary numbers for metrics.json: ``macro_f1`` is Kaggle's macro-F1 (scikit-learn's
        ``f1_score(average='macro')``, over the classes in the truth or the predictions; the Herbarium 2020 metric,
        the same number as its metric_value), ``column_auc`` the ROC-AUC of each column scored."""
        out: dict[str, Any] = {"n_eval": len(self.targets)}
        if self.report is not None:
            out.update(top1=self.report.top1, top5=self.report.top5, macro_f1=self.report.macro_f1)
        if self.aucs is not None:
            out.update(column_auc=self.aucs, mean_ap=self.mean_ap)
        return out


def _auc_scores(probs: torch.Tensor, targets: torch.Tensor, names: tuple[str, ...]) -> tuple[dict[str, float], float]:
    """Per-column ROC-AUC (columns without both classes left out, with a warning naming them) and mAP."""
    p, t = probs.float().numpy(), as_columns(targets.numpy(), len(names))
    aucs = column_aucs(p, t, names, undefined="skip")
    if not aucs:
        raise ValueError(
            f"no column of {list(names)} has both positive and negative targets on the evaluation "
            "split, so ROC-AUC is undefined; evaluate on a larger or stratified split"
        )
    skipped = [n for n in names if n not in aucs]
    if skipped:
        warn(
            f"mean ROC-AUC over {len(aucs)} of {len(names)} columns: {skipped} have a single class on the "
            "evaluation split (column_auc in metrics.json lists the columns scored)",
            stacklevel=4,
        )
    return aucs, mean_average_precision(p, t)


def score(
    probs: torch.Tensor,
    targets: torch.Tensor,
    class_names: Sequence[str],
    task: str = "single-label",
    metric: str = "accuracy",
) -> Evaluation:
    """Score ``probs`` against ``targets`` with ``metric``: 'accuracy', 'macro_f1' or 'mean_roc_auc' (per column,
    of softmax probabilities against one-hot targets, e.g. Plant Pathology 2020) for single-label; multi-label
    tasks are scored by mean column ROC-AUC, with mAP beside it. Columns without both classes on the split are
    left out of the ROC-AUC mean, with a warning."""
    names = tuple(class_names)
    if task == "multi-label":
        aucs, mean_ap = _auc_scores(probs, targets, names)
        return Evaluation("mean_roc_auc", float(np.mean(list(aucs.values()))), probs, targets, None, aucs, mean_ap)
    if task != "single-label":
        raise ValueError(f"Unknown task {task!r}; choose 'single-label' or 'multi-label'")
    if metric not in METRICS:
        raise ValueError(f"Unknown single-label metric {metric!r}; choose one of {METRICS}")
    report = classify_report(probs, targets, names)
    if metric == "mean_roc_auc":
        aucs, mean_ap = _auc_scores(probs, targets, names)
        return Evaluation(metric, float(np.mean(list(aucs.values()))), probs, targets, report, aucs, mean_ap)
    value = report.top1 if metric == "accuracy" else report.macro_f1
    return Evaluation(metric, float(value), probs, targets, report, None, None)
