"""Losses for multi-label training: BCE, and the Asymmetric Loss of the TResNet authors (Ridnik et al., "Asymmetric
Loss For Multi-Label Classification", ICCV 2021), computed by timm's ``AsymmetricLossMultiLabel`` (the authors' own
code, Alibaba-MIIL/ASL ``losses.py``)."""

from __future__ import annotations

import torch
from timm.loss import AsymmetricLossMultiLabel


class AsymmetricLoss(AsymmetricLossMultiLabel):
    """ASL: focusing ``gamma_neg`` on negatives and ``gamma_pos`` on positives, and negatives' probabilities shifted
    down by ``clip`` (very easy negatives then cost nothing). Defaults are the paper's (4, 0, 0.05).

    timm's class does the arithmetic (tests/test_losses.py checks value and gradient against the paper's formula on
    0/1 targets); this subclass keeps what fastai and our recipes rely on: the paper's defaults (timm's gamma_pos is
    1), fp32 arithmetic under autocast, the mean over the batch (timm returns the sum, which would scale the
    gradient, and so the learning rate, with the batch size), and fastai's ``activation``/``decodes`` for
    ``get_preds``. On mixed (MixUp/CutMix) targets the two differ: the authors' code raises ``1 - pt`` to a mixed
    exponent, where the paper's per-label formula, linear in the target, mixed the 0 and 1 losses (on a MixUp
    batch, lam 0.7, the authors' value is about 0.72x the linear one: tests/test_losses.py)."""

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05, eps: float = 1e-8) -> None:
        super().__init__(gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip, eps=eps)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The summed ASL of the batch divided by its size."""
        return super().forward(logits.float(), targets.float()) / logits.shape[0]

    def activation(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities for fastai's ``get_preds``."""
        return torch.sigmoid(x)

    def decodes(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted labels from probabilities."""
        return x > 0.5
