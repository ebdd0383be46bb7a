"""Training-time augmentation: per-image policies applied to batches on the device, random erasing, MixUp/CutMix,
and the flip used for test-time augmentation.

Policies (``AUGMENTS``) act on the uint8-derived [0, 1] batch before normalisation, one random draw per image:

- ``flip``: horizontal flip with probability 0.5 (plus the optional small shift of the array loaders);
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
from fastai.callback.core import Callback
from fastai.callback.mixup import MixHandler
from fastai.data.core import DataLoaders
from torch.distributions.beta import Beta
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

    def __init__(self, policy: str = "flip", erasing: float = 0.0) -> None:
        check_augment(policy, erasing)
        self.policy, self.erasing = policy, float(erasing)
        self._op = _policy_op(policy)
        self._erase = v2.RandomErasing(p=1.0, scale=(0.02, 1 / 3), ratio=(0.3, 3.3), value="random")

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """Flip and (for autoaugment/randaugment) the policy's operations, drawn per image, on [0, 1] floats."""
        if self.policy == "none":
            return x
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


def _preprocess_steps(dls: DataLoaders) -> list:
    """The tresnet_nb Preprocess steps of the training loader of ``dls`` (none for loaders built otherwise)."""
    from .datasets.arrays import Preprocess

    steps = getattr(dls.train.after_batch, "fs", [dls.train.after_batch])  # a fastai Pipeline, or the bare transform
    return [t for t in steps if isinstance(t, Preprocess)]


def set_augment(dls: DataLoaders, policy: str, erasing: float = 0.0) -> None:
    """Switch the training loader of ``dls`` (built by tresnet_nb's array or file loaders) to ``policy``."""
    check_augment(policy, erasing)
    found = _preprocess_steps(dls)
    if not found:
        raise ValueError(
            "These DataLoaders have no tresnet_nb Preprocess step, so the recipe's augmentation cannot be set. Build "
            "them with tresnet_nb.array_dls or tresnet_nb.datasets.highres.file_dls, or pass augment='as_built' to "
            "build_learner to keep your own."
        )
    for t in found:
        t.aug = BatchAugment(policy, erasing)


def augment_of(dls: DataLoaders) -> tuple[str, float]:
    """The (policy, erasing) the training loader of ``dls`` applies ('as_built' if it has no tresnet_nb Preprocess),
    to carry it over to the loaders of a progressive phase."""
    found = [t.aug for t in _preprocess_steps(dls) if t.aug is not None]
    return (found[0].policy, found[0].erasing) if found else ("as_built", 0.0)


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
