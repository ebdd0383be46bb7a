"""The figures of the analysis after training: the reliability diagram, the noise rate per class, and galleries of
suspect labels and duplicate pairs. Saved as PNG in the run folder and shown in a notebook."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..report.display import finish
from .calibration import N_BINS, reliability


def plot_reliability(
    before: np.ndarray, after: np.ndarray, targets: np.ndarray, multi_label: bool, path: Path | str | None = None
) -> None:
    """Reliability diagram: observed frequency against mean confidence per equal-width bin, before and after
    temperature scaling (the evaluation half only), with the item count per bin below."""
    fig, (ax, counts) = plt.subplots(2, 1, figsize=(5, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    edges = np.linspace(0, 1, N_BINS + 1)
    for probs, name, colour in ((before, "before", "tab:red"), (after, "after", "tab:blue")):
        conf, freq, count = reliability(probs, targets, multi_label)
        used = count > 0
        ax.plot(conf[used], freq[used], marker="o", color=colour, label=f"{name} temperature scaling")
        counts.bar(
            edges[:-1] + (0.25 if name == "after" else 0.0) / N_BINS,
            count,
            width=0.5 / N_BINS,
            align="edge",
            color=colour,
            alpha=0.7,
        )
    ax.set(ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1), title="Reliability (evaluation half)")
    ax.legend(loc="upper left", fontsize=8)
    counts.set(xlabel="confidence" if not multi_label else "predicted probability", ylabel="items")
    finish(fig, path)


def plot_noise_rate(noise: pd.Series, path: Path | str | None = None, top: int = 30) -> None:
    """The estimated share of wrong labels per class (the ``top`` highest when there are many classes)."""
    shown = noise.sort_values(ascending=False).head(top)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.25 * len(shown) + 1.2))
    ax.barh([str(i) for i in shown.index], shown.to_numpy(), color="tab:orange")
    ax.set(
        xlabel="estimated noise rate (share of the class's given labels that are wrong)", title="Label noise per class"
    )
    finish(fig, path)


def plot_gallery(
    images: Sequence[np.ndarray], titles: Sequence[str], path: Path | str | None = None, cols: int = 6
) -> None:
    """A grid of images with a title each (suspect labels, or the most confident mistakes)."""
    n = len(images)
    if n == 0:
        print("Nothing to show")
        return
    cols = min(cols, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles, strict=False):
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
        ax.set_title(title, fontsize=7)
    finish(fig, path)


def plot_pairs(
    left: Sequence[np.ndarray], right: Sequence[np.ndarray], titles: Sequence[str], path: Path | str | None = None
) -> None:
    """Duplicate pairs side by side, one pair per row pair of columns, most similar first."""
    n = len(left)
    if n == 0:
        print("No duplicate pairs to show")
        return
    cols = 2 * min(3, n)
    rows = -(-n // (cols // 2))
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k in range(n):
        r, c = divmod(k, cols // 2)
        for side, image in ((0, left[k]), (1, right[k])):
            ax = axes[r, 2 * c + side]
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
            if side == 0:
                ax.set_title(titles[k], fontsize=7, loc="left")
    finish(fig, path)
