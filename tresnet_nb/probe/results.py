"""What the probe found: one :class:`ArchResult` per architecture and the run's :class:`ProbeReport` (the paper's
table beside ours, the details, JSON and CSV), and their readings: :func:`relative_table`, :func:`verdict` and
:func:`metrics_record` (the run's metrics.json)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..files import atomic_write_text
from ..model.archs import split_arch
from ..paper import PAPER_V100, SPEED_PROTOCOL
from .settings import TABLE_COLUMNS, ProbeSettings
from .timing import Timing

PAPER_PREFIX = "paper V100 224 px: "  # the paper's columns in the table: where and at what size they were measured


@dataclass
class ArchResult:
    """The measurements of one architecture (None where the mode or device did not allow it)."""

    arch: str
    parameters: int
    batch_note: str
    train: Timing | None = None
    infer: Timing | None = None
    max_train_batch: int | None = None  # measured (CUDA search)
    max_infer_batch: int | None = None
    max_train_batch_capped: bool = False  # the search reached its cap: the maximum is >= max_train_batch
    max_infer_batch_capped: bool = False
    saved_bytes_per_image: float | None = None
    saved_bytes_fixed: int | None = None  # saved once per step whatever the batch (autocast's weight copies)
    max_train_batch_estimate: int | None = None
    peak_memory_bytes: int | None = None  # CUDA allocator peak over the training timing
    flops_per_image: int | None = None

    def achieved_flops(self, mode: str) -> float | None:
        """FLOP/s achieved in ``mode``: the forward's FLOPs per image x img/s, x3 in training (backward ~ 2x)."""
        timing = self.train if mode == "train" else self.infer
        if timing is None or self.flops_per_image is None:
            return None
        return self.flops_per_image * (3 if mode == "train" else 1) * timing.images_per_second

    def shown_max_batch(self, mode: str) -> str | None:
        """The measured maximal ``mode`` batch as the tables show it: 'N', '>= N' when the search was capped, or
        None when it was not measured."""
        largest = getattr(self, f"max_{mode}_batch")
        if largest is None:
            return None
        return f">= {largest}" if getattr(self, f"max_{mode}_batch_capped") else str(largest)

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["max_train_batch_shown"] = self.shown_max_batch("train")
        record["max_infer_batch_shown"] = self.shown_max_batch("infer")
        record["train"] = self.train.to_dict() if self.train else None
        record["infer"] = self.infer.to_dict() if self.infer else None
        record["achieved_train_flops"] = self.achieved_flops("train")
        record["achieved_infer_flops"] = self.achieved_flops("infer")
        return record


@dataclass
class ProbeReport:
    """A probe run: its settings, the device and versions, the matmul peak and one result per architecture."""

    settings: ProbeSettings
    device: str
    environment: dict[str, Any]
    budget_bytes: float
    matmul_peak_flops: float | None
    results: list[ArchResult] = field(default_factory=list)
    seconds: float = 0.0

    def table(self) -> pd.DataFrame:
        """The paper's table layout, ours beside the paper's V100 numbers; the header says where each was measured
        (ours: this device, size and precision; the paper's: V100, 224 px, mixed precision), and an estimated
        maximal batch says so, with its size and memory."""
        measured = any(r.max_train_batch is not None for r in self.results)
        size = self.settings.img_size
        batch_col = (
            TABLE_COLUMNS[2]
            if measured
            else f"{TABLE_COLUMNS[2]} (estimated at {size} px, {self.budget_bytes / 2**30:g} GiB)"
        )
        rows = []
        for r in self.results:
            paper = PAPER_V100.get(split_arch(r.arch)[0])
            rows.append(
                {
                    "Model": r.arch,
                    TABLE_COLUMNS[0]: round(r.train.images_per_second, 1) if r.train else None,
                    TABLE_COLUMNS[1]: round(r.infer.images_per_second, 1) if r.infer else None,
                    batch_col: r.shown_max_batch("train") if measured else r.max_train_batch_estimate,
                    f"{PAPER_PREFIX}{TABLE_COLUMNS[0]}": paper.train if paper else None,
                    f"{PAPER_PREFIX}{TABLE_COLUMNS[1]}": paper.infer if paper else None,
                    f"{PAPER_PREFIX}{TABLE_COLUMNS[2]}": paper.max_batch if paper else None,
                }
            )
        frame = pd.DataFrame(rows).set_index("Model")
        frame.columns.name = f"ours: {size} px, {self.settings.precision}, {self.device}; paper: {SPEED_PROTOCOL}"
        return frame

    def details(self) -> pd.DataFrame:
        """Everything measured per architecture: batch, ms/step and spread, memory, FLOPs and their share of the
        matmul peak."""
        rows = []
        for r in self.results:
            row: dict[str, Any] = {"Model": r.arch, "params (M)": round(r.parameters / 1e6, 2), "batch": r.batch_note}
            for mode in ("train", "infer"):
                if r.shown_max_batch(mode) is not None:
                    row[f"max {mode} batch"] = r.shown_max_batch(mode)
                t = getattr(r, mode)
                if t is not None:
                    row[f"{mode} batch"] = t.batch_size
                    row[f"{mode} ms/step"] = round(t.ms_per_step, 2)
                    row[f"{mode} spread"] = f"{100 * t.spread:.1f}%"
                    achieved = r.achieved_flops(mode)
                    if achieved is not None:
                        row[f"{mode} GFLOP/s"] = round(achieved / 1e9, 1)
                        if self.matmul_peak_flops:
                            row[f"{mode} % of matmul peak"] = round(100 * achieved / self.matmul_peak_flops, 1)
            if r.flops_per_image is not None:
                row["GFLOPs/image"] = round(r.flops_per_image / 1e9, 2)
            if r.saved_bytes_per_image is not None:
                row["saved MiB/image"] = round(r.saved_bytes_per_image / 2**20, 2)
            if r.peak_memory_bytes is not None:
                row["peak MiB"] = round(r.peak_memory_bytes / 2**20)
            rows.append(row)
        return pd.DataFrame(rows).set_index("Model")

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": asdict(self.settings),
            "device": self.device,
            "environment": self.environment,
            "budget_bytes": self.budget_bytes,
            "matmul_peak_flops": self.matmul_peak_flops,
            "seconds": self.seconds,
            "paper_v100": {k: asdict(v) for k, v in PAPER_V100.items()},
            "results": [r.to_dict() for r in self.results],
        }

    def to_json(self, path: Path | str) -> Path:
        """The whole report as JSON at ``path``, written atomically; returns the path."""
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, default=str) + "\n")
        return path

    def to_csv(self, path: Path | str) -> Path:
        """The table and the details side by side at ``path``, one row per architecture, with the device and
        settings; returns the path."""
        path = Path(path)
        frame = self.table().join(self.details())
        frame.insert(0, "img_size", self.settings.img_size)
        frame.insert(1, "precision", self.settings.precision)
        frame.insert(2, "channels_last", self.settings.channels_last)
        frame.insert(3, "device", self.device)
        atomic_write_text(path, frame.to_csv())
        return path


def relative_table(report: ProbeReport, baseline: str = "resnet50") -> pd.DataFrame | None:
    """Each architecture's speed in ``report`` relative to ``baseline`` measured in the same run, beside the same
    ratio in the paper's V100 table: the comparison that carries across devices better than raw img/s (None without
    the baseline). Ratios still depend on the device: a CPU favours fewer FLOPs, a GPU TResNet's GPU-friendly
    design."""
    base = next((r for r in report.results if split_arch(r.arch)[0] == baseline), None)
    if base is None:
        return None
    rows = []
    for r in report.results:
        name = split_arch(r.arch)[0]
        paper, paper_base = PAPER_V100.get(name), PAPER_V100.get(baseline)
        row: dict[str, Any] = {"Model": r.arch}
        for mode in ("train", "infer"):
            ours, theirs = getattr(r, mode), getattr(base, mode)
            if ours is not None and theirs is not None:
                row[f"{mode} vs {baseline} (ours)"] = round(ours.images_per_second / theirs.images_per_second, 2)
                if paper and paper_base:
                    row[f"{mode} vs {baseline} (paper)"] = round(getattr(paper, mode) / getattr(paper_base, mode), 2)
        rows.append(row)
    return pd.DataFrame(rows).set_index("Model")


def verdict(report: ProbeReport) -> str:
    """One honest sentence on how ``report`` compares with the paper's table."""
    s = report.settings
    protocol = s.img_size == 224 and s.precision in ("fp16", "bf16") and any(r.max_train_batch for r in report.results)
    where = f"{report.device}, {s.img_size} px, {s.precision}, batch: {report.results[0].batch_note}"
    if protocol and report.device.startswith("cuda"):
        return (
            f"Measured with the paper's protocol on {where}: comparable to the paper's V100 table up to the GPU model."
        )
    return (
        f"Measured on {where}: not the paper's protocol (V100, mixed precision, 224 px, 90% of the maximal batch), "
        "so the raw img/s are not comparable with the paper's; the ratios between architectures are."
    )


def metrics_record(report: ProbeReport, notebook: str = "01_throughput_probe", preset: str = "cpu") -> dict[str, Any]:
    """metrics.json of the probe run ``report`` (``notebook``, ``preset``): the first architecture's training img/s
    beside the paper's V100 number."""
    first = report.results[0]
    arch = split_arch(first.arch)[0]
    timing = first.train or first.infer
    name = "train_images_per_second" if first.train else "infer_images_per_second"
    paper = PAPER_V100.get(arch)
    target = (paper.train if first.train else paper.infer) if paper else None
    return {
        "notebook": notebook,
        "preset": preset,
        "dataset": "none (random tensors)",
        "arch": first.arch,
        "weights": "none",
        "weights_source": "random",
        "pretrained": False,
        "img_size": report.settings.img_size,
        "epochs": None,
        "metric_name": name,
        "metric_value": float(timing.images_per_second),
        "paper_target": target,
        "paper_device": SPEED_PROTOCOL,
        "train_seconds": round(report.seconds, 2),
        "device": report.device,
        "versions": report.environment["versions"],
        "probe": report.to_dict(),
    }
