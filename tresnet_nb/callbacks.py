"""fastai callbacks: precision (CPU bf16 autocast), channels_last, per-epoch lines for headless runs, EMA of
weights, and atomic per-epoch checkpoints.

fastai's own ``to_fp16()``/``to_bf16()`` hard-code CUDA autocast and silently train in fp32 on a CPU, so the
precision is handled here by :class:`Autocast`, which uses the autocast of the device the data lives on.
"""

from __future__ import annotations

import copy
import os
import time

import numpy as np
import torch
from fastai.callback.core import Callback
from fastai.callback.fp16 import MixedPrecision

from .distributed import is_main

ECHO_ENV = "TRESNET_NB_ECHO"  # set by the batch runner: kernels then print a line per epoch that it relays
ECHO_PREFIX = "[tresnet-nb] "


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision to train in: 'auto' is bf16 on CPU (where it is about 1.6x faster here) and fp16 on CUDA."""
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "bf16"
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
        print(f"{ECHO_PREFIX}{self.label} epoch {self.epoch + 1}/{self.n_epoch}: {shown} ({elapsed:.0f}s)", flush=True)


def precision_callbacks(precision: str, device: torch.device) -> list[Callback]:
    """Callbacks for ``precision`` (after :func:`resolve_precision`) on ``device``."""
    if precision == "bf16":
        return [Autocast(torch.bfloat16), ChannelsLast()]
    if precision == "fp16":
        return [MixedPrecision(), ChannelsLast()]
    return [ChannelsLast()]


class EMA(Callback):
    """Exponential moving average of the weights (and BN buffers), updated after every optimizer step; validation
    runs on the average, and the model holds the average when the fit ends (the MIIL transfer practice: the EMA
    is what is evaluated and saved)."""

    order = 55  # after the optimizer step and the Recorder, before checkpoints

    def __init__(self, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be between 0 and 1, not {decay!r}")
        self.decay, self.average, self.live = decay, None, None

    def before_fit(self) -> None:
        if self.average is None:
            self.average = copy.deepcopy(self.learn.model).eval().requires_grad_(False)

    @torch.no_grad()
    def after_step(self) -> None:
        for avg, new in zip(self.average.state_dict().values(), self.learn.model.state_dict().values(), strict=True):
            if avg.dtype.is_floating_point:
                avg.lerp_(new.detach(), 1 - self.decay)
            else:
                avg.copy_(new)

    def before_validate(self) -> None:
        if self.learn.training is False and self.average is not None and self.live is None:
            self.live = copy.deepcopy(self.learn.model.state_dict())
            self.learn.model.load_state_dict(self.average.state_dict())

    def after_validate(self) -> None:
        if self.live is not None:
            self.learn.model.load_state_dict(self.live)
            self.live = None

    def after_fit(self) -> None:
        if self.average is not None:
            self.learn.model.load_state_dict(self.average.state_dict())

    def state_dict(self) -> dict[str, torch.Tensor] | None:
        return None if self.average is None else self.average.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if self.average is None:
            self.average = copy.deepcopy(self.learn.model).eval().requires_grad_(False)
        self.average.load_state_dict(state)


def plain(obj: object) -> object:
    """``obj`` with fastcore's L and other sequences turned into lists and dict values likewise, so that the
    checkpoint loads with ``torch.load(weights_only=True)``."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) or type(obj).__name__ == "L":
        return [plain(v) for v in obj]
    if isinstance(obj, np.generic):  # numpy scalars (schedulers compute hyper-parameters with numpy)
        return obj.item()
    if isinstance(obj, torch.Tensor) and type(obj) is not torch.Tensor:  # fastai's TensorBase and friends
        return obj.as_subclass(torch.Tensor)
    return obj


def atomic_save(obj: object, path: os.PathLike) -> None:
    """torch.save ``obj`` to ``path`` through a temporary file and a rename: a crash leaves the old file intact."""
    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


class Checkpoint(Callback):
    """After every trained epoch, save what resuming needs (weights, EMA, optimizer, RNG states, history, position
    in the plan) to ``path`` atomically; :func:`tresnet_nb.train.fit` reads it back to resume."""

    order = 70  # last: after the Recorder has the epoch's values and the EMA its update

    def __init__(self, path: os.PathLike, fingerprint: str) -> None:
        self.path, self.fingerprint = path, fingerprint
        self.stage, self.prefix = 0, {"train_losses": [], "epochs": [], "metric_names": []}
        self.trained = False
        self.smooth_loss: tuple[int, torch.Tensor] | None = None  # to restore on resume, after Recorder resets it
        self.scaler_state: dict | None = (
            None  # fp16 loss-scaler state to restore on resume, after MixedPrecision makes one
        )

    def before_fit(self) -> None:
        if self.smooth_loss is not None:  # the train_loss column is a running average over all batches so far
            self.learn.recorder.smooth_loss.count, self.learn.recorder.smooth_loss.val = self.smooth_loss
            self.smooth_loss = None
        if self.scaler_state is not None and getattr(self.learn, "scaler", None) is not None:
            self.learn.scaler.load_state_dict(
                self.scaler_state
            )  # fastai's MixedPrecision made a fresh one in its before_fit
            self.scaler_state = None

    def before_epoch(self) -> None:
        self.trained = False

    def before_train(self) -> None:
        self.trained = True  # validation-only epochs (get_preds) are not checkpointed

    def after_epoch(self) -> None:
        if not self.trained or not is_main():  # data-parallel: rank 0 writes; every rank reads it to resume
            return
        from .fitting import history, join_history, rng_state  # late: fitting imports this module

        ema = next((cb for cb in self.learn.cbs if isinstance(cb, EMA)), None)
        current = history(self.learn)
        state = {
            "fingerprint": self.fingerprint,
            "stage": self.stage,
            "epoch": self.epoch,
            "stage_epochs": self.n_epoch,
            "model": self.learn.model.state_dict(),
            "opt": plain(self.learn.opt.state_dict()),
            "ema": ema.state_dict() if ema is not None else None,
            "scaler": self.learn.scaler.state_dict() if getattr(self.learn, "scaler", None) is not None else None,
            "rng": rng_state(self.learn),
            "smooth_loss": [self.learn.recorder.smooth_loss.count, self.learn.recorder.smooth_loss.val],
            "history": join_history(self.prefix, current),
        }
        atomic_save(plain(state), self.path)
