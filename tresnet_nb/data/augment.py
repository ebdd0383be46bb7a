"""Training-time augmentation: per-image policies, and random erasing for the whole batch at once.

Policies (``AUGMENTS``) make one random draw per image. Flips act on the [0, 1] batch on the device; over image files
the operations of AutoAugment and RandAugment run in the loader's worker processes (:class:`ImagePolicy`, on uint8
images before collation: ``benchmarks/bench_input.py``), over in-memory arrays on the batch (:class:`BatchAugment`):

- ``flip``: horizontal flip with probability 0.5 (plus the optional small shift of the array loaders);
  ``flip=False`` leaves the flip out of every policy, for classes that a mirror image changes (digits, letters,
  signs; see ``DatasetSpec.flips_keep_class``);
- ``autoaugment``: flip, then torchvision's AutoAugment ImageNet policy (the policy behind timm's ``v0`` that the
  TResNet authors used for CIFAR-100 transfer, see FACTS.md);
- ``randaugment``: flip, then RandAugment with 2 operations at magnitude 9 (timm's ``rand-m9`` strength);
- ``none``: nothing.

Random erasing (Zhong et al. 2017; the authors' transfer command uses probability 0.5) runs after normalisation and
fills the erased rectangle with standard normal noise, as timm's ``RandomErasing(mode='pixel')`` does.
Every draw comes from torch's global generator (in a loader worker, from the worker's, which the loader seeds from
the global one at each epoch), which the checkpoints save, so resumed runs repeat them.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from .policy import AUGMENTS, check_augment  # noqa: F401  (their home is the torch-free .policy)


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


PER_IMAGE = ("autoaugment", "randaugment")  # the policies whose operations run one image at a time


class ImagePolicy:
    """The per-image part of an ``autoaugment``/``randaugment`` policy for one uint8 (C, H, W) image, as a loader's
    worker processes apply it before collation: the same draws as :meth:`BatchAugment.images` makes per image
    (flip with probability 0.5 unless ``flip`` is off, then the policy's operations), from the worker's torch
    generator (seeded from the main process's at each epoch, so runs repeat)."""

    def __init__(self, policy: str, flip: bool = True) -> None:
        if policy not in PER_IMAGE:
            raise ValueError(f"ImagePolicy runs {PER_IMAGE}; {policy!r} is applied to whole batches (BatchAugment)")
        self.policy, self.flip = policy, bool(flip)
        self._op = _policy_op(policy)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.flip and float(torch.rand(())) < 0.5:
            img = img.flip(-1)
        return self._op(img)


class BatchAugment:
    """The per-image part of a policy for a [0, 1] batch, and random erasing for the normalised batch.

    ``in_workers``: the loader's workers already applied the per-image part (:class:`ImagePolicy`, on uint8 images
    before collation), so :meth:`images` leaves the batch as it is and only the erasing runs here."""

    def __init__(self, policy: str = "flip", erasing: float = 0.0, flip: bool = True, in_workers: bool = False) -> None:
        check_augment(policy, erasing)
        if in_workers and policy not in PER_IMAGE:
            raise ValueError(f"in_workers applies to the per-image policies {PER_IMAGE}, not {policy!r}")
        self.policy, self.erasing, self.flip, self.in_workers = policy, float(erasing), bool(flip), bool(in_workers)
        self._op = _policy_op(policy)
        self._erase = v2.RandomErasing(p=1.0, scale=(0.02, 1 / 3), ratio=(0.3, 3.3), value="random")

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """Flip (unless ``flip`` is off) and (for autoaugment/randaugment) the policy's operations, drawn per image,
        on [0, 1] floats (nothing when the loader's workers did it: ``in_workers``)."""
        if self.policy == "none" or self.in_workers:
            return x
        if self.flip:
            x = flip_half(x)
        if self._op is None:
            return x
        # the policies' colour operations need uint8 levels: quantise, transform, back to [0, 1]
        levels = (x * 255).round_().clamp_(0, 255).to(torch.uint8)
        return torch.stack([self._op(img) for img in levels]).float().div_(255)

    def erase(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """Random erasing with probability ``erasing`` per image of the normalised batch ``x``, for the whole batch
        at once (:func:`erase_boxes`; ``inplace`` writes into ``x``)."""
        if self.erasing <= 0:
            return x
        return erase_boxes(x, self.erasing, inplace)

    def erase_per_image(self, x: torch.Tensor) -> torch.Tensor:
        """The same distribution as :meth:`erase`, one image at a time through torchvision's ``RandomErasing``:
        what the batch version replaced, kept for benchmarks/bench_input.py and as the tests' reference."""
        if self.erasing <= 0:
            return x
        chosen = (torch.rand(x.shape[0]) < self.erasing).tolist()
        return torch.stack([self._erase(img) if pick else img for img, pick in zip(x, chosen, strict=True)])


ERASE_SCALE, ERASE_RATIO, ERASE_TRIES = (0.02, 1 / 3), (0.3, 3.3), 10  # torchvision's RandomErasing defaults


def erase_boxes(x: torch.Tensor, p: float, inplace: bool = False) -> torch.Tensor:
    """Each image of ``x`` (N, C, H, W) gets, with probability ``p``, one rectangle of standard normal noise drawn
    as torchvision's ``RandomErasing(scale=(0.02, 1/3), ratio=(0.3, 3.3), value="random")`` draws it: up to 10
    tries of an area fraction uniform in ``scale`` and a log-uniform aspect ratio, the first whose sides fit, at a
    uniform position (none fitting: the image is left as it is). The draws of all images are made at once; the
    rectangles' parameters come from the CPU generator, the noise (only as much as the rectangles hold) from
    ``x``'s device. ``inplace`` writes into ``x`` rather than a copy."""
    n, c, h, w = x.shape
    picked = torch.rand(n) < p
    area = (h * w) * torch.empty(n, ERASE_TRIES).uniform_(*ERASE_SCALE)
    log_ratio = torch.log(torch.tensor(ERASE_RATIO))
    aspect = torch.exp(torch.empty(n, ERASE_TRIES).uniform_(float(log_ratio[0]), float(log_ratio[1])))
    bh, bw = torch.sqrt(area * aspect).round().long(), torch.sqrt(area / aspect).round().long()
    fits = (bh < h) & (bw < w)
    first = fits.int().argmax(1)  # the first try that fits (0 when none does: then `found` is False)
    found = fits.any(1) & picked
    bh, bw = bh.gather(1, first[:, None])[:, 0], bw.gather(1, first[:, None])[:, 0]
    top = (torch.rand(n) * (h - bh + 1)).floor().long()
    left = (torch.rand(n) * (w - bw + 1)).floor().long()
    if not found.any():
        return x
    erased = int((bh * bw * found).sum()) * c  # known on the CPU: no device synchronisation for the noise's size
    # the mask is built where the batch is: only the 5 per-image numbers cross to the device
    top, left, bh, bw, found = (t.to(x.device) for t in (top, left, bh, bw, found))
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    in_rows = (rows >= top[:, None]) & (rows < (top + bh)[:, None])  # (N, H)
    in_cols = (cols >= left[:, None]) & (cols < (left + bw)[:, None])  # (N, W)
    mask = in_rows[:, :, None] & in_cols[:, None, :] & found[:, None, None]
    out = x if inplace else x.clone()
    return out.masked_scatter_(mask[:, None].expand(n, c, h, w), torch.randn(erased, device=x.device, dtype=x.dtype))
