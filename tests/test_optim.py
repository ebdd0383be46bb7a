"""ForeachAdam does fastai's Adam arithmetic, with fastai's state, groups, freezing and weight-decay flags."""

from __future__ import annotations

import copy

import pytest
import torch
from fastai.optimizer import Adam
from torch import nn

from tresnet_nb.optim import ForeachAdam


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


def groups(m: nn.Module) -> list[list[nn.Parameter]]:
    return [list(m[0].parameters()) + list(m[1].parameters()), list(m[3].parameters())]


@pytest.mark.parametrize("decouple_wd", [True, False])
def test_foreach_adam_matches_fastai_adam_step_for_step(decouple_wd):
    a, b = model(), model()
    kw = dict(mom=0.9, sqr_mom=0.99, eps=1e-5, wd=0.05, decouple_wd=decouple_wd)
    ours, theirs = ForeachAdam(groups(a), 1e-2, **kw), Adam(groups(b), 1e-2, **kw)
    for opt, m in ((ours, a), (theirs, b)):
        for p in m[1].parameters():  # norm weights and biases: no weight decay, as Learner sets with wd_bn_bias=False
            opt.state[p]["do_wd"] = False
        opt.set_hyper("lr", [1e-3, 1e-2])  # discriminative rates
    x = torch.randn(8, 3, 8, 8)
    for i in range(4):
        if i == 1:  # the body frozen for a step: its state must not advance
            for opt in (ours, theirs):
                opt.freeze_to(1)
        if i == 2:
            for opt in (ours, theirs):
                opt.freeze_to(0)
        for opt, m in ((ours, a), (theirs, b)):
            m(x * (i + 1)).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
        for p in b.parameters():  # as ForeachAdam.zero_grad does: frozen tensors then get no (zero) gradient
            p.grad = None
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        sa, sb = ours.state[pa], theirs.state[pb]
        assert sa["step"] == sb["step"]
        torch.testing.assert_close(sa["grad_avg"], sb["grad_avg"])
        torch.testing.assert_close(sa["sqr_avg"], sb["sqr_avg"])
    assert ours.state[next(a[0].parameters())]["step"] == 3  # frozen for one of the four steps
    assert all(p.grad is None for p in a.parameters())  # zero_grad frees


def test_state_dict_round_trip_continues_identically():
    a = model()
    opt = ForeachAdam(groups(a), 1e-2)
    x = torch.randn(4, 3, 8, 8)
    a(x).sum().backward()
    opt.step()
    b = copy.deepcopy(a)
    opt_b = ForeachAdam(groups(b), 1e-2)
    opt_b.load_state_dict(copy.deepcopy(opt.state_dict()))
    for m, o in ((a, opt), (b, opt_b)):
        o.zero_grad()
        m(x).sum().backward()
        o.step()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
