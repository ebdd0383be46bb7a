"""Training-time augmentation: per-image policies applied to batches on the device, and random erasing.

Policies (``AUGMENTS``) act on the uint8-derived [0, 1] batch before normalisation, one random draw per image:

- ``flip``: horizontal flip with probability 0.5 (plus the optional small shift of the array loaders);
  ``flip=False`` leaves the flip out of every policy, for classes that a mirror image changes (digits, letters,
  signs; see ``DatasetSpec.flips_keep_class``);
- ``autoaugment``: flip, then torchvision's AutoAugment ImageNet policy (the policy behind timm's ``v0`` that the
  TResNet authors used for CIFAR-100 transfer, see FACTS.md);
- ``randaugment``: flip, then RandAugment with 2 operations at magnitude 9 (timm's ``rand-m9`` strength);
- ``none``: nothing.

Random erasing (Zhong et al. 2017; the authors' transfer command uses probability 0.5) runs after normalisation and
fills the erased rectangle with standard normal noise, as timm's ``RandomErasing(mode='pixel')`` does.
Every draw comes from torch's global generator, which the checkpoints save, so resumed runs repeat them.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

AUGMENTS = ("none", "flip", "autoaugment", "randaugment")


def check_augment(policy: str, erasing: float = 0.0) -> None:
    """Raise ValueError for an unknown ``policy`` or an ``erasing`` probability outside [0, 1]."""
    if policy not in AUGMENTS:
        raise ValueError(f"Unknown augmentation {policy!r}; choose one of {AUGMENTS}")
    if isinstance(erasing, bool) or not isinstance(erasing, (int, float)) or not 0 <= erasing <= 1:
        raise ValueError(f"Random-erasing probability must be a number in [0, 1], not {erasing!r}")


def _policy_op(policy: str) -> v2.Transform | None:
    if policy == "autoaugment":
        return v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)
    if policy == "randaugment":
        return v2.RandAugment(num_ops=2, magnitude=9)
    return None


def flip_half(x: torch.Tensor) -> torch.Tensor:
    """Each image of the batch ``x`` (N, C, H, W) flipped left-right with probability 0.5."""
    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


class BatchAugment:
    """The per-image part of a policy for a [0, 1] batch, and random erasing for the normalised batch."""

    def __init__(self, policy: str = "flip", erasing: float = 0.0, flip: bool = True) -> None:
        check_augment(policy, erasing)
        self.policy, self.erasing, self.flip = policy, float(erasing), bool(flip)
        self._op = _policy_op(policy)
        self._erase = v2.RandomErasing(p=1.0, scale=(0.02, 1 / 3), ratio=(0.3, 3.3), value="random")

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """Flip (unless ``flip`` is off) and (for autoaugment/randaugment) the policy's operations, drawn per image,
        on [0, 1] floats."""
        if self.policy == "none":
            return x
        if self.flip:
            x = flip_half(x)
        if self._op is None:
            return x
        # the policies' colour operations need uint8 levels: quantise, transform, back to [0, 1]
        levels = (x * 255).round_().clamp_(0, 255).to(torch.uint8)
        return torch.stack([self._op(img) for img in levels]).float().div_(255)

    def erase(self, x: torch.Tensor) -> torch.Tensor:
        """Random erasing with probability ``erasing`` per image of the normalised batch ``x``."""
        if self.erasing <= 0:
            return x
        chosen = (torch.rand(x.shape[0]) < self.erasing).tolist()
        return torch.stack([self._erase(img) if pick else img for img, pick in zip(x, chosen, strict=True)])
