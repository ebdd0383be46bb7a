"""AutoAugment/RandAugment over image files run in the loader's workers (``ImagePolicy`` on uint8 images before
collation) and draw what the batch path (``BatchAugment.images``) draws; flips and erasing stay batched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import ks_2samp

from tresnet_nb.data.arrays import augment_of, set_augment
from tresnet_nb.data.augment import BatchAugment, ImagePolicy
from tresnet_nb.data.base import Split
from tresnet_nb.data.highres import FileItems, cache_split, file_dls

N = 1500  # draws per side: enough for a KS test to tell the policies apart (checked below)


def images(n: int = 6, side: int = 32, seed: int = 0) -> torch.Tensor:
    """``n`` uint8 (3, side, side) images with structure (gradients and a bright square), so that geometric and
    colour operations both change them."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 255, side)
    out = (ramp.view(1, 1, side) * torch.rand(n, 3, 1, 1, generator=g) + ramp.view(1, side, 1) * 0.3).clamp(0, 255)
    out[:, :, 4:12, 20:28] = 250
    return out.to(torch.uint8)


def changes_worker(policy: str, x: torch.Tensor, seed: int) -> np.ndarray:
    """Mean absolute change of each image through ``ImagePolicy`` (one image at a time, uint8 in and out)."""
    torch.manual_seed(seed)
    op = ImagePolicy(policy)
    return np.array([(op(img).float() - img.float()).abs().mean().item() for _ in range(N // len(x)) for img in x])


def changes_batch(policy: str, x: torch.Tensor, seed: int) -> np.ndarray:
    """The same through ``BatchAugment.images`` on the [0, 1] float batch, in 0-255 units."""
    torch.manual_seed(seed)
    aug = BatchAugment(policy)
    floats = x.float() / 255
    rounds = [(aug.images(floats.clone()) * 255 - x.float()).abs().mean((1, 2, 3)) for _ in range(N // len(x))]
    return torch.cat(rounds).numpy()


@pytest.mark.parametrize("policy", ["autoaugment", "randaugment"])
def test_the_worker_policy_draws_as_the_batch_policy(policy):
    x = images()
    assert ks_2samp(changes_worker(policy, x, 0), changes_batch(policy, x, 1)).pvalue > 1e-3


def test_the_comparison_tells_the_two_policies_apart():
    # the check above can fail: AutoAugment's and RandAugment's changes are told apart at once
    x = images()
    assert ks_2samp(changes_worker("autoaugment", x, 0), changes_worker("randaugment", x, 1)).pvalue < 1e-6


def test_the_worker_policy_flips_half_and_never_without_flips():
    x = images(n=1)[0]
    x[:, :, :16] = 0  # dark left half: a mirror puts it on the right
    # the policy's own operations may move pixels too; with the identity op only the flip is left to count
    op = ImagePolicy("randaugment")
    op._op = lambda img: img
    torch.manual_seed(0)
    flipped = sum(torch.equal(op(x), x.flip(-1)) for _ in range(400))
    assert 160 <= flipped <= 240  # binomial(400, 0.5): mean 200, sd 10
    off = ImagePolicy("randaugment", flip=False)
    off._op = lambda img: img
    assert not any(torch.equal(off(x), x.flip(-1)) for _ in range(50))
    with pytest.raises(ValueError, match="flip"):
        ImagePolicy("flip")


def write_jpegs(folder, n=8):
    folder.mkdir()
    paths = []
    for i in range(n):
        pixels = (np.indices((40, 40)).sum(0) * (3 + i) % 256).astype(np.uint8)
        path = folder / f"i{i}.jpg"
        Image.fromarray(np.stack([pixels] * 3, -1)).save(path, quality=95)
        paths.append(path)
    return Split(tuple(p.stem for p in paths), np.arange(n) % 2, paths=tuple(paths))


@pytest.mark.parametrize(("policy", "in_workers"), [("autoaugment", True), ("randaugment", True), ("flip", False)])
def test_file_loaders_run_the_per_image_policy_in_their_workers(tmp_path, policy, in_workers):
    split = cache_split(write_jpegs(tmp_path / "imgs"), 32, tmp_path / "cache", workers=1)
    cfg = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
    dls = file_dls(split, split, 32, 4, cfg, torch.device("cpu"), num_workers=2)
    set_augment(dls, policy, 0.25, flip=True)
    items = dls.train.dataset
    assert isinstance(items, FileItems)
    assert isinstance(items.policy, ImagePolicy) == in_workers
    aug = dls.train.after_batch.fs[0].aug if hasattr(dls.train.after_batch, "fs") else dls.train.after_batch.aug
    assert (aug.in_workers, aug.erasing) == (in_workers, 0.25)
    assert augment_of(dls) == (policy, 0.25, True)  # what a progressive phase carries over
    # the batches come through two worker processes; the batch path then leaves the images to them
    torch.manual_seed(0)
    x, y = dls.train.one_batch()
    assert x.shape == (4, 3, 32, 32) and len(y) == 4
    if in_workers:
        plain = torch.stack([FileItems(split, 32)[i][0] for i in range(len(split))]).float() / 255
        assert torch.equal(aug.images(plain.clone()), plain)
        # the workers changed the images: none of the batch is an unaugmented item (AutoAugment/RandAugment
        # leave an image as it is with small probability; a seeded draw keeps the check repeatable)
        decoded = {tuple(img.flatten()[:64].tolist()) for img in plain}
        assert sum(tuple(img.flatten()[:64].tolist()) in decoded for img in x) < len(x)
    set_augment(dls, "none")
    assert items.policy is None
