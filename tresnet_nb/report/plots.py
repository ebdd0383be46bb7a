"""Plots. Every figure is saved as PNG in the run folder and shown when a notebook runs it; headless (papermill,
scripts) the PNG is the record."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..paper import PAPER_V100
from .display import finish


def _as_display_image(img: np.ndarray) -> tuple[np.ndarray, str | None]:
    return (img, "gray") if img.ndim == 2 else (img, None)


def _label_text(label: Any, class_names: Sequence[str]) -> str:
    row = np.asarray(label)
    if row.ndim == 1:  # multi-label: the names of the labels present
        return "+".join(class_names[j] for j in np.flatnonzero(row)) or "(none)"
    return class_names[int(row)]


def plot_samples(
    images: np.ndarray, labels: Sequence[Any], class_names: Sequence[str], path: Path | str | None = None, n: int = 32
) -> None:
    """A grid of the first ``n`` ``images`` with their class names (the names present, for multi-label rows)."""
    n = min(n, len(images))
    cols = min(8, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.6 * rows), squeeze=False)
    for ax, i in zip(axes.flat, range(rows * cols), strict=False):
        ax.axis("off")
        if i < n:
            img, cmap = _as_display_image(images[i])
            ax.imshow(img, cmap=cmap)
            ax.set_title(_label_text(labels[i], class_names)[:24], fontsize=7)
    finish(fig, path)


MAX_NAMED_CLASSES = 40  # beyond this many classes, count plots show the distribution instead of named bars


def plot_class_counts(
    counts: dict[str, np.ndarray], class_names: Sequence[str], path: Path | str | None = None
) -> None:
    """Bars of items per class for each split in ``counts``; with many classes, each split's counts sorted from
    the most to the least frequent class on a log scale (the long tail)."""
    fig, ax = plt.subplots(figsize=(8, 3))
    if len(class_names) > MAX_NAMED_CLASSES:
        for split, c in counts.items():
            ax.plot(np.arange(1, len(c) + 1), np.sort(c)[::-1], label=f"{split} ({int(c.sum())} items)")
        ax.set(xlabel=f"class rank (of {len(class_names)})", ylabel="items", yscale="symlog")
    else:
        width = 0.8 / len(counts)
        x = np.arange(len(class_names))
        for k, (split, c) in enumerate(counts.items()):
            ax.bar(x + k * width, c, width=width, label=f"{split} ({int(c.sum())})")
        ax.set_xticks(x + width * (len(counts) - 1) / 2, class_names, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("items")
    ax.legend()
    finish(fig, path)


def plot_roc_curves(
    probs: np.ndarray, targets: np.ndarray, columns: Sequence[str], path: Path | str | None = None
) -> None:
    """One ROC curve per label (multi-label), with its AUC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(4.5, 4))
    for j, name in enumerate(columns):
        if 0 < targets[:, j].sum() < len(targets):
            fpr, tpr, _ = roc_curve(targets[:, j], probs[:, j])
            ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(targets[:, j], probs[:, j]):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set(xlabel="false positive rate", ylabel="true positive rate")
    ax.legend(fontsize=7)
    finish(fig, path)


def plot_training(history: dict[str, Any], path: Path | str | None = None) -> None:
    """Losses (train per batch, validation per epoch) on the left, validation metrics per epoch on the right."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.2))
    losses = np.array(history["train_losses"])
    values = np.array([[np.nan if v is None else v for v in row] for row in history["epochs"]], dtype=float)
    names = list(history["metric_names"])
    ax1.plot(np.arange(1, len(losses) + 1), losses, label="train (smoothed)")
    if len(values) and "valid_loss" in names:
        per_epoch = len(losses) / len(values)
        ends = per_epoch * np.arange(1, len(values) + 1)
        ax1.plot(ends, values[:, names.index("valid_loss")], marker="o", label="validation")
    ax1.set(xlabel="batch", ylabel="loss")
    ax1.legend(fontsize=8)
    for j, name in enumerate(names):
        if name not in ("train_loss", "valid_loss") and len(values):
            ax2.plot(np.arange(1, len(values) + 1), values[:, j], marker="o", label=name)
    ax2.set(xlabel="epoch", ylabel="validation metric", ylim=(0, 1))
    ax2.set_xticks(np.arange(1, len(values) + 1))
    ax2.legend(fontsize=8)
    finish(fig, path)


def plot_throughput(report: Any, path: Path | str | None = None) -> None:
    """A :class:`tresnet_nb.probe.ProbeReport` as bars: training and inference img/s per architecture, ours beside
    the paper's V100 numbers, on a log scale (a CPU and a V100 differ by two orders of magnitude)."""
    archs = [r.arch for r in report.results]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    x = np.arange(len(archs))
    for ax, mode, title in zip(axes, ("train", "infer"), ("training", "inference"), strict=True):
        ours = [getattr(r, mode).images_per_second if getattr(r, mode) else np.nan for r in report.results]
        paper = [getattr(PAPER_V100[a.split(".")[0]], mode) if a.split(".")[0] in PAPER_V100 else np.nan for a in archs]
        size, precision = report.settings.img_size, report.settings.precision
        device = report.device.split(":", 1)[-1].strip()[:28]
        bars = ax.bar(x - 0.2, ours, 0.4, label=f"ours ({device}, {size} px, {precision})")
        ax.bar(x + 0.2, paper, 0.4, label="paper (V100, 224 px, mixed precision)", color="0.7")
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
        ax.set(
            title=f"{title}: ours at {size} px, the paper's at 224 px" if size != 224 else f"{title}, 224 px",
            ylabel="img/s",
            yscale="log",
            xticks=x,
        )
        ax.set_xticklabels(archs, fontsize=8)
        ax.legend(fontsize=7)
    finish(fig, path)


def plot_memory(saved_mib: dict[str, float], title: str, path: Path | str | None = None) -> None:
    """Horizontal bars of activation memory saved for backward (MiB per image), one per variant, with each one's
    ratio to the first."""
    names, values = list(saved_mib), np.array(list(saved_mib.values()), dtype=float)
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(names)))
    bars = ax.barh(names[::-1], values[::-1])
    ax.bar_label(bars, labels=[f"{v:.2f} MiB (x{v / values[0]:.2f})" for v in values[::-1]], fontsize=8)
    ax.set(xlabel="saved for backward, MiB per image", title=title, xlim=(0, values.max() * 1.35))
    finish(fig, path)


def plot_lr_find(
    lrs: Sequence[float], losses: Sequence[float], suggestion: float, path: Path | str | None = None
) -> None:
    """The learning-rate finder's smoothed loss against the learning rate (log scale), the suggestion marked."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(lrs, losses)
    ax.axvline(suggestion, color="tab:red", linestyle="--", label=f"suggested {suggestion:.2e}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="loss (smoothed)")
    ax.legend(fontsize=8)
    finish(fig, path)


def plot_confusion(confusion: np.ndarray, class_names: Sequence[str], path: Path | str | None = None) -> None:
    """The confusion matrix: each cell's colour is the share of its true class (rows sum to 1, the colour bar says
    so), the number in it the count of images."""
    norm = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    size = max(4.0, 0.5 * len(class_names))
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(ticks, class_names, fontsize=8)
    if len(class_names) <= 20:
        for i in ticks:
            for j in ticks:
                ax.text(
                    j,
                    i,
                    int(confusion[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(class_names) <= 20:
        ax.set_title("numbers: images; colour: share of the true class", fontsize=9)
    bar = fig.colorbar(im, ax=ax, fraction=0.046)
    bar.set_label("share of the true class's images (row)")
    finish(fig, path)


def plot_predictions(
    images: np.ndarray,
    probs: torch.Tensor,
    targets: torch.Tensor,
    class_names: Sequence[str],
    path: Path | str | None = None,
    n: int = 16,
    worst: bool = False,
) -> None:
    """A gallery of predictions: the first ``n``, or the ``n`` most confident mistakes when ``worst``."""
    pred = probs.argmax(1)
    conf = probs.max(1).values
    order = np.arange(len(pred))
    if worst:
        wrong = (pred != targets).nonzero().flatten()
        order = wrong[conf[wrong].argsort(descending=True)].numpy()
    order = order[:n]
    if len(order) == 0:
        print("No predictions to show (no mistakes)" if worst else "No predictions to show")
        return
    cols = min(8, len(order))
    rows = int(np.ceil(len(order) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, order, strict=False):
        img, cmap = _as_display_image(images[i])
        ax.imshow(img, cmap=cmap)
        ok = int(pred[i]) == int(targets[i])
        ax.set_title(
            f"{class_names[int(pred[i])]} {float(conf[i]):.2f}\n(true {class_names[int(targets[i])]})",
            fontsize=6.5,
            color="green" if ok else "red",
        )
    finish(fig, path)
