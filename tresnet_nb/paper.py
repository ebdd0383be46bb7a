"""The paper's numbers, in one table: speed on a V100, ImageNet top-1 per architecture, transfer results per dataset
and the Kaggle places (Ridnik et al., "TResNet: High Performance GPU-Dedicated Architecture", WACV 2021, and the
official README of Alibaba-MIIL/TResNet). The probe, the model table, the dataset table, the run records and the
notebooks read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperSpeed:
    """One row of the paper's speed table: V100, mixed precision, at 90% of the maximal batch, 224 px unless
    ``img_size`` says otherwise (EfficientNet-B1 was measured at its own 240 px); ``max_batch`` where the official
    README gives it."""

    train: float  # img/s
    infer: float  # img/s
    max_batch: int | None = None
    img_size: int = 224


@dataclass(frozen=True)
class PaperResult:
    """What the paper reports on a dataset: the architecture and resolution, the score on the metric's 0..1 scale
    (None for a leaderboard place), and the claim in words for the "ours vs paper" table."""

    arch: str | None
    img_size: int | None
    target: float | None
    text: str


# Table 1 of the paper and the official README: V100, mixed precision, speeds at 90% of the maximal batch, 224 px
# (EfficientNet-B1 at 240); the maximal training batch where the README gives it. Keys are timm's names.
PAPER_V100: dict[str, PaperSpeed] = {
    "resnet50": PaperSpeed(train=805, infer=2830, max_batch=288),
    "resnet50d": PaperSpeed(train=600, infer=2670),
    "resnext50_32x4d": PaperSpeed(train=490, infer=1940),
    "efficientnet_b1": PaperSpeed(train=440, infer=2740, max_batch=196, img_size=240),
    "seresnext50_32x4d": PaperSpeed(train=400, infer=1770),
    "mixnet_l": PaperSpeed(train=400, infer=1400),
    "tresnet_m": PaperSpeed(train=730, infer=2930, max_batch=512),
    "tresnet_l": PaperSpeed(train=345, infer=1390, max_batch=316),
    "tresnet_xl": PaperSpeed(train=250, infer=1060, max_batch=240),
}
SPEED_PROTOCOL = "V100, mixed precision, 90% of the maximal batch, 224 px (EfficientNet-B1: 240 px)"

# ImageNet-1K top-1 (official README; TResNet-M and v2-L with ImageNet-21K pretraining; EfficientNet-B1 at 240 px).
IMAGENET_TOP1: dict[str, float] = {
    "tresnet_m": 80.8,
    "tresnet_l": 81.5,
    "tresnet_xl": 82.0,
    "tresnet_v2_l": 83.9,
    "resnet50": 79.0,
    "resnet50d": 79.3,
    "resnext50_32x4d": 79.4,
    "efficientnet_b1": 79.2,
    "seresnext50_32x4d": 79.9,
    "mixnet_l": 79.0,
}

# Transfer (ImageNet-1K pretraining, top-1) and the Kaggle 2020 competitions; datasets the paper did not use have
# no entry.
TRANSFER: dict[str, PaperResult] = {
    "cifar10": PaperResult("tresnet_xl", 224, 0.990, "99.0 top-1 (TResNet-XL, 224)"),
    "cifar100": PaperResult("tresnet_xl", 224, 0.915, "91.5 top-1 (TResNet-XL, 224)"),
    "stanford_cars": PaperResult("tresnet_l", 368, 0.960, "96.0 top-1 (TResNet-L, 368)"),
    "flowers102": PaperResult("tresnet_l", 368, 0.991, "99.1 top-1 (TResNet-L, 368)"),
    "herbarium2020": PaperResult(None, None, None, "2nd of 153 teams (Kaggle)"),
    "plant_pathology": PaperResult(None, None, None, "7th of 1317 teams (Kaggle)"),
}
NO_RESULT = PaperResult(None, None, None, "-")


def transfer(dataset: str) -> PaperResult:
    """The paper's result on ``dataset`` (:data:`NO_RESULT` where it has none)."""
    return TRANSFER.get(dataset, NO_RESULT)
