"""AsymmetricLoss (timm's AsymmetricLossMultiLabel underneath) agrees with the ASL paper's formula in value and
gradient, and keeps the paper's defaults, the batch mean and fp32 arithmetic."""

from __future__ import annotations

import pytest
import torch

from tresnet_nb.train.losses import AsymmetricLoss


def paper_asl(
    logits: torch.Tensor, targets: torch.Tensor, gamma_neg: float, gamma_pos: float, clip: float, eps: float = 1e-8
) -> torch.Tensor:
    """ASL as Ridnik et al. (ICCV 2021) define it (eqs. 1-5; the library's own formula before timm's took over):
    L+ = (1-p)^gamma_pos log p, L- = p_m^gamma_neg log(1-p_m) with p_m = max(p - clip, 0), summed, over the batch."""
    p = torch.sigmoid(logits.float())
    targets = targets.float()
    p_m = (p - clip).clamp(min=0) if clip > 0 else p
    loss_pos = targets * (1 - p).pow(gamma_pos) * torch.log(p.clamp(min=eps))
    loss_neg = (1 - targets) * p_m.pow(gamma_neg) * torch.log((1 - p_m).clamp(min=eps))
    return -(loss_pos + loss_neg).sum() / logits.shape[0]


@pytest.mark.parametrize(
    ("gamma_neg", "gamma_pos", "clip"),
    [(None, None, None), (4.0, 1.0, 0.05), (2.0, 3.0, 0.2), (3.0, 2.0, 0.0), (0.0, 0.0, 0.0), (1.0, 0.0, 0.1)],
)
def test_timm_asl_matches_the_paper_formula_in_value_and_gradient(gamma_neg, gamma_pos, clip):
    torch.manual_seed(0)
    logits = torch.randn(16, 20) * 4  # saturated, clipped (p < clip) and uncertain predictions alike
    targets = (torch.rand(16, 20) < 0.3).float()
    kwargs = {} if gamma_neg is None else dict(gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip)
    reference = dict(gamma_neg=4.0, gamma_pos=0.0, clip=0.05) if gamma_neg is None else kwargs  # the paper's defaults
    ours, theirs = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    loss, expected = AsymmetricLoss(**kwargs)(ours, targets), paper_asl(theirs, targets, **reference)
    loss.backward()
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-5, atol=1e-8)
    if clip:
        assert (ours.grad[(torch.sigmoid(logits) < clip) & (targets == 0)] == 0).all()  # clipped negatives: no gradient


def test_loss_is_the_batch_mean_in_fp32():
    torch.manual_seed(1)
    logits, targets = torch.randn(8, 5), (torch.rand(8, 5) < 0.5).float()
    asl = AsymmetricLoss()
    assert asl(logits.repeat(3, 1), targets.repeat(3, 1)).item() == pytest.approx(asl(logits, targets).item(), rel=1e-6)
    low = asl(logits.bfloat16(), targets.bfloat16())  # as the loss would see an autocast forward's logits
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(paper_asl(logits.bfloat16(), targets, 4.0, 0.0, 0.05).item(), rel=1e-6)


def test_mixed_targets_get_the_authors_focusing_not_the_linear_mix_of_losses():
    """The one place timm's (the authors') code and the paper's per-label formula part: targets strictly between 0 and
    1, as MixupCutmix makes for multi-label losses; there the focusing exponent is mixed too."""
    torch.manual_seed(0)
    logits, hard = torch.randn(64, 4) * 2, (torch.rand(64, 4) < 0.3).float()
    mixed = torch.lerp(hard[torch.randperm(64)], hard, 0.7)  # MixUp's targets at lam 0.7
    ratio = AsymmetricLoss()(logits, mixed).item() / paper_asl(logits, mixed, 4.0, 0.0, 0.05).item()
    assert 0.6 < ratio < 0.9  # 0.72 here: below the mix of the 0 and 1 losses, as the docstring says
    no_focusing = dict(gamma_neg=0.0, gamma_pos=0.0, clip=0.0)  # without focusing the loss is linear in the target
    assert AsymmetricLoss(**no_focusing)(logits, mixed).item() == pytest.approx(
        paper_asl(logits, mixed, **no_focusing).item(), rel=1e-6
    )
