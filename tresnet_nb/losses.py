"""Losses for multi-label training: BCE, and the Asymmetric Loss of the TResNet authors (Ridnik et al., "Asymmetric
Loss For Multi-Label Classification", ICCV 2021), written from the paper's definition."""

from __future__ import annotations

import torch
from torch import nn


class AsymmetricLoss(nn.Module):
    """ASL: focusing ``gamma_neg`` on negatives and ``gamma_pos`` on positives, and negatives' probabilities shifted
    down by ``clip`` (very easy negatives then cost nothing). Defaults are the paper's (4, 0, 0.05)."""

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05, eps: float = 1e-8) -> None:
        super().__init__()
        self.gamma_neg, self.gamma_pos, self.clip, self.eps = gamma_neg, gamma_pos, clip, eps

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(logits.float())
        targets = targets.float()
        p_neg = (p - self.clip).clamp(min=0) if self.clip > 0 else p  # probability shifting (paper eq. 5)
        loss_pos = targets * (1 - p).pow(self.gamma_pos) * torch.log(p.clamp(min=self.eps))
        loss_neg = (1 - targets) * p_neg.pow(self.gamma_neg) * torch.log((1 - p_neg).clamp(min=self.eps))
        return -(loss_pos + loss_neg).sum() / logits.shape[0]

    def activation(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x)

    def decodes(self, x: torch.Tensor) -> torch.Tensor:
        return x > 0.5
