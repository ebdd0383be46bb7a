"""fastai Learner over a timm TResNet: CPU bf16 autocast, channels_last, and the quickstart's training recipe.

fastai's own ``to_fp16()``/``to_bf16()`` hard-code CUDA autocast and silently train in fp32 on a CPU, so the
precision is handled here by :class:`Autocast`, which uses the autocast of the device the data lives on.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import torch
from fastai.callback import progress as _progress  # noqa: F401  (adds the fastprogress bar to every Learner)
from fastai.callback import schedule as _schedule  # noqa: F401  (defines Learner.fit_one_cycle and fine_tune)
from fastai.callback.core import Callback
from fastai.callback.fp16 import MixedPrecision
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import accuracy
from fastai.torch_core import set_seed
from torch import nn

from .config import RunConfig

# Learning rates when the config leaves LR unset: fastai's fine_tune default for pretrained bodies, and a
# higher one-cycle peak for random initialisation (measured on the embedded Fashion-MNIST, see README).
DEFAULT_LR = {"pretrained": 2e-3, "random": 3e-3}


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


ECHO_ENV = "TRESNET_NB_ECHO"  # set by the batch runner: kernels then print a line per epoch that it relays
ECHO_PREFIX = "[tresnet-nb] "


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
        if not self.trained:
            return
        names = self.recorder.metric_names[1:-1]
        values = self.recorder.values[-1] if self.recorder.values else []
        shown = ", ".join(f"{n} {v:.4f}" for n, v in zip(names, values, strict=False) if v is not None)
        elapsed = time.perf_counter() - self._start
        print(f"{ECHO_PREFIX}{self.label} epoch {self.epoch + 1}/{self.n_epoch}: {shown} ({elapsed:.0f}s)", flush=True)


def head_splitter(model: nn.Module) -> list[list[nn.Parameter]]:
    """Two parameter groups, body then classifier, so fastai can freeze the body of a pretrained model."""
    head = model.get_classifier()
    head_ids = {id(p) for p in head.parameters()}
    return [[p for p in model.parameters() if id(p) not in head_ids], list(head.parameters())]


def precision_callbacks(precision: str, device: torch.device) -> list[Callback]:
    """Callbacks for ``precision`` (after :func:`resolve_precision`) on ``device``."""
    if precision == "bf16":
        return [Autocast(torch.bfloat16), ChannelsLast()]
    if precision == "fp16":
        return [MixedPrecision(), ChannelsLast()]
    return [ChannelsLast()]


def build_learner(cfg: RunConfig, dls: DataLoaders, model: nn.Module) -> Learner:
    """A fastai Learner for ``model`` on ``dls`` with the precision of ``cfg`` (seeded with ``cfg.seed``)."""
    set_seed(cfg.seed, reproducible=True)
    precision = resolve_precision(cfg.precision, dls.device)
    learn = Learner(
        dls, model.to(dls.device), loss_func=CrossEntropyLossFlat(), metrics=accuracy, splitter=head_splitter,
        cbs=precision_callbacks(precision, dls.device),
    )  # fmt: skip
    if os.environ.get(ECHO_ENV):
        learn.add_cb(EpochLog(cfg.notebook))
    learn.precision = precision
    return learn


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` did: recipe, learning rate, epochs, wall time, and the recorded history."""

    recipe: str
    lr: float
    epochs: int
    seconds: float
    images_per_second: float
    history: dict[str, Any]


def fit(learn: Learner, cfg: RunConfig, pretrained: bool) -> FitResult:
    """Train: ``fine_tune`` (one frozen epoch, then all layers) for a pretrained body, else ``fit_one_cycle``."""
    lr = cfg.lr if cfg.lr is not None else DEFAULT_LR["pretrained" if pretrained else "random"]
    start = time.perf_counter()
    if pretrained:
        recipe = "fine_tune"
        learn.fine_tune(cfg.epochs, base_lr=lr, freeze_epochs=1)
        seen_epochs = cfg.epochs + 1
    else:
        recipe = "fit_one_cycle"
        learn.fit_one_cycle(cfg.epochs, lr_max=lr)
        seen_epochs = cfg.epochs
    seconds = time.perf_counter() - start
    n_train = len(learn.dls.train) * learn.dls.train.bs
    return FitResult(recipe, lr, cfg.epochs, seconds, n_train * seen_epochs / seconds, history(learn))


def predict(learn: Learner) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities and targets on the validation DataLoader (fp32 probabilities)."""
    probs, targets = learn.get_preds(dl=learn.dls.valid)
    return probs.float(), targets


def history(learn: Learner) -> dict[str, Any]:
    """Training losses and per-epoch validation values fastai recorded in the last fit (get_preds resets them)."""
    rec = learn.recorder
    return {
        "train_losses": [float(v) for v in rec.losses],
        "metric_names": list(rec.metric_names[1:-1]),
        "epochs": [[float(v) if v is not None else None for v in row] for row in rec.values],
    }
