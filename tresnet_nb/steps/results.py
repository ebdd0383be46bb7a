"""The result steps of a notebook run: evaluate with the dataset's metric, show the evaluation as people read it,
write the Kaggle submission, and set our result beside the paper's, saying plainly what was run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from fastai.learner import Learner

from ..data import get_dataset
from ..data.highres import predict_dl
from ..evaluation.metrics import as_columns
from ..evaluation.scores import Evaluation, score
from ..evaluation.submissions import write_submission
from ..report.display import show
from ..report.plots import MAX_NAMED_CLASSES, plot_confusion, plot_predictions, plot_roc_curves
from ..train.learner import predict
from .data import Data, data_config_at


def evaluate(learn: Learner, data: Data, tta: bool | None = None) -> Evaluation:
    """Predict the evaluation split (flip TTA if ``tta``; None: as the run's TTA option says) and score it with the
    dataset's metric."""
    probs, targets = predict(learn, tta=data.cfg.options.tta if tta is None else tta)
    return score(probs, targets, data.class_names, data.task, data.metric)


def show_evaluation(evaluation: Evaluation, data: Data, out: Path | str, n_worst: int = 16) -> None:
    """The evaluation as people read it: the per-label ROC-AUC table and ROC curves (multi-label, or a column-wise
    ROC-AUC metric), the per-class table, confusion matrix and most confident mistakes (single-label); plots saved
    in ``out``."""
    out = Path(out)
    names = data.class_names
    if evaluation.aucs is not None:
        show(pd.DataFrame({"label": list(evaluation.aucs), "roc_auc": list(evaluation.aucs.values())}))
        targets = as_columns(evaluation.targets.numpy(), len(names))  # class indices scored as one-hot columns
        plot_roc_curves(evaluation.probs.numpy(), targets, names, out / "roc_curves.png")
    report = evaluation.report
    if report is None:  # multi-label
        return
    table = report.per_class.sort_values("f1")
    show(table if len(names) <= MAX_NAMED_CLASSES else table.head(20))  # many classes: the 20 weakest
    if len(names) <= MAX_NAMED_CLASSES:
        plot_confusion(report.confusion, names, out / "confusion.png")
    pred, conf = evaluation.probs.argmax(1), evaluation.probs.max(1).values
    wrong = (pred != evaluation.targets).nonzero().flatten()
    worst = wrong[conf[wrong].argsort(descending=True)][:n_worst].tolist()
    if not worst:
        print("No mistakes on the evaluation split")
        return
    plot_predictions(
        data.images("valid", worst),
        evaluation.probs[worst],
        evaluation.targets[worst],
        names,
        out / "mistakes.png",
        n=n_worst,
    )


def kaggle_submission(learn: Learner, data: Data, path: Path | str, tta: bool = False) -> Path | None:
    """Predict the dataset's unlabelled test split and write the Kaggle submission file (Herbarium 2020, Plant
    Pathology 2020) to ``path``; None for datasets without one."""
    if data.cfg.dataset not in ("herbarium2020", "plant_pathology") or "test" not in data.ds.splits:
        return None
    test = data.ds["test"]
    dl = predict_dl(
        test, data.cfg.img_size, data.cfg.batch_size * 2, data_config_at(data.data_cfg, data.cfg.img_size), data.device
    )
    probs, _ = predict(learn, dl=dl, tta=tta)
    return write_submission(data.cfg.dataset, Path(path), test.ids, probs.numpy(), data.ds.meta, test.ids)


def paper_table(record: dict[str, Any]) -> pd.DataFrame:
    """Our result beside the paper's, with what was actually run (preset, architecture, size, epochs, weights)."""
    spec = get_dataset(record["dataset"])
    ours = (
        f"{record['metric_value']:.4f} {record['metric_name']}; {record['arch']} at {record['img_size']} px, "
        f"{record['epochs']} epochs, preset {record['preset']}, "
        f"{'pretrained' if record['pretrained'] else 'RANDOM weights (not pretrained)'}"
    )
    if record.get("max_items"):
        ours += f", at most {record['max_items']} training items"
    paper = spec.paper_result
    if spec.paper_target is not None:
        gap = record["metric_value"] - spec.paper_target
        verdict = (
            f"{gap:+.4f} against the paper"
            if record["pretrained"] and record["preset"] == "paper"
            else "not comparable: a reduced run (see what was run)"
        )
    elif spec.paper_result == "-":
        verdict = "the paper has no result on this dataset: nothing to compare with"
    else:
        verdict = "the paper reports a leaderboard place, not a score on this split"
    return pd.DataFrame({"": ["ours", "paper", "comparison"], spec.description.split(" (")[0]: [ours, paper, verdict]})
