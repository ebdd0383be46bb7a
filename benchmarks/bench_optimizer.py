"""Optimizer step time of the library's ForeachAdam (torch's fused Adam inside, or its foreach Adam) vs torch's
Adam/AdamW (fused, foreach, and foreach through fastai's OptimWrapper), side by side in one process, on the
parameter tensors of a timm model.

Every optimizer gets its own copy of the model's parameters, with the same random gradients, in fastai's two
groups (body, head: discriminative rates) and without weight decay on norm weights and biases (fastai's
``wd_bn_bias=False``: ForeachAdam's per-parameter ``do_wd``, separate no-decay groups for torch; OptimWrapper
cannot be told, see tresnet_nb/train/optim.py, so it decays everything, which costs no time). Only ``step()`` is
timed; the steps go round-robin, each round in a rotated order, after ``--warmup`` rounds (state allocation).
Usage: python benchmarks/bench_optimizer.py [--arch tresnet_m] [--steps 20] [--warmup 3] [--wd-mode both]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import timm
import torch
from fastai.optimizer import OptimWrapper
from ratios import ratio_line  # benchmarks/ratios.py
from timing import sync  # benchmarks/timing.py
from torch import nn

from tresnet_nb.train.optim import ForeachAdam

LR, MOM, SQR_MOM, EPS, WD = 1e-3, 0.9, 0.99, 1e-5, 0.01  # the library's (fastai's) Adam defaults
RATIOS = (
    ("ForeachAdam", "torch fused"),
    ("ForeachAdam", "torch foreach"),
    ("ForeachAdam foreach", "torch foreach"),
    ("OptimWrapper", "torch foreach"),
)  # (numerator, denominator) of the step-time ratios printed


def parameter_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """Fresh copies of ``model``'s parameters in fastai's body and head groups, each with a random gradient."""
    head = {id(p) for p in model.get_classifier().parameters()}
    torch.manual_seed(1)  # the same gradients for every optimizer
    groups: list[list[nn.Parameter]] = [[], []]
    for p in model.parameters():
        copy = nn.Parameter(p.detach().clone())
        copy.grad = torch.randn_like(copy)
        groups[id(p) in head].append(copy)
    return groups


def torch_groups(groups: list[list[nn.Parameter]]) -> list[dict]:
    """torch param groups for fastai's groups: each split into decayed tensors and norm weights and biases."""
    out = []
    for lr, group in zip((LR / 10, LR), groups, strict=True):
        out.append({"params": [p for p in group if p.ndim > 1], "lr": lr})
        out.append({"params": [p for p in group if p.ndim <= 1], "lr": lr, "weight_decay": 0.0})
    return out


def build(name: str, model: nn.Module, decouple_wd: bool) -> torch.optim.Optimizer | ForeachAdam | OptimWrapper:
    """The optimizer ``name`` over a fresh copy of ``model``'s parameters."""
    groups = parameter_groups(model)
    torch_cls = torch.optim.AdamW if decouple_wd else torch.optim.Adam
    kw = dict(betas=(MOM, SQR_MOM), eps=EPS, weight_decay=WD)
    if name in ("ForeachAdam", "ForeachAdam foreach"):
        fused = name == "ForeachAdam"  # the library's default; "foreach": torch's foreach Adam inside
        opt = ForeachAdam(groups, LR, mom=MOM, sqr_mom=SQR_MOM, eps=EPS, wd=WD, decouple_wd=decouple_wd, fused=fused)
        opt.set_hyper("lr", [LR / 10, LR])
        for p in groups[0] + groups[1]:
            if p.ndim <= 1:
                opt.state[p]["do_wd"] = False  # as Learner.create_opt marks norm weights and biases
        return opt
    if name == "torch foreach":
        return torch_cls(torch_groups(groups), lr=LR, foreach=True, **kw)
    if name == "torch fused":
        return torch_cls(torch_groups(groups), lr=LR, fused=True, **kw)
    if name == "OptimWrapper":
        opt = OptimWrapper(groups, opt=partial(torch_cls, foreach=True), lr=LR, **kw)
        opt.set_hyper("lr", [LR / 10, LR])
        return opt
    raise ValueError(f"Unknown optimizer {name!r}")


def step_seconds(step: Callable[[], None], device: torch.device) -> float:
    """Seconds of one ``step()``, the device synchronised before and after."""
    sync(device)
    start = time.perf_counter()
    step()
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="tresnet_m")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--wd-mode", choices=("adamw", "adam", "both"), default="both")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = timm.create_model(args.arch, num_classes=10)
    device = next(model.parameters()).device
    n_tensors = sum(1 for _ in model.parameters())
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"{args.arch}: {n_tensors} parameter tensors, {n_params / 1e6:.1f}M parameters, fp32, "
        f"{torch.get_num_threads()} threads, device {device}, torch {torch.__version__}"
    )
    names = ("ForeachAdam", "ForeachAdam foreach", "torch fused", "torch foreach", "OptimWrapper")
    modes = {"adamw": (True,), "adam": (False,), "both": (True, False)}[args.wd_mode]
    for decouple_wd in modes:
        label = "AdamW (decoupled wd)" if decouple_wd else "Adam (L2 wd)"
        opts = {name: build(name, model, decouple_wd) for name in names}
        seconds: dict[str, list[float]] = {name: [] for name in names}
        for round_ in range(args.warmup + args.steps):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                t = step_seconds(opts[name].step, device)
                if round_ >= args.warmup:
                    seconds[name].append(t)
        med = {name: statistics.median(s) for name, s in seconds.items()}
        for name in names:
            s = seconds[name]
            print(
                f"{label}, {name + ':':21s} {med[name] * 1e3:7.2f} ms/step (median of {len(s)}, "
                f"range {min(s) * 1e3:.2f}-{max(s) * 1e3:.2f})"
            )
        for ours, theirs in RATIOS:
            print(ratio_line(f"{label}: {ours} / {theirs}", med[ours] * 1e3, med[theirs] * 1e3, "ms/step"))
        del opts


if __name__ == "__main__":
    main()
