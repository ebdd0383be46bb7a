"""How to train: the recipes table (optimizer, learning rate and schedule, regularisation, each number with its
source) and the progressive-resizing schedule of phases (size, epochs, batch size)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .hints import did_you_mean
from .model.archs import check_img_size


@dataclass(frozen=True, kw_only=True)
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
    augment: str = "flip"  # per-image policy, one of tresnet_nb.data.augment.AUGMENTS
    erasing: float = 0.0  # random-erasing probability
    # the frozen stage trains the body's norm layers too (fastai's train_bn): its backward then runs through the
    # whole body; False trains the head alone there, and backward stops at the head
    train_frozen_norms: bool = True


# fmt: off
RECIPES: dict[str, Recipe] = {
    # Random initialisation: one-cycle with fastai's Adam defaults; the peak lr was picked on the embedded
    # Fashion-MNIST (3 epochs at 64 px). No per-image augmentation: in short runs from scratch the flips cost more
    # fit than they give back (benchmarks/bench_vs_fastai.py, Fashion-MNIST 2 epochs, 3 seeds: mean accuracy 0.7920
    # without flips, 0.7813 with; docs/benchmarks.md, "What the defaults rest on"). Long runs from scratch: AUGMENT="flip".
    "scratch": Recipe(
        lr=3e-3, weight_decay=0.01, decoupled_wd=True, eps=1e-5, sqr_mom=0.99, schedule="one_cycle", warmup_pct=0.25,
        label_smoothing=0.0, ema_decay=None, freeze_epochs=0, lr_mult=1.0, source="measured here", augment="none",
    ),
    # fastai's fine_tune (fastai/callback/schedule.py): a frozen one-cycle epoch at slice(base_lr) (the body's
    # trainable norm layers at base_lr/10), then base_lr/2 with slice(lr/100, lr), pct_start 0.3, div 5.
    "fastai": Recipe(
        lr=2e-3, weight_decay=0.01, decoupled_wd=True, eps=1e-5, sqr_mom=0.99, schedule="one_cycle", warmup_pct=0.3,
        label_smoothing=0.0, ema_decay=None, freeze_epochs=1, lr_mult=100.0, source="fastai fine_tune",
    ),
    # fastai's fine_tune schedule (a frozen one-cycle epoch, then one-cycle at base_lr/2) with the whole network at
    # one rate once unfrozen, where fastai keeps the body 100 times slower.
    # Measured with benchmarks/bench_vs_fastai.py, tf_efficientnet_lite0 ImageNet weights, body rate lr / lr_mult
    # for lr_mult 100 (fastai's) / 10 / 1: scikit-learn digits at 64 px, 3 seeds, mean accuracy 0.683 / 0.830 /
    # 0.982; then on data the choice was not made on, seed 0: Fashion-MNIST at 128 px 0.827 / 0.865 / 0.902, and
    # the digits drawn another way (nearest-neighbour blocks at 96 px, another split) 0.317 / - / 0.719.
    # Small grey images are far from ImageNet's photos: the body has to move, and at a hundredth of the rate
    # it barely does in a few epochs.
    "fine_tune": Recipe(
        lr=2e-3, weight_decay=0.01, decoupled_wd=True, eps=1e-5, sqr_mom=0.99, schedule="one_cycle", warmup_pct=0.3,
        label_smoothing=0.0, ema_decay=None, freeze_epochs=1, lr_mult=1.0,
        source="fastai fine_tune's schedule; one rate for the whole network, measured here",
    ),
    # The default for pretrained weights: fine_tune with the head alone in the frozen stage. The body's norm layers
    # keep their weights there (running statistics still update), so that stage's backward stops at the head.
    # Measured against fine_tune with benchmarks/bench_vs_fastai.py, tf_efficientnet_lite0 ImageNet weights, 3 seeds
    # (docs/benchmarks.md, "The frozen epoch training the head alone"): Fashion-MNIST at 128 px, mean accuracy
    # 0.9027 against 0.8980 at x1.6-x2.0 plain fastai's training img/s (fine_tune: x1.06-x1.14); on the holdout
    # draws, which neither recipe was chosen on, the redrawn digits 0.9083 against 0.8546 and the digits 0.9685
    # against 0.9722 (one image of 360 in the mean).
    "fine_tune_head": Recipe(
        lr=2e-3, weight_decay=0.01, decoupled_wd=True, eps=1e-5, sqr_mom=0.99, schedule="one_cycle", warmup_pct=0.3,
        label_smoothing=0.0, ema_decay=None, freeze_epochs=1, lr_mult=1.0, train_frozen_norms=False,
        source="fine_tune, the frozen stage training the head alone",
    ),
    # The TResNet authors' transfer recipe (their advice and timm command for CIFAR-100, see FACTS.md): Adam with
    # L2 weight decay 1e-4, lr 2e-4, cosine with 3 of 50 epochs of warm-up, label smoothing 0.1, EMA 0.995,
    # AutoAugment (timm's v0 is the ImageNet policy) and random erasing 0.5; squish resize and [0, 1] inputs are
    # what the loaders and TResNet's timm config already do. eps 1e-8 and betas (0.9, 0.999): torch Adam's defaults,
    # which the authors' timm command used.
    "miil": Recipe(
        lr=2e-4, weight_decay=1e-4, decoupled_wd=False, eps=1e-8, sqr_mom=0.999, schedule="cosine_warmup",
        warmup_pct=0.06, label_smoothing=0.1, ema_decay=0.995, freeze_epochs=0, lr_mult=1.0, source="Alibaba-MIIL",
        augment="autoaugment", erasing=0.5,
    ),
}
# fmt: on


def default_recipe(pretrained: bool) -> str:
    """The recipe used when none is named: fine-tuning for pretrained bodies (the head alone while the body is
    frozen), one-cycle from scratch otherwise."""
    return "fine_tune_head" if pretrained else "scratch"


def get_recipe(name: str) -> Recipe:
    """The :class:`Recipe` called ``name``."""
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}{did_you_mean(name, RECIPES)}; choose one of {sorted(RECIPES)}")
    return RECIPES[name]


@dataclass(frozen=True)
class Phase:
    """One step of a progressive-resizing schedule: train ``epochs`` epochs at ``size`` px with ``batch_size``."""

    size: int
    epochs: int
    batch_size: int


def parse_phases(value: str | Sequence[Any] | None) -> tuple[Phase, ...] | None:
    """A progressive schedule from a notebook parameter: None (no schedule), text ``"224:3:64,448:2:16"``
    (size:epochs:batch per phase), or a list of ``[size, epochs, batch]`` triples or dicts with those keys."""
    if value is None:
        return None
    hint = 'write it as "224:3:64,448:2:16" (size:epochs:batch_size per phase) or [[224, 3, 64], [448, 2, 16]]'
    if isinstance(value, str):
        parts = [p for p in re.split(r"[,;\s]+", value.strip()) if p]
        try:
            triples = [tuple(int(v) for v in p.split(":")) for p in parts]
        except ValueError:
            raise ValueError(f"Progressive schedule {value!r} is not understood; {hint}") from None
    else:
        keys = ("size", "epochs", "batch_size")
        triples = [
            tuple(p[k] for k in keys)
            if isinstance(p, dict)
            else tuple(getattr(p, k) for k in keys)
            if isinstance(p, Phase)
            else tuple(p)
            for p in value
        ]
    if not triples or any(len(t) != 3 for t in triples):
        raise ValueError(f"Progressive schedule {value!r} needs one or more (size, epochs, batch_size) phases; {hint}")
    phases = []
    for size, epochs, batch in triples:
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (size, epochs, batch)):
            raise ValueError(f"Progressive phase {(size, epochs, batch)} must hold integers; {hint}")
        check_img_size(size)
        if epochs < 1 or batch < 1:
            raise ValueError(f"Progressive phase {(size, epochs, batch)} needs at least 1 epoch and a batch of 1")
        phases.append(Phase(size=size, epochs=epochs, batch_size=batch))
    return tuple(phases)
