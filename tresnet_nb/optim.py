"""Adam/AdamW as a fastai Optimizer whose step runs on whole lists of tensors at once (``torch._foreach_*``).

fastai's own ``Adam`` applies five per-parameter step functions in a Python loop: on TResNet-M (about 300
parameter tensors) that is some 1,500 small operations per step, measured at about 17 ms more per step than
torch's foreach AdamW on 2 CPU cores, and worse on a GPU, where each is a kernel launch. :class:`ForeachAdam` does
the same arithmetic as ``fastai.optimizer.Adam`` (decoupled weight decay or L2, dampened moments, bias correction
``debias``, eps outside the square root) for every tensor of a parameter group at once, and keeps fastai's
per-parameter state (``grad_avg``, ``sqr_avg``, ``step``, ``do_wd``), so freezing, discriminative learning rates,
schedulers, ``wd_bn_bias=False`` and checkpoints work as they do with fastai's optimizer. One difference:
``zero_grad`` frees gradients instead of zeroing them, so tensors frozen after training are left alone (fastai's
optimizer would go on stepping them with a zero gradient: decaying their weights and moments).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from fastai.optimizer import Optimizer
from fastcore.basics import noop


class ForeachAdam(Optimizer):
    """fastai's Adam (``decouple_wd=True``: AdamW) with its step vectorised over each parameter group."""

    def __init__(
        self, params: Any, lr: float, mom: float = 0.9, sqr_mom: float = 0.99, eps: float = 1e-5, wd: float = 0.01,
        decouple_wd: bool = True,
    ) -> None:  # fmt: skip
        super().__init__(params, [noop], lr=lr, mom=mom, sqr_mom=sqr_mom, eps=eps, wd=wd)
        self.decouple_wd = decouple_wd

    def zero_grad(self) -> None:
        for p, *_ in self.all_params(with_grad=True):
            p.grad = None  # frees the gradients rather than writing zeros over them

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        if closure is not None:
            raise NotImplementedError("ForeachAdam does not take a closure")
        # tensors that share hyper-parameters, weight-decay flag and step count are updated together
        buckets: dict[tuple[int, bool, int, torch.device, torch.dtype], list] = defaultdict(list)
        hypers: dict[int, dict[str, Any]] = {}
        for p, pg, state, hyper in self.all_params(with_grad=True):
            if "grad_avg" not in state:
                state["grad_avg"] = torch.zeros_like(p)
                state["sqr_avg"] = torch.zeros_like(p)
            state["step"] = state.get("step", 0) + 1
            self.state[p] = state
            group = id(pg)
            hypers[group] = hyper
            buckets[group, bool(state.get("do_wd", True)), state["step"], p.device, p.dtype].append((p, state))
        for (group, do_wd, step, _, _), items in buckets.items():
            h = hypers[group]
            lr, mom, sqr_mom, eps, wd = h["lr"], h["mom"], h["sqr_mom"], h["eps"], h["wd"]
            params = [p for p, _ in items]
            grads = [p.grad for p in params]
            grad_avg = [s["grad_avg"] for _, s in items]
            sqr_avg = [s["sqr_avg"] for _, s in items]
            if do_wd and wd != 0:
                if self.decouple_wd:  # fastai weight_decay: p *= 1 - lr * wd
                    torch._foreach_mul_(params, 1 - lr * wd)
                else:  # fastai l2_reg: grad += wd * p
                    torch._foreach_add_(grads, params, alpha=wd)
            torch._foreach_mul_(grad_avg, mom)
            torch._foreach_add_(grad_avg, grads, alpha=1 - mom)
            torch._foreach_mul_(sqr_avg, sqr_mom)
            torch._foreach_addcmul_(sqr_avg, grads, grads, value=1 - sqr_mom)
            debias1 = 1 - mom**step  # fastai's debias(mom, 1 - mom, step)
            debias2 = 1 - sqr_mom**step
            denom = torch._foreach_div(sqr_avg, debias2)
            torch._foreach_sqrt_(denom)
            torch._foreach_add_(denom, eps)
            torch._foreach_addcdiv_(params, grad_avg, denom, value=-lr / debias1)


def adam(params: Any, lr: float, **kwargs: Any) -> ForeachAdam:
    """An ``opt_func`` for fastai's Learner: ``partial(adam, sqr_mom=..., wd=...)`` or called as is."""
    return ForeachAdam(params, lr, **kwargs)
