"""The steps of notebook 09, each writing its file in OUTPUT_DIR: calibration.json (and the reliability diagram),
label_issues.csv (and the suspects' gallery, the noise rate per class), gradcam.png, and metrics.json with the
analysis' numbers beside the run's own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..files import atomic_write_text
from ..report.record import write_metrics
from ..report.widgets import prediction_browser
from ..train.learner import set_temperature
from .calibration import Calibration, calibrate
from .duplicates import Duplicates
from .gradcam import gradcam_maps, plot_gradcam_grid
from .items import split_items
from .label_issues import LabelIssues, crossfit_probs, find_label_issues
from .plots import plot_gallery, plot_noise_rate, plot_reliability
from .run import AnalysedRun

LABEL_ISSUE_COLUMNS = ["path", "split", "given", "suggested", "score"]
ANALYSIS_NOTEBOOK = "09_error_analysis"


def calibration_step(run: AnalysedRun, seed: int | None = None) -> Calibration:
    """Temperature scaling, reported cross-fitted on the evaluation split (each half scaled by the temperature fitted
    on the other): calibration.json, reliability.png; the model carries the temperature refitted on the whole split
    from here on (predict and exports use it)."""
    with run.timed("calibration"):
        return _calibration(run, seed)


def _calibration(run: AnalysedRun, seed: int | None) -> Calibration:
    ev = run.evaluation
    probs, targets = ev.probs.numpy(), ev.targets.numpy()
    cal = calibrate(probs, targets, run.multi_label, seed=run.cfg.seed if seed is None else seed)
    out = run.cfg.out
    atomic_write_text(out / "calibration.json", json.dumps(cal.to_dict(), indent=2) + "\n")
    plot_reliability(probs, cal.after, targets, run.multi_label, out / "reliability.png")
    set_temperature(run.model, cal.temperature)
    print(cal.summary())
    return cal


def label_issue_step(run: AnalysedRun, folds: int = 4, n_show: int = 18) -> LabelIssues:
    """Out-of-sample probabilities of the training items from a ``folds``-fold cross-fit of the run's recipe,
    then confident learning: label_issues.csv (most suspect first), label_issues.png, noise_rate.png."""
    with run.timed("label_issues"):
        return _label_issues(run, folds, n_show)


def _label_issues(run: AnalysedRun, folds: int, n_show: int) -> LabelIssues:
    items = split_items(run.data, "train")
    probs = crossfit_probs(run.data, folds, out=run.cfg.out / "crossfit")
    issues = find_label_issues(items, probs, run.data.class_names, run.multi_label)
    out = run.cfg.out
    issues.table[LABEL_ISSUE_COLUMNS].to_csv(out / "label_issues.csv", index=False)
    print(
        f"{len(issues.table)} of {len(items)} training labels flagged ({issues.method}); cost: {folds} trainings "
        f"on {folds - 1}/{folds} of the items"
    )
    top = issues.table.head(n_show)
    if len(top):
        images = run.data.images("train", top["item"].tolist())
        titles = [
            f"given {g}\nsuggested {s}\nscore {v:.3f}"
            for g, s, v in zip(top.given, top.suggested, top.score, strict=True)
        ]
        plot_gallery(list(images), titles, out / "label_issues.png")
    plot_noise_rate(issues.noise_rate, out / "noise_rate.png")
    return issues


def suspect_browser(run: AnalysedRun, issues: LabelIssues, interactive: bool | None = None) -> Any:
    """Browse every training item, most suspect label first: its image, given label and out-of-sample prediction
    (a slider in JupyterLab; headless, the first ten as a table)."""
    order = np.argsort(issues.scores, kind="stable")
    labels = run.data.dls.train.dataset.labels
    image = lambda i: run.data.images("train", [int(order[i])])[0]  # noqa: E731
    return prediction_browser(
        image,
        torch.from_numpy(issues.probs[order]),
        labels[torch.from_numpy(order)],
        run.data.class_names,
        interactive=interactive,
    )


def confident_mistakes(run: AnalysedRun, n: int) -> list[int]:
    """Indices of the ``n`` most confident mistakes on the evaluation split (single-label: wrong top class;
    multi-label: the largest |probability - label| over the labels)."""
    probs, targets = run.evaluation.probs.numpy(), run.evaluation.targets.numpy()
    if run.multi_label:
        err = np.abs(probs - targets).max(1)
        order = np.argsort(-err, kind="stable")
        return [int(i) for i in order[err[order] > 0.5][:n]]
    pred = probs.argmax(1)
    wrong = np.flatnonzero(pred != targets)
    return [int(i) for i in wrong[np.argsort(-probs[wrong].max(1), kind="stable")][:n]]


def gradcam_step(run: AnalysedRun, n: int = 8) -> Path | None:
    """Grad-CAM of the ``n`` most confident mistakes (for the predicted class) as gradcam.png; None without one."""
    with run.timed("gradcam"):
        return _gradcam(run, n)


def _gradcam(run: AnalysedRun, n: int) -> Path | None:
    worst = confident_mistakes(run, n)
    if not worst:
        print("No mistakes on the evaluation split: no Grad-CAM grid")
        return None
    images = run.data.images("valid", worst)
    x = normalised(images, run.data.data_cfg)
    probs = run.evaluation.probs.numpy()[worst]
    pred = probs.argmax(1)
    maps = gradcam_maps(run.model, x.float(), pred.tolist())
    names = run.data.class_names
    targets = run.evaluation.targets.numpy()[worst]
    truth = [
        ("+".join(names[j] for j in np.flatnonzero(t)) or "(none)") if run.multi_label else names[int(t)]
        for t in targets
    ]
    titles = [f"predicted {names[p]} {probs[k, p]:.2f}\ntrue {truth[k]}" for k, p in enumerate(pred)]
    return plot_gradcam_grid(images, maps, titles, run.cfg.out / "gradcam.png")


def normalised(images: np.ndarray, data_cfg: dict[str, Any]) -> torch.Tensor:
    """uint8 (n, S, S, 3) images as the model takes them: float NCHW in [0, 1], then the model's mean and std."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255)
    mean = torch.tensor(data_cfg["mean"]).view(1, 3, 1, 1)
    return (x - mean) / torch.tensor(data_cfg["std"]).view(1, 3, 1, 1)


def analysis_record(
    run: AnalysedRun, cal: Calibration, issues: LabelIssues, duplicates: Duplicates, **extra: Any
) -> dict[str, Any]:
    """metrics.json of the analysis: the analysed run's record, with this notebook's name and RUN_DIR, the
    temperature, the calibration numbers, the label issues and duplicates found, the metric recomputed without
    evaluation items that have a copy in train, and the wall time of each step."""
    record = {
        **run.record,
        "notebook": ANALYSIS_NOTEBOOK,
        "run_dir": str(run.run_dir),
        "temperature": cal.temperature,
        "calibration": {k: v for k, v in cal.to_dict().items() if k not in ("first_half", "second_half")},
        "n_label_issues": int(len(issues.table)),
        "label_issue_method": issues.method,
        "n_duplicates": int(len(duplicates.table)),
        "n_exact_duplicates": int((duplicates.table.kind == "exact").sum()),
        "n_eval_with_copy_in_train": int(len(duplicates.leaked)),
        "near_similarity": duplicates.near,
        "metric_value_deduplicated": duplicates.metric_value_deduplicated,
        "step_seconds": dict(run.seconds),
        **extra,
    }
    write_metrics(record, run.cfg.out / "metrics.json")
    return record
