"""A backbone comparison's results: one row per candidate, the Pareto fronts of metric against time per image, the
paper's V100 ranking beside this device's, the sentence that names the choice, and the files (comparison.csv,
comparison.md, metrics.json)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..files import atomic_write_text
from ..paper import IMAGENET_TOP1, PAPER_V100, SPEED_PROTOCOL
from .candidates import ONE_POINT, ComparisonPlan

# comparison.csv, in this order; empty where a value does not exist (max_batch on a CPU, everything but the error
# of a failed candidate)
COLUMNS = (
    "candidate",
    "arch",
    "weights",
    "pretrained",
    "weights_source",
    "metric",
    "metric_value",
    "train_img_s",
    "infer_img_s",
    "train_ms_per_img",
    "infer_ms_per_img",
    "max_batch",
    "params_m",
    "gmacs",
    "epochs",
    "budget_minutes",
    "epoch_seconds_estimate",
    "train_seconds",
    "probe",
    "pareto_train",
    "pareto_infer",
    "paper_train_img_s",
    "paper_infer_img_s",
    "paper_imagenet_top1",
    "status",
    "run_dir",
    "error",
)
MODES = ("train", "infer")


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """Which of ``points`` (time per image, metric) no other point beats: none at most as slow and at least as
    accurate, and better in one of the two."""
    return [
        not any(t2 <= t and m2 >= m and (t2 < t or m2 > m) for j, (t2, m2) in enumerate(points) if j != i)
        for i, (t, m) in enumerate(points)
    ]


def paper_columns(arch: str) -> dict[str, Any]:
    """The paper's V100 speeds and ImageNet top-1 of ``arch`` (its timm name, tag dropped), None where it has none."""
    name = arch.partition(".")[0]
    speed = PAPER_V100.get(name)
    return {
        "paper_train_img_s": speed.train if speed else None,
        "paper_infer_img_s": speed.infer if speed else None,
        "paper_imagenet_top1": IMAGENET_TOP1.get(name),
    }


def _shown(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@dataclass
class Comparison:
    """The rows of a comparison run (:func:`tresnet_nb.compare_backbones`), in the plan's order."""

    plan: ComparisonPlan
    device: str
    metric: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def data_name(self) -> str:
        """The data as the plot and the table name it: the dataset, or for your own images their folder's name."""
        cfg = self.plan.cfg
        if cfg.dataset in ("folder", "csv") and cfg.data_root:
            return f"{Path(cfg.data_root).name} ({cfg.dataset})"
        return cfg.dataset

    @property
    def done(self) -> list[dict[str, Any]]:
        """The candidates that trained and were measured."""
        return [r for r in self.rows if not r.get("error")]

    def add(self, row: dict[str, Any]) -> None:
        """Append a candidate's row and mark the Pareto fronts again."""
        self.rows.append(row)
        self.mark_fronts()

    def mark_fronts(self) -> None:
        """Set each row's ``pareto_train`` / ``pareto_infer`` (None for a failed candidate)."""
        done = self.done
        for mode in MODES:
            front = pareto_front([(r[f"{mode}_ms_per_img"], r["metric_value"]) for r in done])
            for row in self.rows:
                row[f"pareto_{mode}"] = None
            for row, on in zip(done, front, strict=True):
                row[f"pareto_{mode}"] = on

    def best(self) -> dict[str, Any] | None:
        """The most accurate candidate (the first of equals, in the plan's order)."""
        return max(self.done, key=lambda r: r["metric_value"], default=None)

    def near_best(self) -> list[dict[str, Any]]:
        """The candidates within one point of the best metric (the best among them)."""
        best = self.best()
        return [] if best is None else [r for r in self.done if r["metric_value"] >= best["metric_value"] - ONE_POINT]

    def fastest_near_best(self, mode: str) -> dict[str, Any] | None:
        """The fastest candidate in ``mode`` ('train' or 'infer') within one point of the best metric."""
        return max(self.near_best(), key=lambda r: r[f"{mode}_img_s"], default=None)

    def sentence(self) -> str:
        """One sentence naming the most accurate candidate and the fastest within one point of it (and what the
        numbers stand on: random initialisation, failures)."""
        best = self.best()
        if best is None:
            return f"No candidate finished: all {len(self.rows)} failed (see the error column)."
        infer, train = self.fastest_near_best("infer"), self.fastest_near_best("train")

        def named(row: dict[str, Any]) -> str:
            return f"{row['candidate']} ({'pretrained' if row['pretrained'] else 'random initialisation'})"

        if len(self.near_best()) == 1:
            fastest = "no other candidate comes within one point of it"
        elif infer is best and train is best:
            fastest = "it is also the fastest within one point of it, in training and at inference"
        elif infer is train:
            fastest = (
                f"the fastest within one point of it, in training and at inference, is {named(infer)} "
                f"({infer['train_img_s']:.1f} and {infer['infer_img_s']:.1f} img/s, {infer['metric_value']:.4f})"
            )
        else:
            fastest = (
                f"the fastest within one point of it is {named(infer)} at inference ({infer['infer_img_s']:.1f} "
                f"img/s, {infer['metric_value']:.4f}) and {named(train)} in training ({train['train_img_s']:.1f} "
                f"img/s, {train['metric_value']:.4f})"
            )
        notes = []
        scratch = sum(1 for r in self.done if not r["pretrained"])
        if scratch:
            notes.append(
                f"{scratch} of {len(self.done)} trained from random initialisation, so their {self.metric} is not "
                "what pretrained weights would give"
            )
        failed = len(self.rows) - len(self.done)
        if failed:
            notes.append(f"{failed} failed (see the error column)")
        tail = f" ({'; '.join(notes)})" if notes else ""
        return (
            f"Most accurate on this data: {named(best)}, {self.metric} {best['metric_value']:.4f}; {fastest} "
            f"(speeds on {self.device}){tail}."
        )

    def ranking(self) -> list[dict[str, Any]]:
        """The candidates in the paper's speed table: their rank by img/s here and on the paper's V100."""
        rows = [r for r in self.done if r["paper_train_img_s"] is not None]
        out = []
        for r in rows:
            entry: dict[str, Any] = {"candidate": r["candidate"]}
            for mode in MODES:
                here = sorted(rows, key=lambda x: -x[f"{mode}_img_s"])
                paper = sorted(rows, key=lambda x: -x[f"paper_{mode}_img_s"])
                entry[f"{mode} rank here"] = here.index(r) + 1
                entry[f"{mode} rank, paper V100"] = paper.index(r) + 1
            entry["paper ImageNet top-1"] = r["paper_imagenet_top1"]
            out.append(entry)
        return sorted(out, key=lambda e: e["infer rank, paper V100"])

    def ranking_table(self) -> Any:
        """:meth:`ranking` as a pandas DataFrame indexed by candidate (empty without a candidate of the paper's)."""
        import pandas as pd

        ranking = self.ranking()
        return pd.DataFrame(ranking).set_index("candidate") if ranking else pd.DataFrame()

    def table(self) -> Any:
        """The rows as a pandas DataFrame indexed by candidate (the notebook shows it)."""
        import pandas as pd

        return pd.DataFrame([{c: r.get(c) for c in COLUMNS} for r in self.rows]).set_index("candidate")

    def markdown(self) -> str:
        """comparison.md: the table, the ranking beside the paper's and the sentence."""
        cfg = self.plan.cfg
        head = (
            f"# Backbone comparison on {self.data_name} ({cfg.data_root or 'embedded data'})\n\n"
            f"{cfg.img_size} px, {self.plan.budget.text()} per candidate, seed {cfg.seed}; speeds measured on "
            f"{self.device} by the throughput probe's protocol (random tensors, the run's size; a fixed batch off "
            "CUDA, where `max_batch` stays empty). Pareto: no other candidate is both faster and more accurate.\n\n"
        )
        shown = ("candidate", "pretrained", "metric_value", "train_img_s", "infer_img_s", "max_batch", "params_m")
        shown += ("gmacs", "epochs", "train_seconds", "pareto_train", "pareto_infer", "status", "error")
        lines = ["| " + " | ".join(shown) + " |", "|" + " --- |" * len(shown)]
        for r in self.rows:
            cells = [_shown(r.get(c)).replace("|", "/").replace("\n", " ") for c in shown]
            lines.append("| " + " | ".join(cells) + " |")
        ranking = self.ranking()
        rank_text = ""
        if ranking:
            keys = list(ranking[0])
            rank_lines = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
            rank_lines += ["| " + " | ".join(_shown(e[k]) for k in keys) + " |" for e in ranking]
            rank_text = f"\n\n## Speed ranking here and on the paper's V100 ({SPEED_PROTOCOL})\n\n" + "\n".join(
                rank_lines
            )
        return head + "\n".join(lines) + rank_text + f"\n\n{self.sentence()}\n"

    def write(self) -> tuple[Path, Path]:
        """comparison.csv and comparison.md in OUTPUT_DIR (rewritten after every candidate: nothing lost on a crash)."""
        out = self.plan.cfg.out
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows([{c: "" if r.get(c) is None else r.get(c) for c in COLUMNS} for r in self.rows])
        return (
            atomic_write_text(out / "comparison.csv", text.getvalue()),
            atomic_write_text(out / "comparison.md", self.markdown()),
        )

    def record(self) -> dict[str, Any]:
        """metrics.json of the comparison: the contract's keys for its most accurate candidate, and every row."""
        from ..runtime import environment

        cfg = self.plan.cfg
        best = self.best() or {}
        near = self.fastest_near_best("infer") or {}
        return {
            "notebook": cfg.notebook,
            "preset": cfg.preset,
            "dataset": cfg.dataset,
            "arch": best.get("arch"),
            "weights": best.get("weights"),
            "weights_source": best.get("weights_source"),
            "pretrained": best.get("pretrained"),
            "img_size": cfg.img_size,
            "epochs": best.get("epochs"),
            "metric_name": self.metric,
            "metric_value": best.get("metric_value"),
            "paper_target": None,
            "fixture_data": any(r.get("fixture_data") for r in self.done),
            "train_seconds": round(sum(r.get("train_seconds") or 0.0 for r in self.rows), 2),
            "device": self.device,
            "versions": environment()["versions"],
            "best": best.get("candidate"),
            "fastest_within_one_point": near.get("candidate"),
            "sentence": self.sentence(),
            "candidates": self.rows,
        }
