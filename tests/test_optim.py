"""ForeachAdam does fastai's Adam arithmetic (through torch's fused or foreach Adam), with fastai's state, groups,
freezing and weight-decay flags; torch's Adam/AdamW agree with it, and fastai's OptimWrapper around them would not
honour wd_bn_bias=False."""

from __future__ import annotations

import copy

import pytest
import torch
from fastai.optimizer import Adam
from torch import nn

from tresnet_nb.train.optim import ForeachAdam


def model() -> nn.Module:
    """A conv (no bias: a bias before BatchNorm gets a gradient of pure rounding noise, which implementations that
    round differently cannot agree on), BatchNorm and a linear head."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


def groups(m: nn.Module) -> list[list[nn.Parameter]]:
    return [list(m[0].parameters()) + list(m[1].parameters()), list(m[3].parameters())]


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("decouple_wd", [True, False])
def test_foreach_adam_matches_fastai_adam_step_for_step(decouple_wd, fused):
    a, b = model(), model()
    kw = dict(mom=0.9, sqr_mom=0.99, eps=1e-5, wd=0.05, decouple_wd=decouple_wd)
    ours, theirs = ForeachAdam(groups(a), 1e-2, fused=fused, **kw), Adam(groups(b), 1e-2, **kw)
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


def assert_close_at_scale(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal within 1e-6 relative, elements near zero within 1e-6 of the tensor's largest magnitude (fp32)."""
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6 * expected.abs().max().item())


@pytest.mark.parametrize("torch_impl", ["fused", "foreach"])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("decouple_wd", [True, False])
def test_foreach_adam_matches_torch_adam_and_adamw(decouple_wd, fused, torch_impl):
    a, b = model(), model()
    mom, sqr_mom, eps, wd, lrs = 0.9, 0.99, 1e-5, 0.05, (1e-3, 1e-2)
    ours = ForeachAdam(
        groups(a), lrs[1], mom=mom, sqr_mom=sqr_mom, eps=eps, wd=wd, decouple_wd=decouple_wd, fused=fused
    )
    ours.set_hyper("lr", list(lrs))
    for p in a[1].parameters():  # what wd_bn_bias=False marks; torch says it with a group without weight decay
        ours.state[p]["do_wd"] = False
    torch_groups = [
        {"params": list(b[0].parameters()), "lr": lrs[0]},
        {"params": list(b[1].parameters()), "lr": lrs[0], "weight_decay": 0.0},
        {"params": list(b[3].parameters()), "lr": lrs[1]},
    ]
    cls = torch.optim.AdamW if decouple_wd else torch.optim.Adam  # torch's Adam: L2 (fastai's decouple_wd=False)
    theirs = cls(torch_groups, lr=lrs[1], betas=(mom, sqr_mom), eps=eps, weight_decay=wd, **{torch_impl: True})
    torch.manual_seed(1)
    for i in range(5):
        if i == 3:  # a scheduler moving the momentum: fastai's 'mom' hyper-parameter, torch's betas[0]
            ours.set_hyper("mom", 0.85)
            for g in theirs.param_groups:
                g["betas"] = (0.85, sqr_mom)
        x = torch.randn(8, 3, 8, 8)
        for opt, m in ((ours, a), (theirs, b)):
            m(x).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert_close_at_scale(pa, pb)
        sa, sb = ours.state[pa], theirs.state[pb]
        assert sa["step"] == int(sb["step"]) == 5
        assert_close_at_scale(sa["grad_avg"], sb["exp_avg"])
        assert_close_at_scale(sa["sqr_avg"], sb["exp_avg_sq"])


def test_optim_wrapper_decays_the_norm_weights_wd_bn_bias_exempts():
    """Why ForeachAdam stays: fastai's Learner marks norm weights and biases ``do_wd=False`` in the optimizer's
    per-parameter state, which ForeachAdam reads and OptimWrapper(torch AdamW) keeps apart from torch's and ignores."""
    from functools import partial

    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from fastai.optimizer import OptimWrapper

    moved = {}
    for name, opt_func in (
        ("ForeachAdam", ForeachAdam),
        ("OptimWrapper", partial(OptimWrapper, opt=partial(torch.optim.AdamW, foreach=True))),
    ):
        m = model()
        learn = Learner(DataLoaders(), m, loss_func=nn.MSELoss(), opt_func=opt_func, lr=0.1, wd=0.5)
        assert learn.wd_bn_bias is False
        learn.create_opt()  # marks the norm parameters do_wd=False
        learn.opt.set_hypers(wd=0.5)  # as Learner.fit does
        bn = m[1].weight
        before = bn.detach().clone()
        for p in m.parameters():
            p.grad = torch.zeros_like(p)  # no gradient signal: only weight decay can move a tensor
        learn.opt.step()
        moved[name] = (before - bn.detach()).abs().max().item()
    assert moved["ForeachAdam"] == 0
    assert moved["OptimWrapper"] == pytest.approx(0.1 * 0.5, rel=1e-5)  # lr * wd of BN weights 1.0: decayed anyway


def test_an_optimizer_checkpoint_in_fastai_state_resumes(tmp_path):
    """A checkpoint's optimizer entry as ForeachAdam wrote it before torch's kernels did its arithmetic: fastai's
    state (grad_avg, sqr_avg, int step, do_wd), which fastai's Adam writes too."""
    from tresnet_nb.train.checkpoint import plain

    a, b = model(), model()
    kw = dict(mom=0.9, sqr_mom=0.99, eps=1e-5, wd=0.05, decouple_wd=False)
    before = Adam(groups(a), 1e-2, **kw)
    for p in a[1].parameters():
        before.state[p]["do_wd"] = False
    x = torch.randn(4, 3, 8, 8)
    for _ in range(2):
        a(x).pow(2).mean().backward()
        before.step()
        before.zero_grad()
    torch.save(plain({"opt": before.state_dict()}), tmp_path / "checkpoint.pth")
    b.load_state_dict(a.state_dict())
    after = ForeachAdam(groups(b), 1e-2, **kw)
    after.load_state_dict(torch.load(tmp_path / "checkpoint.pth", weights_only=True)["opt"])
    assert all(after.state[p]["do_wd"] is False for p in b[1].parameters())
    for opt, m in ((before, a), (after, b)):
        for _ in range(2):
            m(x * 2).pow(2).mean().backward()
            opt.step()
            for p in m.parameters():
                p.grad = None
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pb, pa, rtol=1e-6, atol=1e-7)
        assert after.state[pb]["step"] == before.state[pa]["step"] == 4


def test_fused_steps_are_right_when_the_model_changes_memory_format_after_its_state_was_made():
    """torch's fused CPU kernel assumes parameter, gradient and moments share one layout; after
    ``model.to(memory_format=torch.channels_last)`` (ChannelsLast does it each fit) the moments made before keep
    theirs, so those tensors must take the foreach path."""
    a, b = model(), model()
    ours, reference = ForeachAdam(groups(a), 1e-2, fused=True), ForeachAdam(groups(b), 1e-2, fused=False)
    x = torch.randn(8, 3, 8, 8)
    for i in range(3):
        if i == 1:
            for m in (a, b):
                m.to(memory_format=torch.channels_last)
        for opt, m in ((ours, a), (reference, b)):
            m(x * (i + 1)).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
    conv = next(a[0].parameters())
    assert conv.is_contiguous(memory_format=torch.channels_last) and ours.state[conv]["grad_avg"].is_contiguous()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert_close_at_scale(pa, pb)
        assert_close_at_scale(ours.state[pa]["sqr_avg"], reference.state[pb]["sqr_avg"])


@pytest.mark.parametrize("fused", [True, False])
def test_loaded_state_moves_to_each_parameters_device_and_dtype(fused):
    # a checkpoint is mapped to the CPU and loaded where the model is (CUDA in use, float64 here): the state
    # follows each parameter, as torch's Optimizer.load_state_dict casts it, and the step is the one it would have been
    a, x = model(), torch.randn(8, 3, 8, 8)
    b = copy.deepcopy(a).double()
    ours = ForeachAdam(groups(a), 1e-2, fused=fused)
    a(x).pow(2).mean().backward()
    ours.step()
    ours.zero_grad()
    loaded = ForeachAdam(groups(b), 1e-2, fused=fused)
    loaded.load_state_dict(copy.deepcopy(ours.state_dict()))
    for p, _, state, _ in loaded.all_params():
        assert (state["grad_avg"].dtype, state["sqr_avg"].dtype) == (p.dtype, p.dtype)
    b.load_state_dict(a.state_dict())
    for m, opt, inputs in ((a, ours, x), (b, loaded, x.double())):
        m(inputs).pow(2).mean().backward()
        opt.step()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pb, pa.double(), rtol=1e-5, atol=1e-6)
