"""Training: the recipes table, a staged fit that checkpoints every epoch and resumes, multi-label, predictions.

A recipe becomes a plan of stages (e.g. fastai's fine_tune: one frozen epoch, then all layers). :func:`fit` runs
the plan and, when OUTPUT_DIR already holds a checkpoint of the same configuration, resumes from its last complete
epoch: weights, EMA, optimizer state, RNG states and history are restored, so a resumed run ends where an
uninterrupted one would.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastai.callback import progress as _progress  # noqa: F401  (adds the fastprogress bar to every Learner)
from fastai.callback import schedule as _schedule  # noqa: F401  (defines Learner.fit_one_cycle)
from fastai.callback.schedule import ParamScheduler, SchedCos, SchedLin, combine_scheds
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.losses import BCEWithLogitsLossFlat, CrossEntropyLossFlat
from fastai.metrics import AccumMetric, accuracy
from fastai.optimizer import Adam
from fastai.torch_core import set_seed
from torch import nn

from .callbacks import ECHO_ENV, EMA, Checkpoint, EpochLog, precision_callbacks, resolve_precision
from .config import RunConfig
from .losses import AsymmetricLoss
from .metrics import mean_column_auc

CHECKPOINT = "checkpoint.pth"


@dataclass(frozen=True)
class Recipe:
    """How to train: optimizer, learning rate and schedule, regularisation, and where each number comes from."""

    lr: float
    weight_decay: float  # never applied to biases and norm weights (fastai's wd_bn_bias=False)
    decoupled_wd: bool  # AdamW-style (True) or L2 added to the gradient, as torch/timm Adam does (False)
    eps: float
    sqr_mom: float
    schedule: str  # 'one_cycle' or 'cosine_warmup'
    warmup_pct: float
    label_smoothing: float
    ema_decay: float | None
    freeze_epochs: int  # head-only epochs first, for pretrained bodies
    lr_mult: float  # discriminative learning rates after unfreezing: body at lr / lr_mult
    source: str


RECIPES: dict[str, Recipe] = {
    # Random initialisation: one-cycle with fastai's Adam defaults; the peak lr was picked on the embedded
    # Fashion-MNIST (3 epochs at 64 px: 0.836 accuracy, README).
    "scratch": Recipe(3e-3, 0.01, True, 1e-5, 0.99, "one_cycle", 0.25, 0.0, None, 0, 1.0, "measured here"),
    # fastai's fine_tune (fastai/callback/schedule.py): a frozen one-cycle epoch at base_lr, then base_lr/2 with
    # slice(lr/100, lr), pct_start 0.3, div 5.
    "fastai": Recipe(2e-3, 0.01, True, 1e-5, 0.99, "one_cycle", 0.3, 0.0, None, 1, 100.0, "fastai fine_tune"),
    # The TResNet authors' transfer recipe (their advice and timm command for CIFAR-100, see FACTS.md): Adam with
    # L2 weight decay 1e-4, lr 2e-4, cosine with 3 of 50 epochs of warm-up, label smoothing 0.1, EMA 0.995.
    "miil": Recipe(2e-4, 1e-4, False, 1e-8, 0.999, "cosine_warmup", 0.06, 0.1, 0.995, 0, 1.0, "Alibaba-MIIL"),
}


def default_recipe(pretrained: bool) -> str:
    """The recipe used when none is named: fine-tuning for pretrained bodies, one-cycle from scratch otherwise."""
    return "fastai" if pretrained else "scratch"


def get_recipe(name: str) -> Recipe:
    """The :class:`Recipe` called ``name``."""
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}; choose one of {sorted(RECIPES)}")
    return RECIPES[name]


def head_splitter(model: nn.Module) -> list[list[nn.Parameter]]:
    """Two parameter groups, body then classifier, so fastai can freeze the body of a pretrained model."""
    head = model.get_classifier()
    head_ids = {id(p) for p in head.parameters()}
    return [[p for p in model.parameters() if id(p) not in head_ids], list(head.parameters())]


def _roc_auc(preds: torch.Tensor, targets: torch.Tensor) -> float:
    return mean_column_auc(preds.float().numpy(), targets.float().numpy())


def task_loss_and_metrics(task: str, recipe: Recipe, multi_label_loss: str = "bce") -> tuple[nn.Module, list]:
    """Loss and fastai metrics for ``task`` ('single-label' or 'multi-label')."""
    if task == "single-label":
        return CrossEntropyLossFlat(label_smoothing=recipe.label_smoothing), [accuracy]
    if task != "multi-label":
        raise ValueError(f"Unknown task {task!r}; choose 'single-label' or 'multi-label'")
    losses = {"bce": BCEWithLogitsLossFlat(), "asl": AsymmetricLoss()}
    if multi_label_loss not in losses:
        raise ValueError(f"Unknown multi-label loss {multi_label_loss!r}; choose one of {sorted(losses)}")
    return losses[multi_label_loss], [AccumMetric(_roc_auc, activation="sigmoid", flatten=False, name="roc_auc")]


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (and make cuDNN deterministic), before the model is created."""
    set_seed(seed, reproducible=True)


def build_learner(
    cfg: RunConfig, dls: DataLoaders, model: nn.Module, task: str = "single-label", recipe: str | None = None,
    multi_label_loss: str = "bce",
) -> Learner:  # fmt: skip
    """A fastai Learner for ``model`` on ``dls`` with the precision of ``cfg`` and the loss and optimizer of
    ``recipe`` (default: by whether the weights are pretrained) for ``task``."""
    pretrained = bool(getattr(getattr(model, "weights_info", None), "pretrained", False))
    name = recipe or default_recipe(pretrained)
    rec = get_recipe(name)
    loss, metrics = task_loss_and_metrics(task, rec, multi_label_loss)
    precision = resolve_precision(cfg.precision, dls.device)
    opt = lambda params, lr: Adam(params, lr, sqr_mom=rec.sqr_mom, eps=rec.eps, wd=rec.weight_decay,  # noqa: E731
                                  decouple_wd=rec.decoupled_wd)  # fmt: skip
    cbs = precision_callbacks(precision, dls.device)
    if rec.ema_decay:
        cbs.append(EMA(rec.ema_decay))
    if os.environ.get(ECHO_ENV):
        cbs.append(EpochLog(cfg.notebook))
    learn = Learner(dls, model.to(dls.device), loss_func=loss, opt_func=opt, metrics=metrics, splitter=head_splitter,
                    wd=rec.weight_decay, cbs=cbs)  # fmt: skip
    learn.precision, learn.recipe_name, learn.task = precision, name, task
    return learn


@dataclass(frozen=True)
class Stage:
    """One fastai fit of a plan: frozen body or not, epochs, learning rate (or a slice), schedule."""

    frozen: bool
    epochs: int
    lr: float | tuple[float, float]
    schedule: str
    pct_start: float
    div: float


def plan(recipe: Recipe, epochs: int, lr: float | None, pretrained: bool) -> list[Stage]:
    """The stages that train ``epochs`` epochs with ``recipe`` (a frozen stage first for pretrained bodies)."""
    lr = recipe.lr if lr is None else lr
    if pretrained and recipe.freeze_epochs:
        body_lr = lr / 2  # fastai's fine_tune halves base_lr after the frozen epochs
        return [
            Stage(True, recipe.freeze_epochs, lr, recipe.schedule, 0.99, 25.0),
            Stage(False, epochs, (body_lr / recipe.lr_mult, body_lr), recipe.schedule, recipe.warmup_pct, 5.0),
        ]
    return [Stage(False, epochs, lr, recipe.schedule, recipe.warmup_pct, 25.0)]


def _run_stage(learn: Learner, stage: Stage, start_epoch: int) -> None:
    if start_epoch == 0:  # fastai's freeze/unfreeze also clear the optimizer state: not when resuming mid-stage
        learn.freeze() if stage.frozen else learn.unfreeze()
    lr = slice(*stage.lr) if isinstance(stage.lr, tuple) else stage.lr
    if stage.schedule == "one_cycle":
        learn.fit_one_cycle(stage.epochs, lr, pct_start=stage.pct_start, div=stage.div, start_epoch=start_epoch)
        return
    # one peak per parameter group (body, head), as fastai spreads a slice
    peak = np.array(stage.lr) if isinstance(stage.lr, tuple) else stage.lr
    warm = combine_scheds([stage.pct_start, 1 - stage.pct_start], [SchedLin(peak / 25, peak), SchedCos(peak, 0.0)])
    learn.fit(stage.epochs, peak, cbs=ParamScheduler({"lr": warm}), start_epoch=start_epoch)


def rng_state(learn: Learner) -> dict[str, Any]:
    """Every RNG a training epoch draws from, as tensors and lists (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "loader": [list(x) if isinstance(x, tuple) else x for x in learn.dls.train.rng.getstate()],
    }


def set_rng_state(learn: Learner, state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))
    learn.dls.train.rng.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["loader"]))


def fingerprint(cfg: RunConfig, stages: list[Stage], recipe: str) -> str:
    """What must match for a checkpoint to be resumed: the config (less where it is written) and the plan."""
    config = {k: v for k, v in cfg.to_dict().items() if k != "output_dir"}
    return json.dumps({"config": config, "recipe": recipe, "plan": [asdict(s) for s in stages]}, sort_keys=True)


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` did: recipe, learning rate, epochs, wall time, the history, and where it resumed."""

    recipe: str
    lr: float
    epochs: int
    seconds: float
    images_per_second: float
    history: dict[str, Any]
    resumed_from: str | None = None


def _load_checkpoint(path: Path, expected: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != expected:
        raise ValueError(
            f"{path} holds a checkpoint of a different configuration or plan, so it cannot be resumed. Fix: use "
            f"another OUTPUT_DIR for this run, or delete {path} to start this one afresh."
        )
    return state


def _restore(learn: Learner, state: dict[str, Any], stage: Stage) -> None:
    learn.model.load_state_dict(state["model"])
    if learn.opt is None:
        learn.create_opt()
    learn.freeze() if stage.frozen else learn.unfreeze()
    learn.opt.load_state_dict(state["opt"])
    ema = next((cb for cb in learn.cbs if isinstance(cb, EMA)), None)
    if ema is not None and state["ema"] is not None:
        ema.load_state_dict(state["ema"])
    set_rng_state(learn, state["rng"])


def fit(learn: Learner, cfg: RunConfig, pretrained: bool, checkpoint_dir: Path | str | None = None) -> FitResult:
    """Train with the learner's recipe, checkpointing every epoch in ``checkpoint_dir`` (default OUTPUT_DIR) and
    resuming from a checkpoint of the same configuration found there."""
    recipe = get_recipe(learn.recipe_name)
    stages = plan(recipe, cfg.epochs, cfg.lr, pretrained)
    path = Path(checkpoint_dir or cfg.out) / CHECKPOINT
    print_ = fingerprint(cfg, stages, learn.recipe_name)
    state = _load_checkpoint(path, print_)
    ckpt = Checkpoint(path, print_)
    learn.add_cb(ckpt)
    start_stage, start_epoch, resumed = 0, 0, None
    if state is not None:
        start_stage, start_epoch = state["stage"], state["epoch"] + 1
        if start_epoch >= stages[start_stage].epochs:
            start_stage, start_epoch = start_stage + 1, 0
        _restore(learn, state, stages[min(start_stage, len(stages) - 1)])
        ckpt.prefix = state["history"]
        if start_epoch > 0:  # mid-stage: the running train loss goes on; a new stage starts it afresh, as fastai does
            ckpt.smooth_loss = (state["smooth_loss"][0], state["smooth_loss"][1])
        resumed = f"stage {state['stage'] + 1} epoch {state['epoch'] + 1} of {path}"
        print(f"Resuming after {resumed}" if start_stage < len(stages) else f"Training already complete in {path}")
    start = time.perf_counter()
    images = 0
    try:
        for index in range(start_stage, len(stages)):
            ckpt.stage = index
            _run_stage(learn, stages[index], start_epoch if index == start_stage else 0)
            done = history(learn)
            ckpt.prefix = {"train_losses": ckpt.prefix["train_losses"] + done["train_losses"],
                           "epochs": ckpt.prefix["epochs"] + done["epochs"], "metric_names": done["metric_names"]}  # fmt: skip
            images += len(done["epochs"]) * len(learn.dls.train) * learn.dls.train.bs
    finally:
        learn.remove_cb(ckpt)
    if state is not None and start_stage >= len(stages):
        ema = next((cb for cb in learn.cbs if isinstance(cb, EMA)), None)
        if ema is not None and state["ema"] is not None:
            learn.model.load_state_dict(state["ema"])  # a finished EMA run ends on the average
    seconds = time.perf_counter() - start
    lr = cfg.lr if cfg.lr is not None else recipe.lr
    return FitResult(learn.recipe_name, lr, cfg.epochs, seconds, images / max(seconds, 1e-9), ckpt.prefix, resumed)


def predict(learn: Learner) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities (softmax, or sigmoid for multi-label) and targets on the validation DataLoader, in fp32."""
    probs, targets = learn.get_preds(dl=learn.dls.valid)
    return probs.float(), targets


def history(learn: Learner) -> dict[str, Any]:
    """Training losses and per-epoch validation values fastai recorded in the last fit (get_preds resets them)."""
    rec = learn.recorder
    return {
        "train_losses": [float(v) for v in rec.losses],
        "metric_names": list(rec.metric_names[1:-1]),
        # epochs skipped on resume leave empty rows
        "epochs": [[float(v) if v is not None else None for v in row] for row in rec.values if len(row)],
    }
