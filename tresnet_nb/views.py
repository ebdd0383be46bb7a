"""Plots and notebook views. Every figure is saved as PNG in the run folder and shown when a notebook runs it;
headless (papermill, scripts) the PNG and a printed text are the fallback."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from .models import WeightsInfo


def in_notebook() -> bool:
    """True inside a Jupyter kernel (JupyterLab, Colab, papermill), False in a terminal or script."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def show(obj: Any) -> None:
    """Display ``obj`` (DataFrame, dict as a two-column table, Markdown, figure) in a notebook, or print it."""
    if isinstance(obj, dict):
        obj = pd.DataFrame([(k, v if isinstance(v, str) else repr(v)) for k, v in obj.items()], columns=["", "value"])
    if in_notebook():
        from IPython.display import display

        display(obj)
    else:
        print(obj.to_string() if isinstance(obj, pd.DataFrame) else obj)


def _finish(fig: plt.Figure, path: Path | str | None) -> None:
    """Save ``fig`` to ``path`` (if given), show it in a notebook, and free it."""
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    if in_notebook():
        from IPython.display import display

        display(fig)
    plt.close(fig)


def weights_banner(info: WeightsInfo) -> str:
    """A plain statement of where the weights came from; loud when they are random."""
    if info.pretrained:
        text = f"**Weights:** {info.arch} pretrained, from {info.source} `{info.location}`; head: {info.head}."
    else:
        reason = f" Reason: {info.note}" if info.note else " (asked for: random initialisation)"
        text = f"**Weights: RANDOM initialisation** for {info.arch}; results are from training from scratch.{reason}"
    if in_notebook():
        from IPython.display import Markdown, display

        display(Markdown(text))
    else:
        print(text.replace("**", "").replace("`", ""))
    return text


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
    _finish(fig, path)


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
    _finish(fig, path)


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
    _finish(fig, path)


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
    _finish(fig, path)


def plot_throughput(report: Any, path: Path | str | None = None) -> None:
    """A :class:`tresnet_nb.probe.ProbeReport` as bars: training and inference img/s per architecture, ours beside
    the paper's V100 numbers, on a log scale (a CPU and a V100 differ by two orders of magnitude)."""
    from .probe import PAPER_V100

    archs = [r.arch for r in report.results]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    x = np.arange(len(archs))
    for ax, mode, title in zip(axes, ("train", "infer"), ("training", "inference"), strict=True):
        ours = [getattr(r, mode).images_per_second if getattr(r, mode) else np.nan for r in report.results]
        paper = [getattr(PAPER_V100[a.split(".")[0]], mode) if a.split(".")[0] in PAPER_V100 else np.nan
                 for a in archs]  # fmt: skip
        bars = ax.bar(x - 0.2, ours, 0.4, label=f"ours ({report.device.split(':', 1)[-1].strip()[:28]})")
        ax.bar(x + 0.2, paper, 0.4, label="paper (V100, mixed precision)", color="0.7")
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
        ax.set(title=f"{title}, {report.settings.img_size} px, {report.settings.precision}", ylabel="img/s",
               yscale="log", xticks=x)  # fmt: skip
        ax.set_xticklabels(archs, fontsize=8)
        ax.legend(fontsize=7)
    _finish(fig, path)


def plot_memory(saved_mib: dict[str, float], title: str, path: Path | str | None = None) -> None:
    """Horizontal bars of activation memory saved for backward (MiB per image), one per variant, with each one's
    ratio to the first."""
    names, values = list(saved_mib), np.array(list(saved_mib.values()), dtype=float)
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(names)))
    bars = ax.barh(names[::-1], values[::-1])
    ax.bar_label(bars, labels=[f"{v:.2f} MiB (x{v / values[0]:.2f})" for v in values[::-1]], fontsize=8)
    ax.set(xlabel="saved for backward, MiB per image", title=title, xlim=(0, values.max() * 1.35))
    _finish(fig, path)


def plot_lr_find(
    lrs: Sequence[float], losses: Sequence[float], suggestion: float, path: Path | str | None = None
) -> None:
    """The learning-rate finder's smoothed loss against the learning rate (log scale), the suggestion marked."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(lrs, losses)
    ax.axvline(suggestion, color="tab:red", linestyle="--", label=f"suggested {suggestion:.2e}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="loss (smoothed)")
    ax.legend(fontsize=8)
    _finish(fig, path)


def plot_confusion(confusion: np.ndarray, class_names: Sequence[str], path: Path | str | None = None) -> None:
    """The confusion matrix, rows normalised (true class), with counts in the cells."""
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
                ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")  # fmt: skip
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, fraction=0.046)
    _finish(fig, path)


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
            fontsize=6.5, color="green" if ok else "red",
        )  # fmt: skip
    _finish(fig, path)


def config_table(cfg: Any) -> pd.DataFrame:
    """The run's configuration as a two-column table (parameter, value)."""
    return pd.DataFrame([(k.upper(), repr(v)) for k, v in cfg.to_dict().items()], columns=["parameter", "value"])


def use_widgets(interactive: bool | None) -> bool:
    """Whether to show widgets: ``interactive`` if given, else when running in a notebook kernel with ipywidgets."""
    if interactive is not None:
        return bool(interactive)
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return in_notebook()


def _png(img: np.ndarray, scale: int) -> bytes:
    import io

    from PIL import Image

    pil = Image.fromarray(img if img.ndim == 3 else np.stack([img] * 3, -1))
    buf = io.BytesIO()
    pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST).save(buf, "PNG")
    return buf.getvalue()


def _caption(probs: torch.Tensor, target: Any, class_names: Sequence[str], top: int) -> str:
    row = torch.as_tensor(target)
    if row.ndim == 1:  # multi-label: the true labels and every label's probability
        true = "+".join(class_names[int(j)] for j in row.nonzero().flatten()) or "(none)"
        return f"true: {true}; " + ", ".join(f"{n} {float(p):.2f}" for n, p in zip(class_names, probs, strict=True))
    values, idx = probs.topk(min(top, len(probs)))
    ranked = ", ".join(f"{class_names[int(i)]} {float(v):.2f}" for v, i in zip(values, idx, strict=True))
    verdict = "right" if int(idx[0]) == int(row) else "wrong"
    return f"true: {class_names[int(row)]} — {verdict}; top {len(idx)}: {ranked}"


def prediction_browser(
    images: np.ndarray | Callable[[int], np.ndarray], probs: torch.Tensor, targets: torch.Tensor,
    class_names: Sequence[str], interactive: bool | None = None, top: int = 3, scale: int = 3,
) -> Any:  # fmt: skip
    """Browse the predictions one image at a time: a slider, the image and its top classes (every label's
    probability for multi-label) in a live notebook; headless (``interactive`` False, or no notebook), the first ten
    as a table. ``images`` is an array, or a function giving item ``i``'s image (files are then read one at a
    time). Returns the widget or the table."""
    if not use_widgets(interactive):
        rows = [(i, _caption(probs[i], targets[i], class_names, top)) for i in range(min(10, len(targets)))]
        table = pd.DataFrame(rows, columns=["item", "prediction"])
        show(table)
        return table
    import ipywidgets as widgets
    from IPython.display import display

    slider = widgets.IntSlider(value=0, min=0, max=len(targets) - 1, description="item", continuous_update=False)
    # flex-start: in JupyterLab an Image in a VBox otherwise stretches to the output's width (a 1200 px thumbnail)
    picture = widgets.Image(format="png", layout=widgets.Layout(align_self="flex-start"))
    caption = widgets.HTML()

    def update(change: dict | None = None) -> None:
        i = slider.value
        picture.value = _png(images(i) if callable(images) else images[i], scale)
        caption.value = f"<code>{_caption(probs[i], targets[i], class_names, top)}</code>"

    slider.observe(update, names="value")
    update()
    box = widgets.VBox([slider, picture, caption])
    display(box)
    return box


class ConfigPicker:
    """Pickers for a run's architecture, weights and dataset: dropdowns in a live notebook (pick, then run the cells
    below), nothing when headless. :meth:`config` is the run's configuration with the picks (saved again when they
    changed it)."""

    def __init__(self, cfg: Any, datasets: Sequence[str] | None = None, interactive: bool | None = None) -> None:
        from .datasets import DATASETS
        from .models import ARCHS

        self.cfg, self.widget = cfg, None
        if not use_widgets(interactive):
            return
        import ipywidgets as widgets
        from IPython.display import display

        archs = sorted({*ARCHS, cfg.arch})  # a tagged arch ('tresnet_m.miil_in21k') stays pickable
        weights = sorted({"auto", "none", cfg.weights})
        names = sorted({*(datasets or DATASETS), cfg.dataset})
        self.arch = widgets.Dropdown(options=archs, value=cfg.arch, description="ARCH")
        self.weights = widgets.Dropdown(options=weights, value=cfg.weights, description="WEIGHTS")
        self.dataset = widgets.Dropdown(options=names, value=cfg.dataset, description="DATASET")
        self.widget = widgets.HBox([self.arch, self.weights, self.dataset])
        display(self.widget)

    def config(self) -> Any:
        """The configuration with the picked values (unchanged when headless or nothing was changed)."""
        if self.widget is None:
            return self.cfg
        picked = {"arch": self.arch.value, "weights": self.weights.value, "dataset": self.dataset.value}
        if all(getattr(self.cfg, k) == v for k, v in picked.items()):
            return self.cfg
        cfg = self.cfg.with_changes(**picked)
        cfg.save()
        return cfg
