"""The steps the dataset notebooks share, so that each notebook is a short list of calls: open the data as the
model takes it, evaluate with the dataset's metric, write the record and the Kaggle submission, and set our result
beside the paper's, saying plainly what was run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from torch import nn

from .config import RunConfig
from .datasets import Dataset, DatasetSpec, get_dataset
from .datasets.arrays import array_dls, load_splits
from .datasets.highres import decode_resized, predict_dl, prepare_file_dls
from .distributed import main_first
from .metrics import ClassificationReport, classify_report, column_aucs, macro_f1, mean_average_precision
from .models import data_config, weights_info
from .report import build_metrics
from .submissions import write_submission
from .train import predict

TASK_METRIC = {"single-label": "accuracy", "multi-label": "mean_roc_auc"}  # when the data's task is not the spec's


@dataclass
class Data:
    """A dataset opened for a run: its table entry, the items, and DataLoaders at the run's size."""

    cfg: RunConfig
    spec: DatasetSpec
    ds: Dataset
    data_cfg: dict[str, Any]
    device: torch.device
    dls: DataLoaders = field(init=False)

    def __post_init__(self) -> None:
        self.dls = self.dls_for(self.cfg.img_size, self.cfg.batch_size)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.ds.class_names)

    @property
    def task(self) -> str:
        return self.ds.task

    @property
    def metric(self) -> str:
        return self.spec.metric if self.ds.task == self.spec.task else TASK_METRIC[self.ds.task]

    def dls_for(self, size: int, batch_size: int) -> DataLoaders:
        """DataLoaders at ``size`` px and ``batch_size``: in memory for image arrays (capped and stratified by
        MAX_ITEMS), else the checked image files, resized once into the cache (rank 0 first under torchrun)."""
        data_cfg = data_config_at(self.data_cfg, size)
        if self.ds["train"].images is not None:
            splits = load_splits(self.cfg.dataset, self.cfg.data_root, self.cfg.max_items)
            return array_dls(splits, size, batch_size, data_cfg, self.device)
        with main_first():
            return prepare_file_dls(self.ds, self.spec.eval_split, size, batch_size, data_cfg, self.device,
                                    self.cfg.out, max_items=self.cfg.max_items, seed=self.cfg.seed,
                                    balanced=bool(self.cfg.extra.get("balanced")))  # fmt: skip

    def images(self, which: str, indices: np.ndarray | list[int]) -> np.ndarray:
        """uint8 (n, S, S, 3) images of the ``which`` ('train' or 'valid') loader's items at ``indices``."""
        dataset = (self.dls.train if which == "train" else self.dls.valid).dataset
        if hasattr(dataset, "images"):  # in memory
            return dataset.images[list(indices)].permute(0, 2, 3, 1).numpy()
        size = dataset.size
        return np.stack([np.asarray(decode_resized(dataset.split.paths[i], size, None)) for i in indices])

    def valid_image(self, i: int) -> np.ndarray:
        """The evaluation loader's item ``i`` as a uint8 (S, S, 3) image (for the prediction browser)."""
        return self.images("valid", [i])[0]


def data_config_at(data_cfg: dict[str, Any], size: int) -> dict[str, Any]:
    """``data_cfg`` (the model's preprocessing) with its input size set to ``size``."""
    return {**data_cfg, "input_size": (3, size, size)}


def open_data(cfg: RunConfig, model: nn.Module, device: torch.device, ds: Dataset | None = None) -> Data:
    """The dataset of ``cfg`` read from DATA_ROOT (unless ``ds`` is given) and opened for ``model``."""
    spec = get_dataset(cfg.dataset)
    if ds is None:
        ds = spec.read(cfg.data_root)
    return Data(cfg, spec, ds, data_config(model, cfg.img_size), device)


@dataclass(frozen=True)
class Evaluation:
    """A run's predictions on the evaluation split and its metrics."""

    metric_name: str
    metric_value: float
    probs: torch.Tensor
    targets: torch.Tensor
    report: ClassificationReport | None  # single-label
    aucs: dict[str, float] | None  # multi-label: ROC-AUC per label
    mean_ap: float | None  # multi-label

    def extras(self) -> dict[str, Any]:
        """The secondary numbers for metrics.json."""
        out: dict[str, Any] = {"n_eval": len(self.targets)}
        if self.report is not None:
            out.update(top1=self.report.top1, top5=self.report.top5, macro_f1=self.report.macro_f1)
        if self.aucs is not None:
            out.update(column_auc=self.aucs, mean_ap=self.mean_ap)
        return out


def evaluate(learn: Learner, data: Data, tta: bool = False) -> Evaluation:
    """Predict the evaluation split (flip TTA if ``tta``) and score it with the dataset's metric."""
    probs, targets = predict(learn, tta=tta)
    names = data.class_names
    if data.task == "multi-label":
        p, t = probs.numpy(), targets.numpy()
        aucs = column_aucs(p, t, names)
        return Evaluation("mean_roc_auc", float(np.mean(list(aucs.values()))), probs, targets, None, aucs,
                          mean_average_precision(p, t))  # fmt: skip
    report = classify_report(probs, targets, names)
    metric = data.metric
    value = report.top1 if metric == "accuracy" else macro_f1(probs.numpy(), targets.numpy(), len(names))
    return Evaluation(metric, float(value), probs, targets, report, None, None)


def run_metrics(
    cfg: RunConfig, model: nn.Module, evaluation: Evaluation, result: Any, learn: Learner, **extra: Any
) -> dict[str, Any]:
    """The metrics.json record of a notebook or job run."""
    return build_metrics(
        cfg, weights_info(model), evaluation.metric_name, evaluation.metric_value, result.seconds,
        paper_target=get_dataset(cfg.dataset).paper_target, **evaluation.extras(), recipe=result.recipe,
        lr=result.lr, precision=getattr(learn, "precision", None), resumed_from=result.resumed_from,
        train_images_per_second=round(result.images_per_second, 1), epochs=result.epochs,
        options=getattr(learn, "options", None), max_items=cfg.max_items, **extra,
    )  # fmt: skip


def kaggle_submission(learn: Learner, data: Data, path: Path | str, tta: bool = False) -> Path | None:
    """Predict the dataset's unlabelled test split and write the Kaggle submission file (Herbarium 2020, Plant
    Pathology 2020) to ``path``; None for datasets without one."""
    if data.cfg.dataset not in ("herbarium2020", "plant_pathology") or "test" not in data.ds.splits:
        return None
    test = data.ds["test"]
    dl = predict_dl(test, data.cfg.img_size, data.cfg.batch_size * 2, data_config_at(data.data_cfg, data.cfg.img_size),
                    data.device)  # fmt: skip
    probs, _ = predict(learn, dl=dl, tta=tta)
    return write_submission(data.cfg.dataset, Path(path), test.ids, probs.numpy(), data.ds.meta, test.ids)


def paper_table(record: dict[str, Any]) -> pd.DataFrame:
    """Our result beside the paper's, with what was actually run (preset, architecture, size, epochs, weights)."""
    spec = get_dataset(record["dataset"])
    ours = (f"{record['metric_value']:.4f} {record['metric_name']}; {record['arch']} at {record['img_size']} px, "
            f"{record['epochs']} epochs, preset {record['preset']}, "
            f"{'pretrained' if record['pretrained'] else 'RANDOM weights (not pretrained)'}")  # fmt: skip
    if record.get("max_items"):
        ours += f", at most {record['max_items']} training items"
    paper = spec.paper_result
    if spec.paper_target is not None:
        gap = record["metric_value"] - spec.paper_target
        verdict = (f"{gap:+.4f} against the paper" if record["pretrained"] and record["preset"] == "paper"
                   else "not comparable: a reduced run (see what was run)")  # fmt: skip
    elif spec.paper_result == "-":
        verdict = "the paper has no result on this dataset: nothing to compare with"
    else:
        verdict = "the paper reports a leaderboard place, not a score on this split"
    return pd.DataFrame({"": ["ours", "paper", "comparison"], spec.description.split(" (")[0]: [ours, paper, verdict]})


def samples(ds: Dataset, split: str = "train", n: int = 16, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images of ``split`` (one class after another, so the grid shows many classes) as uint8 (n, size,
    size[, 3]) arrays, with their labels."""
    part = ds[split]
    labels = part.labels
    if labels is not None and labels.ndim == 1:
        first = [np.flatnonzero(labels == c)[:n] for c in range(len(ds.class_names))]
        order = []
        for depth in range(n):
            order += [int(ids[depth]) for ids in first if depth < len(ids)]
        order = order[:n]
    else:
        order = list(range(min(n, len(part))))
    if part.images is not None:
        return part.images[order], (labels[order] if labels is not None else np.zeros(len(order), int))
    images = np.stack([np.asarray(part.load(i).resize((size, size))) for i in order])
    return images, (labels[order] if labels is not None else np.zeros(len(order), int))


def split_counts(ds: Dataset) -> dict[str, np.ndarray]:
    """Items per class in each labelled split of ``ds`` (label sums for multi-label)."""
    return {name: part.class_counts(len(ds.class_names)) for name, part in ds.splits.items() if part.labelled}


def show_evaluation(evaluation: Evaluation, data: Data, out: Path | str, n_worst: int = 16) -> None:
    """The evaluation as people read it: per-class (or per-label) table, confusion matrix or ROC curves, and the
    most confident mistakes; plots saved in ``out``."""
    from .views import MAX_NAMED_CLASSES, plot_confusion, plot_predictions, plot_roc_curves, show

    out = Path(out)
    names = data.class_names
    if evaluation.aucs is not None:
        show(pd.DataFrame({"label": list(evaluation.aucs), "roc_auc": list(evaluation.aucs.values())}))
        plot_roc_curves(evaluation.probs.numpy(), evaluation.targets.numpy(), names, out / "roc_curves.png")
        return
    report = evaluation.report
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
    plot_predictions(data.images("valid", worst), evaluation.probs[worst], evaluation.targets[worst], names,
                     out / "mistakes.png", n=n_worst)  # fmt: skip
