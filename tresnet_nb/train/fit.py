"""A staged fit that checkpoints every epoch and resumes, with progressive resizing.

A recipe becomes a plan of stages (e.g. fastai's fine_tune: one frozen epoch, then all layers). With a progressive
schedule of phases (size, epochs, batch size), such as 224 px then 448 px, each phase is a stage of its own with
DataLoaders at its size. :func:`fit` runs the plan and, when OUTPUT_DIR already holds a checkpoint of the same
configuration, resumes from its last complete epoch: weights, EMA, optimizer state, RNG states and history are
restored, so a resumed run ends where an uninterrupted one would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from fastai.callback.schedule import ParamScheduler, SchedCos, SchedLin, combine_scheds
from fastai.data.core import DataLoaders
from fastai.learner import Learner

from ..config import LOCATION_FIELDS, RunConfig
from ..data.arrays import augment_of, set_augment
from ..options import TrainOptions
from ..recipes import Phase, Recipe, get_recipe
from ..runtime import is_main
from .callbacks import EMA, is_frozen
from .checkpoint import (
    Checkpoint,
    history,
    join_history,
    load_checkpoint,
    load_finished,
    set_rng_state,
    write_finished,
)
from .learner import LEARNER_FIELDS, PlannedLearner, TrainingPlan
from .optim import state_to_params

CHECKPOINT = "checkpoint.pth"
DlsFactory = Callable[[int, int], DataLoaders]  # (img_size, batch_size) -> DataLoaders


@dataclass(frozen=True, kw_only=True)
class Stage:
    """One fastai fit of a plan: frozen body or not, epochs, learning rate, schedule, and the DataLoaders' size and
    batch (None: keep the learner's). A (start, stop) learning rate is fastai's ``slice(start, stop)``, and
    (None, stop) its ``slice(stop)``: every parameter group but the last at stop / 10 (``Optimizer.set_hyper``)."""

    frozen: bool
    epochs: int
    lr: float | tuple[float | None, float]
    schedule: str
    pct_start: float
    div: float
    size: int | None = None
    batch_size: int | None = None

    @property
    def loader_key(self) -> tuple[int, int] | None:
        return None if self.size is None else (self.size, self.batch_size)


def plan_stages(
    recipe: Recipe, epochs: int, lr: float | None, pretrained: bool, phases: Sequence[Phase] | None = None
) -> list[Stage]:
    """The stages that train ``epochs`` epochs (or the ``phases``) with ``recipe``: a frozen stage first for
    pretrained bodies when the recipe has one. Later phases scale the learning rate with their batch size (the
    linear scaling rule, Goyal et al. 2017) and keep the optimizer state (Adam's moments do not depend on size)."""
    lr = recipe.lr if lr is None else lr
    phases = list(phases or [Phase(size=0, epochs=epochs, batch_size=0)])
    stages = []
    frozen_first = pretrained and recipe.freeze_epochs > 0
    for i, phase in enumerate(phases):
        size, batch = (phase.size, phase.batch_size) if phase.size else (None, None)
        scale = phase.batch_size / phases[0].batch_size if phase.size else 1.0
        if frozen_first and i == 0:  # fastai's fine_tune: fit_one_cycle(freeze_epochs, slice(base_lr), pct_start=0.99)
            frozen_lr = (None, lr)  # the body's norm layers, where the recipe trains them (train_bn), at base_lr / 10
            stages.append(
                Stage(
                    frozen=True,
                    epochs=recipe.freeze_epochs,
                    lr=frozen_lr,
                    schedule=recipe.schedule,
                    pct_start=0.99,
                    div=25.0,
                    size=size,
                    batch_size=batch,
                )
            )
        if frozen_first:
            body_lr = lr * scale / 2  # fastai's fine_tune halves base_lr after the frozen epochs
            peak: float | tuple[float, float] = (body_lr / recipe.lr_mult, body_lr)
            stages.append(
                Stage(
                    frozen=False,
                    epochs=phase.epochs,
                    lr=peak,
                    schedule=recipe.schedule,
                    pct_start=recipe.warmup_pct,
                    div=5.0,
                    size=size,
                    batch_size=batch,
                )
            )
        else:
            stages.append(
                Stage(
                    frozen=False,
                    epochs=phase.epochs,
                    lr=lr * scale,
                    schedule=recipe.schedule,
                    pct_start=recipe.warmup_pct,
                    div=25.0,
                    size=size,
                    batch_size=batch,
                )
            )
    return stages


def _run_stage(learn: Learner, stage: Stage, start_epoch: int) -> None:
    if start_epoch == 0:  # fastai's freeze/unfreeze also clear the optimizer state: not when resuming mid-stage
        if stage.frozen != is_frozen(learn) or learn.opt is None:
            learn.freeze() if stage.frozen else learn.unfreeze()
    lr = slice(*stage.lr) if isinstance(stage.lr, tuple) else stage.lr
    if stage.schedule == "one_cycle":
        learn.fit_one_cycle(stage.epochs, lr, pct_start=stage.pct_start, div=stage.div, start_epoch=start_epoch)
        return
    # one peak per parameter group (body, head), spread from a slice as fastai's fit_one_cycle spreads it
    if learn.opt is None:
        learn.create_opt()
    learn.opt.set_hyper("lr", lr)
    peak = np.array([h["lr"] for h in learn.opt.hypers])
    warm = combine_scheds([stage.pct_start, 1 - stage.pct_start], [SchedLin(peak / 25, peak), SchedCos(peak, 0.0)])
    learn.fit(stage.epochs, peak, cbs=ParamScheduler({"lr": warm}), start_epoch=start_epoch)


def fingerprint(cfg: RunConfig, stages: list[Stage], recipe: str, options: dict[str, Any] | None = None) -> str:
    """What must match for a checkpoint to be resumed: the config (less where it is written and tracked), the plan and the
    learner's training options."""
    config = {k: v for k, v in cfg.to_dict().items() if k not in LOCATION_FIELDS}
    return json.dumps(
        {"config": config, "recipe": recipe, "plan": [asdict(s) for s in stages], "options": options or {}},
        sort_keys=True,
        default=str,
    )


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


def learner_plan(learn: Learner, cfg: RunConfig) -> TrainingPlan:
    """The plan of a Learner from :func:`build_learner`, checked against ``cfg``'s learner options."""
    plan = getattr(learn, "plan", None)
    if not isinstance(plan, TrainingPlan):
        raise TypeError(
            f"fit needs a Learner from tresnet_nb.build_learner (it has the plan), not a {type(learn).__name__}"
        )
    built, given = plan.options, cfg.options
    differ = [
        f.name
        for f in fields(TrainOptions)
        if f.name in LEARNER_FIELDS and getattr(built, f.name) != getattr(given, f.name)
    ]
    if differ:
        raise ValueError(
            f"The learner was built with other training options than fit was given ({', '.join(differ)}): build it "
            "from the same RunConfig (tnb.build_learner(cfg, ...)) that fit receives"
        )
    return plan


def _swap_loaders(learn: Learner, key: tuple[int, int], dls_for: DlsFactory) -> None:
    """Give ``learn`` the DataLoaders of ``key`` (size, batch), with the augmentation its current ones apply."""
    policy, erasing, flip = augment_of(learn.dls)
    learn.dls = dls_for(*key)
    if policy != "as_built":
        set_augment(learn.dls, policy, erasing, flip)


def _ema(learn: Learner) -> EMA | None:
    return next((cb for cb in learn.cbs if isinstance(cb, EMA)), None)


def _restore(learn: Learner, state: dict[str, Any], stage: Stage, loader_rng: bool) -> None:
    learn.model.load_state_dict(state["model"])
    if learn.opt is None:
        learn.create_opt()
    learn.freeze() if stage.frozen else learn.unfreeze()
    learn.opt.load_state_dict(state["opt"])
    state_to_params(learn.opt)  # the checkpoint was mapped to the CPU; the optimizer steps where the model is
    ema = _ema(learn)
    if ema is not None and state["ema"] is not None:
        ema.load_state_dict(state["ema"])
    set_rng_state(learn, state["rng"], loader=loader_rng)


def _resume(
    learn: Learner, state: dict[str, Any], stages: list[Stage], ckpt: Checkpoint, dls_for: DlsFactory | None
) -> tuple[int, int, tuple[int, int] | None]:
    """Restore ``learn`` and ``ckpt`` from the checkpoint ``state``; returns the stage and epoch to go on from and
    the loaders' (size, batch) key when they were swapped."""
    start_stage, start_epoch, loaders = state["stage"], state["epoch"] + 1, None
    if start_epoch >= stages[start_stage].epochs:
        start_stage, start_epoch = start_stage + 1, 0
    target = stages[min(start_stage, len(stages) - 1)]
    # the training loader's generator goes on from the checkpoint unless this stage starts on new loaders,
    # which (as in an uninterrupted run) are built after the checkpoint's global RNG state is restored
    same_loaders = start_epoch > 0 or target.loader_key == stages[state["stage"]].loader_key
    if target.loader_key is not None and same_loaders:
        _swap_loaders(learn, target.loader_key, dls_for)
        loaders = target.loader_key
    # frozen as when the checkpoint was written: _run_stage then makes the same transition an uninterrupted run
    # makes (unfreezing clears the optimizer state, as fastai's fine_tune does)
    _restore(learn, state, stages[state["stage"]], loader_rng=same_loaders)
    ckpt.prefix = state["history"]
    ckpt.scaler_state = state.get("scaler")  # fp16 on CUDA: the loss scale goes on where it was
    if start_epoch > 0:  # mid-stage: the running train loss goes on; a new stage starts it afresh, as fastai does
        ckpt.smooth_loss = (state["smooth_loss"][0], state["smooth_loss"][1])
    return start_stage, start_epoch, loaders


def _run_stages(
    learn: PlannedLearner,
    stages: list[Stage],
    ckpt: Checkpoint,
    start: tuple[int, int],
    loaders: tuple[int, int] | None,
    dls_for: DlsFactory | None,
) -> int:
    """Run ``stages`` from ``start`` (stage, epoch), swapping the DataLoaders where a stage's size or batch differs
    from ``loaders`` (the key of the current ones), and return the number of training images seen."""
    images = 0
    for index in range(start[0], len(stages)):
        stage = stages[index]
        if stage.loader_key is not None and stage.loader_key != loaders:
            _swap_loaders(learn, stage.loader_key, dls_for)
            loaders = stage.loader_key
        ckpt.stage = index
        _run_stage(learn, stage, start[1] if index == start[0] else 0)
        done = history(learn)
        ckpt.prefix = join_history(ckpt.prefix, done)
        images += len(done["epochs"]) * len(learn.dls.train) * learn.dls.train.bs
    return images


def fit(
    learn: PlannedLearner,
    cfg: RunConfig,
    *,
    checkpoint_dir: Path | str | None = None,
    dls_for: DlsFactory | None = None,
) -> FitResult:
    """Train ``learn`` (from :func:`build_learner`) as its plan and ``cfg`` say, checkpointing every epoch in
    ``checkpoint_dir`` (default OUTPUT_DIR) and resuming from a checkpoint of the same configuration found there.

    A pretrained body trains frozen first when the recipe says so. ``cfg.options.progressive`` trains in phases at
    growing sizes; ``dls_for(size, batch_size)`` then builds each phase's DataLoaders (given the augmentation of
    the learner's current ones), and the phases' epochs replace ``cfg.epochs``.
    """
    plan = learner_plan(learn, cfg)
    recipe = get_recipe(plan.recipe)
    phases = cfg.options.progressive
    if phases and dls_for is None:
        raise ValueError("A progressive schedule needs dls_for(size, batch_size) to build each phase's DataLoaders")
    stages = plan_stages(recipe, cfg.epochs, cfg.lr, plan.pretrained, phases)
    path = Path(checkpoint_dir or cfg.out) / CHECKPOINT
    print_ = fingerprint(cfg, stages, plan.recipe, plan.settings())
    state = load_checkpoint(path, print_)
    if state is None and (done := load_finished(learn.model, path.parent, print_)) is not None:
        kept = {k: done[k] for k in ("recipe", "lr", "epochs", "history")}
        return FitResult(**kept, seconds=0.0, images_per_second=0.0, resumed_from=f"{done['last']} of {done['path']}")
    ckpt = Checkpoint(path, print_)
    learn.add_cb(ckpt)
    start_stage, start_epoch, resumed, loaders = 0, 0, None, None
    if state is not None:
        start_stage, start_epoch, loaders = _resume(learn, state, stages, ckpt, dls_for)
        resumed = f"stage {state['stage'] + 1} epoch {state['epoch'] + 1} of {path}"
        print(f"Resuming after {resumed}" if start_stage < len(stages) else f"Training already complete in {path}")
    start = time.perf_counter()
    try:
        images = _run_stages(learn, stages, ckpt, (start_stage, start_epoch), loaders, dls_for)
    finally:
        learn.remove_cb(ckpt)
    ema = _ema(learn)
    if ema is not None and ema.average is not None:
        # once, when the whole plan is done (a finished run rerun too): each phase goes on from the live weights,
        # which Adam's moments belong to, so a run resumed at a phase boundary is the uninterrupted one
        ema.use_average()
    seconds = time.perf_counter() - start
    epochs = sum(p.epochs for p in phases) if phases else cfg.epochs
    rate = images / max(seconds, 1e-9)
    lr = cfg.lr if cfg.lr is not None else recipe.lr
    result = FitResult(plan.recipe, lr, epochs, seconds, rate, history=ckpt.prefix, resumed_from=resumed)
    if is_main():
        write_finished(
            path.parent, print_, {**asdict(result), "last": f"stage {len(stages)} epoch {stages[-1].epochs}"}
        )
    return result
