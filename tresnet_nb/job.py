"""One training job, headless: config, data, model, learner, fit, evaluation, metrics.json and weights.

The path of notebooks/00_quickstart.ipynb without the plots, for the ``train`` command and for data-parallel runs:
``torchrun --nproc_per_node=N -m tresnet_nb train ...`` runs it in N processes (see :mod:`tresnet_nb.distributed`;
BATCH_SIZE is per process). Every process trains and evaluates; rank 0 alone writes files and prints.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
from fastai.callback.progress import ProgressCallback
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastcore.basics import noop

from .callbacks import EpochLog
from .config import DEFAULTS, PRESETS, RunConfig
from .datasets import Dataset, DatasetError, get_dataset
from .datasets.arrays import array_dls, load_splits
from .datasets.highres import prepare_file_dls
from .distributed import DistInfo, check_sync_bn, cleanup, distribute, init_distributed, main_first
from .fitting import fit
from .metrics import classify_report, macro_f1, mean_column_auc
from .models import data_config, load_model, weights_info
from .report import build_metrics, save_weights, summary_line, write_metrics
from .train import TRAIN_OPTIONS, build_learner, check_train_options, learner_options, predict, seed_everything

JOB_NAME = "train"  # the run's name in metrics.json; OUTPUT_DIR defaults to runs/train
# The metric of each name, from probabilities (N, C) and targets, for class names.
METRICS: dict[str, Callable[[torch.Tensor, torch.Tensor, tuple[str, ...]], float]] = {
    "accuracy": lambda probs, targets, names: classify_report(probs, targets, names).top1,
    "macro_f1": lambda probs, targets, names: macro_f1(probs.numpy(), targets.numpy(), len(names)),
    "mean_roc_auc": lambda probs, targets, names: mean_column_auc(probs.numpy(), targets.numpy(), names),
}
TASK_METRIC = {"single-label": "accuracy", "multi-label": "mean_roc_auc"}  # when the data's task is not the spec's


def config_from_cli(preset: str | None, params: dict[str, Any], out: str | None) -> RunConfig:
    """The RunConfig of a ``train`` command: ``params`` (RunConfig keys, upper or lower case, or PRESET) over
    ``preset`` (default 'cpu'), with ``out`` as OUTPUT_DIR."""
    names = sorted(k.upper() for k in DEFAULTS) + ["PRESET"] + sorted(k.upper() for k in TRAIN_OPTIONS)
    seen: dict[str, str] = {}
    for key in params:
        if key.upper() not in names:
            raise ValueError(f"Unknown parameter {key!r}; train takes {names} (upper or lower case)")
        if key.upper() in seen:
            raise ValueError(f"Parameter {key!r} is given twice (also as {seen[key.upper()]!r}); give it once")
        seen[key.upper()] = key
    values = {k.lower(): v for k, v in params.items()}
    options = check_train_options({k: values.pop(k) for k in list(values) if k in TRAIN_OPTIONS})  # refused now
    if "preset" in values:
        if preset is not None and values["preset"] != preset:
            raise ValueError(f"--preset {preset!r} and -p PRESET {values['preset']!r} disagree; give one")
        preset = values.pop("preset")
    if out is not None:
        if values.get("output_dir") not in (None, out):
            raise ValueError(f"--out {out!r} and -p OUTPUT_DIR {values['output_dir']!r} disagree; give one")
        values["output_dir"] = out
    preset = "cpu" if preset is None else preset
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    return RunConfig.from_params(JOB_NAME, preset=preset, extra=options, **values)


def job_dls(cfg: RunConfig, ds: Dataset, model: torch.nn.Module, device: torch.device) -> DataLoaders:
    """DataLoaders of ``cfg`` for the dataset ``ds`` as ``model`` takes it: in memory for image arrays (capped and
    stratified by :func:`load_splits`), else the checked, resized-once image files."""
    spec = get_dataset(cfg.dataset)
    data_cfg = data_config(model, cfg.img_size)
    if ds["train"].images is not None:
        splits = load_splits(cfg.dataset, cfg.data_root, cfg.max_items)
        return array_dls(splits, cfg.img_size, cfg.batch_size, data_cfg, device)
    with main_first():  # rank 0 screens and caches the images; the others then find them cached
        return prepare_file_dls(ds, spec.eval_split, cfg.img_size, cfg.batch_size, data_cfg, device, cfg.out,
                                max_items=cfg.max_items, seed=cfg.seed)  # fmt: skip


def headless(learn: Learner, label: str) -> Learner:
    """One printed line per epoch (:class:`EpochLog`, rank 0 only) instead of progress bars and fastai's table."""
    learn.remove_cb(ProgressCallback)
    if not any(isinstance(cb, EpochLog) for cb in learn.cbs):
        learn.add_cb(EpochLog(label))
    learn.logger = noop
    return learn


def evaluate(probs: torch.Tensor, targets: torch.Tensor, ds: Dataset, metric: str) -> dict[str, Any]:
    """``metric`` of ``probs`` against ``targets`` on ``ds``'s classes, plus top-1/top-5/macro-F1 for single-label."""
    names = tuple(ds.class_names)
    out: dict[str, Any] = {"metric_value": METRICS[metric](probs, targets, names), "n_eval": len(targets)}
    if ds.task == "single-label":
        report = classify_report(probs, targets, names)
        out.update(top1=report.top1, top5=report.top5, macro_f1=report.macro_f1)
    return out


def train_job(cfg: RunConfig, sync_bn: bool = False) -> dict[str, Any]:
    """Train and evaluate the run of ``cfg`` (alone, or as one process of a torchrun job; ``sync_bn`` for
    SyncBatchNorm on CUDA) and return its metrics record; rank 0 writes run_config.json, metrics.json and
    model.safetensors to OUTPUT_DIR."""
    info: DistInfo = init_distributed()
    check_sync_bn(sync_bn, info.device)
    if info.is_main:
        cfg.save()
    seed_everything(cfg.seed)  # the same seed in every process; DDP broadcasts rank 0's weights anyway
    spec = get_dataset(cfg.dataset)
    with main_first():  # a download (weights 'auto') happens once, in rank 0
        ds = spec.read(cfg.data_root)
        model = load_model(cfg.arch, cfg.weights, num_classes=len(ds.class_names))
    dls = job_dls(cfg, ds, model, info.device)
    learn = headless(build_learner(cfg, dls, model, task=ds.task, **learner_options(cfg.extra)), cfg.notebook)
    distribute(learn, info, sync_bn)

    def dls_for(size: int, batch_size: int) -> DataLoaders:  # a progressive phase's loaders
        return job_dls(cfg.with_changes(img_size=size, batch_size=batch_size), ds, model, info.device)

    progressive = cfg.extra.get("progressive")
    result = fit(learn, cfg, pretrained=weights_info(model).pretrained, phases=progressive,
                 dls_for=dls_for if progressive else None)  # fmt: skip
    probs, targets = predict(learn, tta=bool(cfg.extra.get("tta")))
    metric = spec.metric if ds.task == spec.task else TASK_METRIC[ds.task]
    scores = evaluate(probs, targets, ds, metric)
    value = scores.pop("metric_value")
    record = build_metrics(
        cfg, weights_info(model), metric, value, result.seconds, paper_target=spec.paper_target,
        **scores, recipe=result.recipe, lr=result.lr, precision=learn.precision, resumed_from=result.resumed_from,
        train_images_per_second=round(result.images_per_second, 1), world_size=info.world_size,
        batch_size_per_process=cfg.batch_size, global_batch_size=cfg.batch_size * info.world_size, sync_bn=sync_bn,
        epochs=result.epochs, options=learn.options,
    )  # fmt: skip
    if info.is_main:
        save_weights(learn.model, cfg.out / "model.safetensors")
        write_metrics(record, cfg.out / "metrics.json")
        print(summary_line(record), flush=True)
    return record


def train_command(preset: str | None, params: dict[str, Any], out: str | None, sync_bn: bool = False) -> int:
    """``python -m tresnet_nb train``: exit 0 on success, 2 (with a message) for a bad parameter or dataset."""
    try:
        cfg = config_from_cli(preset, params, out)
        check_sync_bn(sync_bn, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        train_job(cfg, sync_bn)
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        cleanup()
    return 0
