"""How to train: the recipes table (optimizer, learning rate and schedule, regularisation, each number with its
source) and the progressive-resizing schedule of phases (size, epochs, batch size)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..model.archs import check_img_size


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
    augment: str = "flip"  # per-image policy, one of tresnet_nb.data.augment.AUGMENTS
    erasing: float = 0.0  # random-erasing probability


RECIPES: dict[str, Recipe] = {
    # Random initialisation: one-cycle with fastai's Adam defaults; the peak lr was picked on the embedded
    # Fashion-MNIST (3 epochs at 64 px). No per-image augmentation: in short runs from scratch the flips cost more
    # fit than they give back (benchmarks/bench_vs_fastai.py, Fashion-MNIST 2 epochs, 3 seeds: mean accuracy 0.7920
    # without flips, 0.7813 with; README "Against plain fastai and timm"). Long runs from scratch: AUGMENT="flip".
    "scratch": Recipe(3e-3, 0.01, True, 1e-5, 0.99, "one_cycle", 0.25, 0.0, None, 0, 1.0, "measured here", "none"),
    # fastai's fine_tune (fastai/callback/schedule.py): a frozen one-cycle epoch at slice(base_lr) (the body's
    # trainable norm layers at base_lr/10), then base_lr/2 with slice(lr/100, lr), pct_start 0.3, div 5.
    "fastai": Recipe(2e-3, 0.01, True, 1e-5, 0.99, "one_cycle", 0.3, 0.0, None, 1, 100.0, "fastai fine_tune"),
    # The TResNet authors' transfer recipe (their advice and timm command for CIFAR-100, see FACTS.md): Adam with
    # L2 weight decay 1e-4, lr 2e-4, cosine with 3 of 50 epochs of warm-up, label smoothing 0.1, EMA 0.995,
    # AutoAugment (timm's v0 is the ImageNet policy) and random erasing 0.5; squish resize and [0, 1] inputs are
    # what the loaders and TResNet's timm config already do. eps 1e-8 and betas (0.9, 0.999): torch Adam's defaults,
    # which the authors' timm command used.
    "miil": Recipe(
        2e-4, 1e-4, False, 1e-8, 0.999, "cosine_warmup", 0.06, 0.1, 0.995, 0, 1.0, "Alibaba-MIIL", "autoaugment", 0.5
    ),
}


def default_recipe(pretrained: bool) -> str:
    """The recipe used when none is named: fine-tuning for pretrained bodies, one-cycle from scratch otherwise."""
    return "fastai" if pretrained else "scratch"


def get_recipe(name: str) -> Recipe:
    """The :class:`Recipe` called ``name``."""
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}; choose one of {sorted(RECIPES)}")
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
        triples = [tuple(p[k] for k in keys) if isinstance(p, dict) else tuple(getattr(p, k) for k in keys)
                   if isinstance(p, Phase) else tuple(p) for p in value]  # fmt: skip
    if not triples or any(len(t) != 3 for t in triples):
        raise ValueError(f"Progressive schedule {value!r} needs one or more (size, epochs, batch_size) phases; {hint}")
    phases = []
    for size, epochs, batch in triples:
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (size, epochs, batch)):
            raise ValueError(f"Progressive phase {(size, epochs, batch)} must hold integers; {hint}")
        check_img_size(size)
        if epochs < 1 or batch < 1:
            raise ValueError(f"Progressive phase {(size, epochs, batch)} needs at least 1 epoch and a batch of 1")
        phases.append(Phase(size, epochs, batch))
    return tuple(phases)
