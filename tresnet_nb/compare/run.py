"""Run a backbone comparison: for each candidate, the throughput probe at the run's size on this device, then one
normal training run (the headless train job: the library's recipe for its weights, resumable, tracked), then its row.

A finished candidate keeps its row in its run folder (candidate.json) and is not probed or trained again on a rerun;
an interrupted one resumes from its checkpoint; a failing one is recorded with its error (the traceback in its
folder's error.txt) and the next one runs. comparison.csv and comparison.md are rewritten after every candidate.
"""

from __future__ import annotations

import json
import time
import traceback
from typing import Any

import torch

from ..data import get_dataset
from ..data.highres import eval_cap
from ..files import atomic_write_text
from ..model.load import load_model
from ..model.steps import NUM_CLASSES
from ..probe.measure import probe_model
from ..probe.results import ArchResult
from ..probe.settings import plan as probe_plan
from ..runtime import device as default_device
from ..runtime import device_name
from ..steps.data import dataset_metric
from ..steps.job import train_job
from .candidates import Candidate, ComparisonPlan, epochs_for
from .table import Comparison, paper_columns

ROW_FILE = "candidate.json"  # in a candidate's run folder: its finished row
BUDGET_FILE = "budget.json"  # in OUTPUT_DIR: MINUTES turned into epochs, per candidate, once


def probe_candidate(plan: ComparisonPlan, candidate: Candidate, dev: torch.device) -> dict[str, Any]:
    """The probe's columns for ``candidate``: training and inference img/s at the run's size and precision on
    ``dev`` by the probe's protocol (random weights, as speed does not depend on them, and its 1000-class head), the
    maximal training batch where ``dev`` has memory to search (CUDA), parameters and multiply-adds per image."""
    cfg = plan.cfg
    settings = probe_plan(dev, cfg.preset, archs=(candidate.arch,), img_size=cfg.img_size, precision=cfg.precision)
    model = load_model(candidate.arch.partition(".")[0], None, num_classes=NUM_CLASSES)
    result: ArchResult = probe_model(model, candidate.arch, settings, dev)
    del model
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    train, infer = result.train, result.infer
    assert train is not None and infer is not None  # mode 'both'
    return {
        "train_img_s": round(train.images_per_second, 2),
        "infer_img_s": round(infer.images_per_second, 2),
        "train_ms_per_img": round(1000 / train.images_per_second, 4),
        "infer_ms_per_img": round(1000 / infer.images_per_second, 4),
        "max_batch": result.shown_max_batch("train"),  # None off CUDA: no estimate stands in for a measurement
        "params_m": round(result.parameters / 1e6, 3),
        "gmacs": round(result.flops_per_image / 2e9, 4) if result.flops_per_image is not None else None,
        "probe": f"{settings.precision}, batch {train.batch_size} ({result.batch_note})",
    }


def budget_epochs(plan: ComparisonPlan, candidate: Candidate, speed: dict[str, Any], sizes: tuple[int, int]) -> dict:
    """The epochs of ``candidate`` under the plan's budget: EPOCHS as given, or MINUTES turned into epochs from
    ``speed`` once and recorded in budget.json (a rerun with the same MINUTES reads them back)."""
    budget = plan.budget
    if budget.minutes is None:
        return {"epochs": budget.epochs, "budget_minutes": None, "epoch_seconds_estimate": None}
    entry, recorded = _budget_entry(plan, candidate)
    if entry is None:  # measured once per budget, then read back
        epochs, epoch_s = epochs_for(budget.minutes, *sizes, speed["train_img_s"], speed["infer_img_s"])
        entry = {"epochs": epochs, "budget_minutes": budget.minutes, "epoch_seconds_estimate": round(epoch_s, 2)}
        recorded[plan.run_dir(candidate).name] = entry
        atomic_write_text(plan.cfg.out / BUDGET_FILE, json.dumps(recorded, indent=2, sort_keys=True) + "\n")
    return dict(entry)


def _budget_entry(plan: ComparisonPlan, candidate: Candidate) -> tuple[dict | None, dict]:
    """What budget.json recorded for ``candidate`` under the plan's MINUTES (None if nothing), and the whole record."""
    path = plan.cfg.out / BUDGET_FILE
    recorded = json.loads(path.read_text()) if path.is_file() else {}
    entry = recorded.get(plan.run_dir(candidate).name)
    return (entry if entry and entry["budget_minutes"] == plan.budget.minutes else None), recorded


def recorded_epochs(plan: ComparisonPlan, candidate: Candidate) -> int | None:
    """The epochs of ``candidate`` under the plan's budget when known without measuring: EPOCHS, or what MINUTES
    became on an earlier run (budget.json); None when MINUTES has not been turned into epochs yet."""
    if plan.budget.minutes is None:
        return plan.budget.epochs
    entry, _ = _budget_entry(plan, candidate)
    return entry["epochs"] if entry else None


def finished_row(plan: ComparisonPlan, candidate: Candidate) -> dict[str, Any] | None:
    """The row ``candidate`` wrote when its run of this very configuration (data, size, seed, weights, epochs, ...)
    finished, else None: adding, removing or reordering candidates leaves the finished ones as they are."""
    saved = plan.run_dir(candidate) / ROW_FILE
    epochs = recorded_epochs(plan, candidate)
    if not saved.is_file() or epochs is None:
        return None
    row = json.loads(saved.read_text())
    if row.get("config_key") != plan.candidate_config(candidate, epochs).key:
        return None
    return {**row, "status": "finished earlier"}


def run_candidate(plan: ComparisonPlan, candidate: Candidate, ds: Any, dev: torch.device) -> dict[str, Any]:
    """Probe and train ``candidate`` and return its row (also written to its run folder's candidate.json)."""
    folder = plan.run_dir(candidate)
    saved = folder / ROW_FILE
    spec = get_dataset(plan.cfg.dataset)
    n_train = min(len(ds["train"]), plan.cfg.max_items or len(ds["train"]))
    n_eval = min(
        len(ds[spec.eval_split]), eval_cap(plan.cfg.max_items, len(ds.class_names)) or len(ds[spec.eval_split])
    )
    speed = probe_candidate(plan, candidate, dev)
    budget = budget_epochs(plan, candidate, speed, (n_train, n_eval))
    cfg = plan.candidate_config(candidate, budget["epochs"])
    record = train_job(cfg)
    row = {
        "candidate": candidate.label,
        "arch": candidate.arch,
        "weights": cfg.weights,
        "pretrained": bool(record["pretrained"]),
        "weights_source": record["weights_source"],
        "metric": record["metric_name"],
        "metric_value": record["metric_value"],
        **speed,
        **budget,
        "train_seconds": record["train_seconds"],
        **paper_columns(candidate.arch),
        "fixture_data": record.get("fixture_data"),
        "run_dir": str(folder),
        "error": None,
        "config_key": cfg.key,
    }
    atomic_write_text(saved, json.dumps(row, indent=2) + "\n")
    return {**row, "status": "trained"}


def failed_row(plan: ComparisonPlan, candidate: Candidate, err: BaseException) -> dict[str, Any]:
    """The row of a candidate that failed: its error in one line, the traceback in its folder's error.txt."""
    folder = plan.run_dir(candidate)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "error.txt", "".join(traceback.format_exception(err)))
    message = " ".join(str(err).split())
    return {
        "candidate": candidate.label,
        "arch": candidate.arch,
        "weights": plan.weights_of(candidate),
        **paper_columns(candidate.arch),
        "status": "failed",
        "run_dir": str(folder),
        "error": f"{type(err).__name__}: {message}"[:500],
    }


def compare_backbones(plan: ComparisonPlan, dev: torch.device | None = None) -> Comparison:
    """Run ``plan`` (:func:`tresnet_nb.plan_comparison`) on ``dev`` (default: the first GPU, else the CPU): every
    candidate in turn, writing comparison.csv and comparison.md after each; a failing candidate is recorded with
    its error and the next one runs."""
    dev = dev or default_device()
    cfg = plan.cfg
    spec = get_dataset(cfg.dataset)
    ds = spec.read(cfg.data_root)
    comparison = Comparison(plan, device_name(dev), dataset_metric(spec, ds))
    total = len(plan.candidates)
    for i, candidate in enumerate(plan.candidates, 1):
        start = time.perf_counter()
        row = finished_row(plan, candidate)
        try:
            if row is None:
                print(
                    f"[{i}/{total}] {candidate.label}: speed probe at {cfg.img_size} px, then {plan.budget.text()} ..."
                )
                row = run_candidate(plan, candidate, ds, dev)
        except Exception as err:  # recorded, and the next candidate runs
            row = failed_row(plan, candidate, err)
            print(f"[{i}/{total}] {candidate.label} FAILED: {row['error']} (traceback: {row['run_dir']}/error.txt)")
        else:
            print(
                f"[{i}/{total}] {candidate.label}: {row['metric']} {row['metric_value']:.4f}, "
                f"{'pretrained' if row['pretrained'] else 'random initialisation'}, {row['status']} "
                f"({time.perf_counter() - start:.0f} s)"
            )
        comparison.add(row)
        comparison.write()
    return comparison
