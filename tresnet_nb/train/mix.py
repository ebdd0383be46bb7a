"""Batch-level training callbacks: MixUp/CutMix, and the flip of test-time augmentation."""

from __future__ import annotations

import torch
from fastai.callback.core import Callback
from fastai.callback.mixup import MixHandler
from torch.distributions.beta import Beta


class MixupCutmix(MixHandler):
    """MixUp (Zhang et al. 2018) and/or CutMix (Yun et al. 2019) on training batches: with both enabled, each batch
    uses one of them, CutMix with probability ``switch_prob`` (timm's default scheme). Targets are mixed for
    multi-label losses, and the loss is mixed for single-label ones (fastai's MixHandler)."""

    order = 20  # after the batch is on its device and in its memory format

    def __init__(self, mixup: float = 0.0, cutmix: float = 0.0, switch_prob: float = 0.5) -> None:
        for name, alpha in (("mixup", mixup), ("cutmix", cutmix)):
            if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha < 0:
                raise ValueError(f"{name.upper()} must be a Beta alpha >= 0 (0 switches it off), not {alpha!r}")
        if mixup == 0 and cutmix == 0:
            raise ValueError("MixupCutmix needs MIXUP > 0 or CUTMIX > 0")
        super().__init__(max(mixup, cutmix))
        self.mixup, self.cutmix, self.switch_prob = float(mixup), float(cutmix), switch_prob

    def _lam(self, alpha: float) -> float:
        return float(Beta(torch.tensor(alpha), torch.tensor(alpha)).sample())

    def before_batch(self) -> None:
        x, y = self.xb[0], self.yb[0]
        use_cutmix = self.cutmix > 0 and (self.mixup == 0 or float(torch.rand(())) < self.switch_prob)
        shuffle = self.shuffle = torch.randperm(x.shape[0]).to(x.device)
        if use_cutmix:
            lam = self._lam(self.cutmix)
            h, w = x.shape[-2:]
            cut_h, cut_w = int(round(h * (1 - lam) ** 0.5)), int(round(w * (1 - lam) ** 0.5))
            cy, cx = int(torch.randint(0, h, ())), int(torch.randint(0, w, ()))
            y1, y2 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
            x1, x2 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
            mixed = x.clone()
            mixed[..., y1:y2, x1:x2] = x[shuffle][..., y1:y2, x1:x2]
            lam = 1 - (y2 - y1) * (x2 - x1) / (h * w)  # the kept area decides the weights
            self.box = (y1, y2, x1, x2)
        else:
            lam = self._lam(self.mixup)
            mixed = torch.lerp(x[shuffle], x, lam)
        self.lam = torch.tensor(lam, device=x.device)
        self.yb1 = (y[shuffle],)
        self.learn.xb = (mixed, *self.xb[1:])
        if not self.stack_y:  # multi-label: mix the targets themselves
            self.learn.yb = (torch.lerp(y[shuffle].float(), y.float(), lam),)


class FlipInputs(Callback):
    """Flip every input batch left-right (test-time augmentation: see tresnet_nb.train.predict)."""

    order = 6  # after ChannelsLast

    def before_batch(self) -> None:
        self.learn.xb = tuple(x.flip(3) if x.ndim == 4 else x for x in self.xb)
