"""The paper's numbers, in one table: speed on a V100, ImageNet top-1 per architecture, transfer results per dataset
and the Kaggle places (Ridnik et al., "TResNet: High Performance GPU-Dedicated Architecture", WACV 2021, and the
official README of Alibaba-MIIL/TResNet). The probe, the model table, the dataset table, the run records and the
notebooks read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperSpeed:
    """One row of the paper's speed table: V100, mixed precision, 224 px, at 90% of the maximal batch."""

    train: float  # img/s
    infer: float  # img/s
    max_batch: int


@dataclass(frozen=True)
class PaperResult:
    """What the paper reports on a dataset: the architecture and resolution, the score on the metric's 0..1 scale
    (None for a leaderboard place), and the claim in words for the "ours vs paper" table."""

    arch: str | None
    img_size: int | None
    target: float | None
    text: str


# Table 1 of the paper and the official README: V100, mixed precision, speeds at 90% of the maximal batch, 224 px.
PAPER_V100: dict[str, PaperSpeed] = {
    "resnet50": PaperSpeed(805, 2830, 288),
    "tresnet_m": PaperSpeed(730, 2930, 512),
    "tresnet_l": PaperSpeed(345, 1390, 316),
    "tresnet_xl": PaperSpeed(250, 1060, 240),
}
SPEED_PROTOCOL = "V100, mixed precision, 90% of the maximal batch, 224 px"

# ImageNet-1K top-1 at 224 px (official README; TResNet-M and v2-L with ImageNet-21K pretraining).
IMAGENET_TOP1: dict[str, float] = {
    "tresnet_m": 80.8,
    "tresnet_l": 81.5,
    "tresnet_xl": 82.0,
    "tresnet_v2_l": 83.9,
    "resnet50": 79.0,
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
