"""fastai callbacks: precision (CPU bf16 autocast), channels_last, per-epoch lines for headless runs, EMA of
weights, and atomic per-epoch checkpoints.

fastai's own ``to_fp16()``/``to_bf16()`` hard-code CUDA autocast and silently train in fp32 on a CPU, so the
precision is handled here by :class:`Autocast`, which uses the autocast of the device the data lives on.
"""

from __future__ import annotations

import copy
import time

import torch
from fastai.callback.core import Callback
from fastai.callback.fp16 import MixedPrecision
from fastai.learner import Learner
from timm.utils import ModelEmaV3
from torch import nn

from ..runtime import ECHO_PREFIX, cpu_precision, is_main


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision to train in: 'auto' is fp16 on CUDA, and on a CPU bf16 where it computes bfloat16 natively
    (1.85x fp32's training speed on an AVX512-BF16 EPYC), fp32 elsewhere (emulated bf16 trained 12x slower on an
    AVX2-only EPYC): :func:`tresnet_nb.runtime.cpu_precision`."""
    if precision == "auto":
        return "fp16" if device.type == "cuda" else cpu_precision()
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"PRECISION 'fp16' needs a CUDA device; this run is on {device.type}: use 'bf16' or 'fp32'")
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"Unknown precision {precision!r}; choose one of ('auto', 'fp32', 'bf16', 'fp16')")
    return precision


class Autocast(Callback):
    """Run forward and loss under ``torch.autocast`` on the batch's device (bf16 needs no grad scaler)."""

    order = 10  # where fastai's MixedPrecision sits: after the batch is on its device

    def __init__(self, dtype: torch.dtype = torch.bfloat16) -> None:
        self.dtype, self._ctx = dtype, None

    def _exit(self) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(None, None, None)
            self._ctx = None

    def before_batch(self) -> None:
        self._exit()  # an earlier batch that raised mid-forward left its context open
        self._ctx = torch.autocast(device_type=self.xb[0].device.type, dtype=self.dtype)
        self._ctx.__enter__()

    def after_pred(self) -> None:
        self.learn.pred = self.pred.float()  # loss and metrics in fp32

    def after_loss(self) -> None:
        self._exit()

    def after_cancel_batch(self) -> None:
        self._exit()

    def after_fit(self) -> None:
        self._exit()


class ChannelsLast(Callback):
    """Keep model and inputs in channels_last memory format (faster convolutions with oneDNN and cuDNN)."""

    order = 5

    def before_fit(self) -> None:
        self.learn.model.to(memory_format=torch.channels_last)

    def before_batch(self) -> None:
        self.learn.xb = tuple(x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x for x in self.xb)


def is_frozen(learn: Learner) -> bool:
    """Whether ``learn`` holds its body frozen (fastai's ``freeze``: the optimizer's ``frozen_idx`` above 0)."""
    return learn.opt is not None and getattr(learn.opt, "frozen_idx", 0) > 0


class EpochLog(Callback):
    """Print one line per epoch (losses, metrics, time) so a headless run shows live progress."""

    order = 60  # after the Recorder has the epoch's values

    def __init__(self, label: str) -> None:
        self.label, self.trained = label, False

    def before_epoch(self) -> None:
        self._start, self.trained = time.perf_counter(), False

    def before_train(self) -> None:
        self.trained = True  # get_preds runs validation-only epochs (with before_fit); those are not reported

    def after_epoch(self) -> None:
        if not self.trained or not is_main():  # one line per epoch in a data-parallel job, from rank 0
            return
        names = self.recorder.metric_names[1:-1]
        values = self.recorder.values[-1] if self.recorder.values else []
        shown = ", ".join(f"{n} {v:.4f}" for n, v in zip(names, values, strict=False) if v is not None)
        elapsed = time.perf_counter() - self._start
        # a fine-tuning recipe's frozen stage counts its own epochs: say so, or it reads as a second "epoch 1/N"
        stage = "frozen epoch" if is_frozen(self.learn) else "epoch"
        print(
            f"{ECHO_PREFIX}{self.label} {stage} {self.epoch + 1}/{self.n_epoch}: {shown} ({elapsed:.0f}s)", flush=True
        )


class NoDecayOnVectors(Callback):
    """No weight decay on any parameter of at most one dimension: fastai's ``wd_bn_bias=False`` exempts norm layers'
    weights and biases, but not layer-scale vectors (ConvNeXt's ``gamma``) or other per-channel scales; timm's rule
    (``param_groups_weight_decay``: ``ndim <= 1``) covers them all. Applied before every fit (lr_find included),
    since fastai marks the flags anew whenever it creates the optimizer."""

    order = -10  # before the optimizer's first step, before anything else of the fit

    def before_fit(self) -> None:
        if self.learn.opt is None:
            self.learn.create_opt()
        for p in self.learn.model.parameters():
            if p.ndim <= 1:
                self.learn.opt.state[p]["do_wd"] = False


def precision_callbacks(precision: str, device: torch.device) -> list[Callback]:
    """Callbacks for ``precision`` (after :func:`resolve_precision`) on ``device``."""
    if precision == "bf16":
        return [Autocast(torch.bfloat16), ChannelsLast()]
    if precision == "fp16":
        return [MixedPrecision(), ChannelsLast()]
    return [ChannelsLast()]


class EMA(Callback):
    """Exponential moving average of the weights (and BN buffers), updated after every optimizer step; validation
    runs on the average, and :meth:`use_average` loads it into the model, which :func:`tresnet_nb.train.fit.fit`
    does once, when its whole plan is done (the MIIL transfer practice: the EMA is what is evaluated and saved).
    A fit alone leaves the live weights in the model: the next phase of a plan goes on from them, as Adam's moments
    do, and as a run resumed between phases does.

    timm's ``ModelEmaV3`` keeps the average and updates it (one foreach lerp over the floating state, integer
    buffers such as BatchNorm's ``num_batches_tracked`` copied): without ``step`` it uses the fixed ``decay``, no
    warm-up, and with ``exclude_buffers=False`` it averages the running statistics too, the update this callback
    made itself before (tests/test_train.py checks both give the same state). ``average`` is the averaged model
    and ``state_dict()`` its state dict, keys unchanged, so checkpoints written before the swap resume."""

    order = 55  # after the optimizer step and the Recorder, before checkpoints

    def __init__(self, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be between 0 and 1, not {decay!r}")
        self.decay, self.model_ema, self.live = decay, None, None

    @property
    def average(self) -> nn.Module | None:
        """The averaged model (timm's ``ModelEmaV3.module``), or None before the first fit."""
        return None if self.model_ema is None else self.model_ema.module

    def _start_average(self) -> None:
        self.model_ema = ModelEmaV3(self.learn.model, decay=self.decay, use_warmup=False, exclude_buffers=False)
        self.model_ema.module.requires_grad_(False)

    def _follow_model(self) -> None:
        """Keep the average on the model's device (a model moved, or a checkpoint restored, after it was made)."""
        device = next(self.learn.model.parameters()).device
        if next(self.average.parameters()).device != device:
            self.average.to(device)

    def before_fit(self) -> None:
        if self.model_ema is None:
            self._start_average()
        self._follow_model()

    def after_step(self) -> None:
        self.model_ema.update(self.learn.model)  # no step: the fixed decay from the first update on

    def before_validate(self) -> None:
        if self.learn.training is False and self.average is not None and self.live is None:
            self.live = copy.deepcopy(self.learn.model.state_dict())
            self.learn.model.load_state_dict(self.average.state_dict())

    def after_validate(self) -> None:
        if self.live is not None:
            self.learn.model.load_state_dict(self.live)
            self.live = None

    def use_average(self) -> None:
        """Load the average into the model (the end of a plan); raises before the first fit, when there is none."""
        if self.average is None:
            raise RuntimeError("EMA.use_average: no average yet; fit the learner (or load an EMA state) first")
        self.learn.model.load_state_dict(self.average.state_dict())

    def state_dict(self) -> dict[str, torch.Tensor] | None:
        """The averaged model's state dict (what checkpoints save), or None before the first fit."""
        return None if self.average is None else self.average.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the average from :meth:`state_dict`'s output (a checkpoint's ``ema`` entry)."""
        if self.model_ema is None:
            self._start_average()
        self.average.load_state_dict(state)
        self._follow_model()
