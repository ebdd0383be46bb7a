"""Task metrics for single-label classification: top-1/top-5, macro-F1, per-class table, confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support


@dataclass(frozen=True)
class ClassificationReport:
    """Metrics of one evaluation: headline numbers, the per-class table and the confusion matrix."""

    top1: float
    top5: float | None  # None when there are 5 classes or fewer
    macro_f1: float
    per_class: pd.DataFrame
    confusion: np.ndarray
    n_items: int

    def headline(self) -> dict[str, float | None]:
        return {"top1": self.top1, "top5": self.top5, "macro_f1": self.macro_f1}


def topk_accuracy(probs: torch.Tensor, targets: torch.Tensor, k: int) -> float:
    """Fraction of rows of ``probs`` whose ``k`` highest classes contain the target."""
    if k > probs.shape[1]:
        raise ValueError(f"top-{k} needs at least {k} classes; the predictions have {probs.shape[1]}")
    topk = probs.topk(k, dim=1).indices
    return float((topk == targets.view(-1, 1)).any(dim=1).float().mean())


def classify_report(
    probs: torch.Tensor, targets: torch.Tensor, class_names: tuple[str, ...] | list[str]
) -> ClassificationReport:
    """Evaluate class probabilities ``probs`` (N, C) against integer ``targets`` (N,) for ``class_names``."""
    if probs.ndim != 2 or probs.shape[1] != len(class_names) or len(probs) != len(targets):
        raise ValueError(
            f"probs {tuple(probs.shape)} and targets {tuple(targets.shape)} do not fit {len(class_names)} classes"
        )
    y_true = targets.cpu().numpy().astype(int)
    y_pred = probs.argmax(1).cpu().numpy()
    labels = np.arange(len(class_names))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    per_class = pd.DataFrame(
        {"class": list(class_names), "support": support, "accuracy": recall, "precision": precision, "f1": f1}
    )
    return ClassificationReport(
        top1=float((y_true == y_pred).mean()),
        top5=topk_accuracy(probs, targets, 5) if len(class_names) > 5 else None,
        macro_f1=float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        per_class=per_class,
        confusion=confusion_matrix(y_true, y_pred, labels=labels),
        n_items=len(y_true),
    )
