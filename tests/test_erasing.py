"""Random erasing for a whole batch at once draws what torchvision's per-image RandomErasing draws: the same
distribution of rectangle areas, shapes and positions, the same share of erased images, noise inside only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp

from tresnet_nb.data import augment
from tresnet_nb.data.augment import BatchAugment, erase_boxes

N, SIDE = 3000, 24  # images: enough for two-sample KS tests to tell distributions a few per cent apart


def boxes(batch: torch.Tensor) -> np.ndarray:
    """(top, left, height, width) of the one non-zero rectangle of each image of an erased zero batch; -1s for an
    image left as it was."""
    out = []
    for img in batch:
        rows, cols = torch.nonzero(img.abs().sum(0)).unbind(1)
        if len(rows) == 0:
            out.append((-1, -1, -1, -1))
            continue
        top, left = int(rows.min()), int(cols.min())
        height, width = int(rows.max()) - top + 1, int(cols.max()) - left + 1
        assert (img[:, top : top + height, left : left + width] != 0).all()  # one full rectangle of noise
        out.append((top, left, height, width))
    return np.array(out)


@pytest.fixture(scope="module")
def both() -> tuple[np.ndarray, np.ndarray]:
    x = torch.zeros(N, 3, SIDE, SIDE)
    torch.manual_seed(0)
    batched = boxes(BatchAugment("none", erasing=1.0).erase(x))
    torch.manual_seed(1)
    per_image = boxes(BatchAugment("none", erasing=1.0).erase_per_image(x))
    return batched, per_image


@pytest.mark.parametrize("what", ["area", "height", "width", "top", "left"])
def test_batch_erasing_draws_torchvisions_rectangles(both, what):
    batched, per_image = both
    pick = {
        "area": lambda b: b[:, 2] * b[:, 3],
        "height": lambda b: b[:, 2],
        "width": lambda b: b[:, 3],
        "top": lambda b: b[:, 0],
        "left": lambda b: b[:, 1],
    }[what]
    assert ks_2samp(pick(batched), pick(per_image)).pvalue > 1e-3


def test_the_comparison_tells_another_distribution_apart(both, monkeypatch):
    # the KS check above can fail: rectangles drawn from a larger scale range are told apart at once
    _, per_image = both
    monkeypatch.setattr(augment, "ERASE_SCALE", (0.02, 0.5))
    torch.manual_seed(0)
    wider = boxes(erase_boxes(torch.zeros(N, 3, SIDE, SIDE), 1.0))
    assert ks_2samp(wider[:, 2] * wider[:, 3], per_image[:, 2] * per_image[:, 3]).pvalue < 1e-6


def test_batch_erasing_erases_its_share_and_repeats_under_a_seed():
    x = torch.randn(2000, 3, 16, 16)
    torch.manual_seed(3)
    a = erase_boxes(x, 0.3)
    torch.manual_seed(3)
    b = erase_boxes(x, 0.3)
    assert torch.equal(a, b)
    changed = (a != x).flatten(1).any(1).float().mean().item()
    assert abs(changed - 0.3) < 0.04  # binomial(2000, 0.3): sd 0.0102
    assert torch.equal(erase_boxes(x, 0.0), x) and torch.equal(BatchAugment("none", erasing=0.0).erase(x), x)


def test_an_image_too_small_for_any_rectangle_is_left_as_it_is():
    x = torch.zeros(64, 3, 1, 1)  # no box of at least one pixel is smaller than the image: torchvision erases none
    assert torch.equal(erase_boxes(x, 1.0), x)
