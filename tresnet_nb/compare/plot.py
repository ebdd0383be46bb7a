"""The comparison's picture: the metric against time per image, in training and at inference on this device, each
with its Pareto front, and the paper's own trade-off (ImageNet top-1 against V100 time per image) beside them for
the candidates in its table. Pretrained candidates are filled, those from random initialisation hollow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter, ScalarFormatter

from ..report.display import finish
from .table import Comparison, pareto_front


def _scatter(ax: Any, rows: list[dict[str, Any]], x_key: str, y_key: str, front: list[bool], pretrained: bool) -> None:
    for row, on in zip(rows, front, strict=True):
        filled = row["pretrained"] if pretrained else True
        ax.scatter(
            row[x_key],
            row[y_key],
            s=60,
            marker="o",
            facecolors="C0" if filled else "none",
            edgecolors="C3" if on else "C0",
            linewidths=2 if on else 1,
            zorder=3,
        )
        ax.annotate(_short(row, rows), (row[x_key], row[y_key]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    chosen = sorted((r[x_key], r[y_key]) for r, on in zip(rows, front, strict=True) if on)
    if len(chosen) > 1:
        ax.plot(*zip(*chosen, strict=True), color="C3", linewidth=1, zorder=2, label="Pareto front")
        ax.legend(fontsize=7, loc="lower right")
    xs = [r[x_key] for r in rows]
    if min(xs) > 0 and max(xs) / min(xs) > 4:  # a wide spread of speeds: a log axis, labelled in plain numbers
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.margins(x=0.25, y=0.15)


def _short(row: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """A point's label: the architecture, with its weights where another candidate has the same architecture."""
    same = sum(1 for r in rows if r["arch"] == row["arch"])
    if same == 1:
        return row["arch"]
    return f"{row['arch']} ({Path(row['weights']).stem[:20] if row['weights'] else 'none'})"


def plot_comparison(comparison: Comparison, path: Path | str | None = None) -> None:
    """The comparison's trade-off plot (comparison.png): see the module's description."""
    rows = comparison.done
    paper_rows = [r for r in rows if r.get("paper_infer_img_s") and r.get("paper_imagenet_top1")]
    panels = 3 if paper_rows else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.8), squeeze=False)
    cfg = comparison.plan.cfg
    scratch = sum(1 for r in rows if not r["pretrained"])
    for ax, mode, title in zip(axes[0], ("train", "infer"), ("training", "inference"), strict=False):
        front = [bool(r[f"pareto_{mode}"]) for r in rows]  # marked by Comparison.add
        _scatter(ax, rows, f"{mode}_ms_per_img", "metric_value", front, pretrained=True)
        ax.set(
            title=f"{title} on {comparison.device.split(':', 1)[-1].strip()[:30]}, {cfg.img_size} px",
            xlabel="ms per image (left is faster)",
            ylabel=f"{comparison.metric} on {comparison.data_name}",
        )
    if paper_rows:
        ax = axes[0][2]
        paper_rows = [{**r, "paper_infer_ms_per_img": 1000 / r["paper_infer_img_s"]} for r in paper_rows]
        front = pareto_front([(r["paper_infer_ms_per_img"], r["paper_imagenet_top1"]) for r in paper_rows])
        _scatter(ax, paper_rows, "paper_infer_ms_per_img", "paper_imagenet_top1", front, pretrained=False)
        ax.set(
            title="the paper: V100 inference, 224 px, mixed precision",
            xlabel="ms per image on a V100",
            ylabel="ImageNet top-1 (%)",
        )
    note = (
        f"filled: pretrained; hollow: random initialisation ({scratch} of {len(rows)})"
        if scratch
        else "all candidates pretrained"
    )
    fig.suptitle(f"{comparison.metric} against time per image; red: Pareto front. {note}", fontsize=9)
    finish(fig, path)
