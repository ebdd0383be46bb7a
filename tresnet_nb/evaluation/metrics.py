"""Task metrics: single-label (top-1/top-5, macro-F1, per-class table, confusion matrix) and multi-label (mean
column-wise ROC-AUC, the Plant Pathology 2020 metric, and mAP)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


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
        macro_f1=macro_f1(y_pred, y_true, len(class_names)),  # the one definition: Kaggle's (labels present)
        per_class=per_class,
        confusion=confusion_matrix(y_true, y_pred, labels=labels),
        n_items=len(y_true),
    )


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``, ties getting the mean of their ranks."""
    order = np.argsort(x, kind="stable")
    _, first, counts = np.unique(x[order], return_index=True, return_counts=True)
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)
    return ranks


UNDEFINED_AUC = ("raise", "skip")


def as_columns(targets: np.ndarray, n_columns: int) -> np.ndarray:
    """``targets`` as an (N, ``n_columns``) 0/1 matrix: class indices (N,) one-hot, a matrix as it is."""
    targets = np.asarray(targets)
    if targets.ndim != 1:
        return targets
    if targets.size and (targets.min() < 0 or targets.max() >= n_columns):
        raise ValueError(f"targets range over {targets.min()}..{targets.max()}, outside the classes 0..{n_columns - 1}")
    return np.eye(n_columns, dtype=np.float32)[targets.astype(np.int64)]


def column_aucs(
    probs: np.ndarray, targets: np.ndarray, columns: Sequence[str] | None = None, undefined: str = "raise"
) -> dict[str, float]:
    """ROC-AUC of each column of ``probs`` (N, C) against ``targets`` (0/1 (N, C), or class indices (N,) scored as
    their one-hot columns), keyed by ``columns``. A column whose targets are all 0 or all 1 has no ROC-AUC:
    ``undefined`` 'raise' names it, 'skip' leaves it out of the result."""
    if undefined not in UNDEFINED_AUC:
        raise ValueError(f"undefined={undefined!r}; choose 'raise' or 'skip'")
    probs = np.asarray(probs, dtype=np.float64)
    targets = as_columns(targets, probs.shape[1]) if probs.ndim == 2 else np.asarray(targets)
    columns = [str(j) for j in range(probs.shape[1])] if columns is None else list(columns)
    if probs.ndim != 2 or probs.shape != targets.shape or probs.shape[1] != len(columns):
        raise ValueError(f"probs {probs.shape} and targets {targets.shape} do not fit the columns {columns}")
    out = {}
    for j, name in enumerate(columns):
        positive = targets[:, j] == 1
        n_pos, n_neg = int(positive.sum()), int((~positive).sum())
        if n_pos == 0 or n_neg == 0:
            if undefined == "skip":
                continue
            raise ValueError(
                f"column {name!r} has only {'negative' if n_pos == 0 else 'positive'} targets; ROC-AUC needs both. "
                "Evaluate on a larger or stratified split"
            )
        # Mann-Whitney U: AUC is the chance a random positive outscores a random negative (Hanley & McNeil 1982)
        u = _ranks(probs[:, j])[positive].sum() - n_pos * (n_pos + 1) / 2
        out[name] = float(u / (n_pos * n_neg))
    return out


def mean_column_auc(
    probs: np.ndarray, targets: np.ndarray, columns: Sequence[str] | None = None, undefined: str = "raise"
) -> float:
    """Mean over columns of the ROC-AUC of ``probs`` (N, C) against ``targets`` (see :func:`column_aucs`); the
    Plant Pathology metric. With ``undefined='skip'`` (the per-epoch metric, on a capped validation split) it is
    the mean over the columns having both classes, NaN when none has."""
    aucs = column_aucs(probs, targets, columns, undefined)
    return float(np.mean(list(aucs.values()))) if aucs else float("nan")


def mean_average_precision(probs: np.ndarray, targets: np.ndarray) -> float:
    """mAP: the mean over columns (labels) having a positive of the average precision of ``probs`` (N, C) against
    0/1 ``targets``, AP being the mean over positives of the precision at that positive's rank (the multi-label
    measure of the TResNet and ASL papers)."""
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets)
    if probs.ndim != 2 or probs.shape != targets.shape:
        raise ValueError(f"probs {probs.shape} and targets {targets.shape} must be (N, C) of the same shape")
    aps = []
    for j in range(probs.shape[1]):
        positive = targets[:, j] == 1
        if not positive.any():
            continue
        order = np.argsort(-probs[:, j], kind="stable")
        hits = positive[order]
        precision_at_hit = np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)
        aps.append(precision_at_hit.mean())
    if not aps:
        raise ValueError("mAP needs at least one positive target; evaluate on a larger split")
    return float(np.mean(aps))


def macro_f1(pred: np.ndarray, targets: np.ndarray, n_classes: int) -> float:
    """Macro-F1 of class indices (or scores (N, C), arg-maxed) ``pred`` against ``targets`` in 0..``n_classes``-1,
    averaged over the classes present in targets or predictions: Kaggle's Herbarium 2020 metric, scikit-learn's
    ``f1_score(average='macro')`` with ``labels=None``. Classes absent from both (most of Herbarium's 32,093 on a
    small split) do not count; this is the only macro-F1 a run reports."""
    pred, targets = np.asarray(pred), np.asarray(targets, dtype=np.int64)
    pred = pred.argmax(1) if pred.ndim == 2 else pred.astype(np.int64)
    if pred.shape != targets.shape:
        raise ValueError(f"pred {pred.shape} and targets {targets.shape} differ in shape")
    for name, v in (("pred", pred), ("targets", targets)):
        if v.size and (v.min() < 0 or v.max() >= n_classes):
            raise ValueError(f"{name} range over {v.min()}..{v.max()}, outside the classes 0..{n_classes - 1}")
    tp = np.bincount(targets[pred == targets], minlength=n_classes)
    # F1 = 2TP / (2TP + FP + FN) = 2TP / (predicted + actual); 0 for a class predicted but never present or vice versa
    total = np.bincount(pred, minlength=n_classes) + np.bincount(targets, minlength=n_classes)
    f1 = np.divide(2 * tp, total, out=np.zeros(n_classes), where=total > 0)
    return float(f1[total > 0].mean())
