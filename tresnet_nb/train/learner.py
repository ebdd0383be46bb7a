"""Training: the recipes table, learner construction (precision, EMA, augmentation, MixUp/CutMix, gradient clipping
and accumulation, gradient checkpointing, torch.compile), the learning-rate finder and predictions with optional
test-time augmentation. The recipes are in :mod:`tresnet_nb.recipes`, the staged, resumable fit in :mod:`tresnet_nb.train.fit`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from fastai.callback import progress as _progress  # noqa: F401  (adds the fastprogress bar to every Learner)
from fastai.callback import schedule as _schedule  # noqa: F401  (defines Learner.fit_one_cycle, lr_find)
from fastai.callback.core import Callback, CancelBatchException
from fastai.callback.training import GradientClip
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.losses import BCEWithLogitsLossFlat, CrossEntropyLossFlat
from fastai.metrics import AccumMetric, accuracy
from fastai.torch_core import set_seed
from torch import nn

from ..config import RunConfig
from ..data import get_dataset
from ..data.arrays import set_augment
from ..evaluation.metrics import mean_average_precision, mean_column_auc
from ..model.load import TEMPERATURE_ATTR
from ..options import TrainOptions
from ..recipes import Recipe, default_recipe, get_recipe
from ..runtime import ECHO_ENV
from .callbacks import EMA, EpochLog, NoDecayOnVectors, precision_callbacks, resolve_precision
from .losses import AsymmetricLoss
from .mix import FlipInputs, MixupCutmix
from .optim import ForeachAdam


def head_splitter(model: nn.Module) -> list[list[nn.Parameter]]:
    """Two parameter groups, body then classifier, so fastai can freeze the body of a pretrained model."""
    head = model.get_classifier()
    head_ids = {id(p) for p in head.parameters()}
    return [[p for p in model.parameters() if id(p) not in head_ids], list(head.parameters())]


def _roc_auc(preds: torch.Tensor, targets: torch.Tensor) -> float:
    # a capped validation split may hold a column without positives: the mean over the columns having both classes
    # (NaN when none has), rather than an error mid-fit; the final evaluation warns about such columns
    return mean_column_auc(preds.float().numpy(), targets.numpy(), undefined="skip")


def _map(preds: torch.Tensor, targets: torch.Tensor) -> float:
    return mean_average_precision(preds.float().numpy(), targets.float().numpy())


def task_loss_and_metrics(
    task: str, recipe: Recipe, multi_label_loss: str = "bce", metric: str = "accuracy"
) -> tuple[nn.Module, list]:
    """Loss and fastai metrics for ``task`` ('single-label' or 'multi-label') and the dataset's ``metric``
    (single-label 'mean_roc_auc', e.g. Plant Pathology 2020: per-column ROC-AUC of the softmax beside accuracy)."""
    if task == "single-label":
        metrics = [accuracy]
        if metric == "mean_roc_auc":
            metrics.append(AccumMetric(_roc_auc, dim_argmax=-1, activation="softmax", flatten=False, name="roc_auc"))
        return CrossEntropyLossFlat(label_smoothing=recipe.label_smoothing), metrics
    if task != "multi-label":
        raise ValueError(f"Unknown task {task!r}; choose 'single-label' or 'multi-label'")
    losses = {"bce": BCEWithLogitsLossFlat(), "asl": AsymmetricLoss()}
    if multi_label_loss not in losses:
        raise ValueError(f"Unknown multi-label loss {multi_label_loss!r}; choose one of {sorted(losses)}")
    metrics = [
        AccumMetric(_roc_auc, activation="sigmoid", flatten=False, name="roc_auc"),
        AccumMetric(_map, activation="sigmoid", flatten=False, name="mAP"),
    ]
    return losses[multi_label_loss], metrics


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (and make cuDNN deterministic), before the model is created."""
    set_seed(seed, reproducible=True)


# the TrainOptions fields build_learner reads (the others, progressive, tta and balanced, are fit's and the data's)
LEARNER_FIELDS = (
    "recipe",
    "augment",
    "erasing",
    "mixup",
    "cutmix",
    "clip_grad",
    "accumulate",
    "grad_checkpointing",
    "compile",
    "multi_label_loss",
)


@dataclass(frozen=True, kw_only=True)
class TrainingPlan:
    """What :func:`build_learner` decided from the config, the model and the data: the recipe (by name), the
    precision, the task, whether the body is pretrained, and the augmentation the loaders apply. :func:`fit`, the
    run record and tracking read it from ``learn.plan``."""

    recipe: str
    precision: str
    task: str
    pretrained: bool
    augment: str
    flip: bool
    erasing: float
    options: TrainOptions

    def settings(self) -> dict[str, Any]:
        """The learner's settings as the run record, tracking and the checkpoint fingerprint list them."""
        o = self.options
        return {
            "augment": self.augment,
            "flip": self.flip,
            "erasing": self.erasing,
            "mixup": o.mixup,
            "cutmix": o.cutmix,
            "clip_grad": o.clip_grad,
            "accumulate": o.accumulate,
            "grad_checkpointing": o.grad_checkpointing,
            "task": self.task,
            "multi_label_loss": o.multi_label_loss,
        }


class PlannedLearner(Learner):
    """fastai's Learner with the :class:`TrainingPlan` it was built with (``plan``)."""

    def __init__(self, dls: DataLoaders, model: nn.Module, *, plan: TrainingPlan, **kwargs: Any) -> None:
        super().__init__(dls, model, **kwargs)
        self.plan = plan


class AccumulateGradients(Callback):
    """Step the optimizer every ``steps`` batches with the mean of their gradients (an effective batch of
    ``steps`` x the loader's), and on the last batch of each epoch, so that no gradient crosses an epoch boundary
    (checkpoints are taken there) and no data is left out."""

    order = 6  # before MixedPrecision's before_step (10) and gradient clipping (11): skipped batches do neither
    run_valid = False

    def __init__(self, steps: int) -> None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"ACCUMULATE must be a whole number of batches >= 1, not {steps!r}")
        self.steps = steps

    def before_epoch(self) -> None:
        self.count = 0

    def after_loss(self) -> None:
        self.learn.loss_grad = self.loss_grad / self.steps

    def before_step(self) -> None:
        self.count += 1
        if self.count % self.steps and self.iter < self.n_iter - 1:
            raise CancelBatchException()  # keeps the gradients: fastai zeroes them only after a step


def training_callbacks(cfg: RunConfig, rec: Recipe, precision: str, device: torch.device) -> list[Callback]:
    """The callbacks of a run of ``cfg`` with recipe ``rec``: precision (and channels_last), no weight decay on
    vectors, the recipe's EMA, MixUp/CutMix, gradient accumulation and clipping, and the one-line epoch log when
    the runner asks for it."""
    o = cfg.options
    cbs: list[Callback] = [*precision_callbacks(precision, device), NoDecayOnVectors()]
    if rec.ema_decay:
        cbs.append(EMA(rec.ema_decay))
    if o.mixup or o.cutmix:
        cbs.append(MixupCutmix(o.mixup, o.cutmix))
    if o.accumulate != 1:
        cbs.append(AccumulateGradients(o.accumulate))
    if o.clip_grad is not None:
        cbs.append(GradientClip(float(o.clip_grad)))
    if os.environ.get(ECHO_ENV):
        cbs.append(EpochLog(cfg.notebook))
    return cbs


def build_learner(cfg: RunConfig, dls: DataLoaders, model: nn.Module, task: str = "single-label") -> PlannedLearner:
    """A fastai Learner for ``model`` on ``dls`` for ``task``, trained as ``cfg`` says: its precision, and from
    ``cfg.options`` the recipe (default: by whether the weights are pretrained) with its loss, optimizer and EMA,
    the augmentation (set on ``dls``, the loaders the Learner trains on), MixUp/CutMix, gradient clipping and
    accumulation, gradient checkpointing and ``torch.compile`` (in place). A pretrained body starts frozen."""
    o = cfg.options
    pretrained = bool(getattr(getattr(model, "weights_info", None), "pretrained", False))
    name = o.recipe or default_recipe(pretrained)
    rec = get_recipe(name)
    loss, metrics = task_loss_and_metrics(task, rec, o.multi_label_loss, get_dataset(cfg.dataset).metric)
    policy = rec.augment if o.augment is None else o.augment
    erase = rec.erasing if o.erasing is None else o.erasing
    # the recipe's policy flips only datasets whose classes survive a mirror image; a policy asked for by name does
    flip = policy != "none" and (o.augment is not None or get_dataset(cfg.dataset).flips_keep_class)
    if policy != "as_built":
        set_augment(dls, policy, erase, flip)  # checks both, naming the bad value
    if o.grad_checkpointing:
        if not hasattr(model, "set_grad_checkpointing"):
            raise TypeError(f"{type(model).__name__} has no set_grad_checkpointing; use a timm model")
        model.set_grad_checkpointing(True)
    opt = partial(ForeachAdam, sqr_mom=rec.sqr_mom, eps=rec.eps, wd=rec.weight_decay, decouple_wd=rec.decoupled_wd)
    precision = resolve_precision(cfg.precision, dls.device)
    cbs = training_callbacks(cfg, rec, precision, dls.device)
    model = model.to(dls.device)
    if o.compile:
        model.compile(**({} if o.compile is True else {"backend": o.compile}))  # in place: state_dict keys unchanged
    plan = TrainingPlan(
        recipe=name,
        precision=precision,
        task=task,
        pretrained=pretrained,
        augment=policy,
        flip=flip,
        erasing=erase,
        options=o,
    )
    learn = PlannedLearner(
        dls,
        model,
        plan=plan,
        loss_func=loss,
        opt_func=opt,
        metrics=metrics,
        splitter=head_splitter,
        wd=rec.weight_decay,
        train_bn=rec.train_frozen_norms,
        cbs=cbs,
        path=cfg.out,
    )
    if pretrained:  # as fastai's vision_learner: the head alone trains until fit unfreezes (lr_find included)
        learn.freeze()
    return learn


@dataclass(frozen=True)
class LrFinding:
    """fastai's learning-rate range test: the rates tried, the smoothed losses, and the suggested rate (valley)."""

    lrs: list[float]
    losses: list[float]
    suggestion: float


def lr_find(learn: Learner, num_it: int = 100, start_lr: float = 1e-7, end_lr: float = 10.0) -> LrFinding:
    """Run fastai's learning-rate finder on ``learn`` and return what it found; the weights and optimizer are
    restored afterwards, and the EMA (which must not average the test's exploding steps) sits it out."""
    emas = [cb for cb in learn.cbs if isinstance(cb, EMA)]
    with learn.removed_cbs(emas), learn.no_logging():
        found = learn.lr_find(start_lr=start_lr, end_lr=end_lr, num_it=num_it, show_plot=False)
    rec = learn.recorder
    return LrFinding([float(v) for v in rec.lrs], [float(v) for v in rec.losses], float(found.valley))


def predict(
    learn: Learner, dl: Any = None, tta: bool = False, temperature: float | torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities (softmax, or sigmoid for multi-label) and targets on ``dl`` (default: the validation
    DataLoader), in fp32; ``tta`` averages them with the predictions on the left-right flipped images. The logits
    are divided by ``temperature`` first: by default the model's calibrated one (:func:`set_temperature`, which
    notebook 09 fits), if it has one; 1 (none) otherwise."""
    dl = learn.dls.valid if dl is None else dl
    t = temperature if temperature is not None else getattr(learn.model, TEMPERATURE_ATTR, None)
    if t is None:
        probs, targets = learn.get_preds(dl=dl)
        if tta:
            flipped, _ = learn.get_preds(dl=dl, cbs=[FlipInputs()])
            probs = (probs.float() + flipped.float()) / 2
        return probs.float(), targets
    act = getattr(learn.loss_func, "activation", None)
    if act is None:
        raise ValueError(f"The loss {type(learn.loss_func).__name__} has no activation; a temperature needs one")
    t = torch.as_tensor(t, dtype=torch.float32)
    logits, targets = learn.get_preds(dl=dl, act=lambda x: x)
    probs = act(logits.float() / t).float()
    if tta:
        flipped, _ = learn.get_preds(dl=dl, cbs=[FlipInputs()], act=lambda x: x)
        probs = (probs + act(flipped.float() / t).float()) / 2
    return probs, targets


def set_temperature(model: nn.Module, temperature: float | list[float] | None) -> None:
    """Give ``model`` its calibrated temperature (one value, or one per label), which :func:`predict` and the
    exports' preprocessing sidecars then use; None removes it."""
    if temperature is not None:
        values = torch.as_tensor(temperature, dtype=torch.float32).flatten()
        if not bool(torch.isfinite(values).all()) or bool((values <= 0).any()):
            raise ValueError(f"A temperature must be finite and positive; got {temperature!r}")
        if values.numel() not in (1, getattr(model, "num_classes", values.numel())):
            raise ValueError(
                f"Got {values.numel()} temperatures for a model with {model.num_classes} outputs; pass one value, "
                "or one per output (multi-label)"
            )
        temperature = float(values) if values.numel() == 1 else values.tolist()
    setattr(model, TEMPERATURE_ATTR, temperature)
