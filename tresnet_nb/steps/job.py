"""One training job, headless: config, data, model, learner, fit, evaluation, metrics.json and weights.

The path of notebooks/00_quickstart.ipynb without the plots, for the ``train`` command and for data-parallel runs:
``torchrun --nproc_per_node=N -m tresnet_nb train ...`` runs it in N processes (see :mod:`tresnet_nb.train.distributed`;
BATCH_SIZE is per process). Every process trains and evaluates; rank 0 alone writes files and prints.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from fastai.callback.progress import ProgressCallback
from fastai.learner import Learner
from fastcore.basics import noop

from ..config import DEFAULTS, PRESETS, RunConfig
from ..data import DatasetError, get_dataset
from ..hints import did_you_mean, unknown_names
from ..model.load import load_model, save_weights
from ..options import OPTION_NAMES
from ..report.record import run_record, summary_line, write_metrics
from ..report.tracking import track
from ..runtime import main_first
from ..train.callbacks import EpochLog
from ..train.checkpoint import drop_checkpoint
from ..train.distributed import DistInfo, check_sync_bn, cleanup, distribute, init_distributed
from ..train.fit import fit
from ..train.learner import build_learner, seed_everything
from .data import open_data
from .results import evaluate

JOB_NAME = "train"  # the run's name in metrics.json; OUTPUT_DIR defaults to runs/train/<config key>


def config_from_cli(preset: str | None, params: dict[str, Any], out: str | None) -> RunConfig:
    """The RunConfig of a ``train`` command: ``params`` (RunConfig keys, upper or lower case, or PRESET) over
    ``preset`` (default 'cpu'), with ``out`` as OUTPUT_DIR."""
    names = sorted(k.upper() for k in DEFAULTS) + ["PRESET"] + sorted(k.upper() for k in OPTION_NAMES)
    seen: dict[str, str] = {}
    for key in params:
        if key.upper() not in names:
            raise ValueError(
                f"Unknown parameter {unknown_names([key], names)}; train takes {names} (upper or lower case)"
            )
        if key.upper() in seen:
            raise ValueError(f"Parameter {key!r} is given twice (also as {seen[key.upper()]!r}); give it once")
        seen[key.upper()] = key
    values = {k.lower(): v for k, v in params.items()}
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
        raise ValueError(
            f"Unknown preset {preset!r}{did_you_mean(str(preset), PRESETS)}; choose one of {sorted(PRESETS)}"
        )
    return RunConfig.from_params(JOB_NAME, preset=preset, **values)


def headless(learn: Learner, label: str) -> Learner:
    """One printed line per epoch (:class:`EpochLog`, rank 0 only) instead of progress bars and fastai's table."""
    learn.remove_cb(ProgressCallback)
    if not any(isinstance(cb, EpochLog) for cb in learn.cbs):
        learn.add_cb(EpochLog(label))
    learn.logger = noop
    return learn


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
    data = open_data(cfg, model, info.device, ds)
    learn = headless(build_learner(cfg, data.dls, model, task=ds.task), cfg.notebook)
    distribute(learn, info, sync_bn)
    tracker = track(cfg, learn)  # rank 0 only: TensorBoard, and MLflow when TRACKING / MLFLOW_TRACKING_URI is set
    result = fit(learn, cfg, dls_for=data.dls_for)
    evaluation = evaluate(learn, data)
    record = run_record(
        cfg,
        model,
        evaluation,
        result,
        learn,
        world_size=info.world_size,
        batch_size_per_process=cfg.batch_size,
        global_batch_size=cfg.batch_size * info.world_size,
        sync_bn=sync_bn,
    )
    if info.is_main:
        save_weights(learn.model, cfg.out / "model.safetensors", cfg.img_size, data.class_names, data.task)
        write_metrics(record, cfg.out / "metrics.json", evaluation)
        tracker.finish(record)
        print(summary_line(record), flush=True)
        print(drop_checkpoint(cfg.out, keep=cfg.keep_checkpoint), flush=True)
        print(tracker.where(), flush=True)
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
