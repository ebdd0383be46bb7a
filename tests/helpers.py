"""Helpers shared by the test files (imported as ``helpers``; tests/ is on pytest's path): a tiny timm-shaped
classifier, a crash between epochs, the smoke preset's learner, and a model marked as starting from pretrained
weights."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback
from torch import nn

from tresnet_nb import RunConfig, array_dls, build_learner, data_config, load_model, load_splits, seed_everything
from tresnet_nb.model.load import WeightsInfo
from tresnet_nb.train.fit import CHECKPOINT

__all__ = ["CHECKPOINT", "Interrupt", "InterruptAt", "TinyNet", "as_pretrained", "make_learner"]


class Interrupt(Exception):
    pass


class InterruptAt(Callback):
    """Raise before epoch ``epoch`` of the ``fit_number``-th fit (1-based), as a crash between epochs would."""

    def __init__(self, fit_number: int, epoch: int) -> None:
        self.fit_number, self.epoch_at, self.fits = fit_number, epoch, 0

    def before_fit(self) -> None:
        self.fits += 1

    def before_epoch(self) -> None:
        if self.fits == self.fit_number and self.epoch == self.epoch_at:
            raise Interrupt("simulated crash between epochs")


class TinyNet(nn.Module):
    """A small classifier shaped like a timm one (BatchNorm body, ``get_classifier`` head, ``pretrained_cfg`` with
    TResNet's [0, 1] inputs), so that whole fits take a second on a CPU."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.pretrained_cfg = {
            "input_size": (3, 32, 32),
            "mean": (0.0, 0.0, 0.0),
            "std": (1.0, 1.0, 1.0),
            "interpolation": "bilinear",
            "crop_pct": 1.0,
        }
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(16, num_classes)

    def get_classifier(self) -> nn.Module:
        return self.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def as_pretrained(model: nn.Module) -> nn.Module:
    """``model`` marked as starting from pretrained weights (as load_model marks a model whose weights came from a
    file), so that build_learner plans the frozen stage of fine-tuning: the schedule is under test, not the weights."""
    info = getattr(model, "weights_info", None)
    if isinstance(info, WeightsInfo):  # from load_model: its arch, tag and head, now said to be pretrained
        model.weights_info = replace(info, pretrained=True, requested="test", source="file")
    else:
        model.weights_info = WeightsInfo(
            arch="tresnet_m",
            requested="test",
            source="file",
            location=None,
            tag=None,
            pretrained=True,
            head="new",
            num_classes=10,
        )
    return model


def make_learner(
    out: Path,
    recipe: str,
    epochs: int,
    cbs=(),
    model_fn=None,
    device="cpu",
    precision="fp32",
    pretrained: bool = False,
    progressive: str | None = None,
):
    """The smoke preset's learner (TResNet-M, or ``model_fn(10)``) on ``device`` with ``recipe`` (and the
    ``progressive`` phases), the model marked ``pretrained``, and its ``dls_for``."""
    cfg = RunConfig.from_params(
        "r",
        preset="smoke",
        precision=precision,
        max_items=16,
        batch_size=8,
        epochs=epochs,
        output_dir=str(out),
        recipe=recipe,
        progressive=progressive,
    )
    seed_everything(cfg.seed)
    model = load_model(cfg.arch, cfg.weights, num_classes=10) if model_fn is None else model_fn(10)
    if pretrained:
        as_pretrained(model)
    splits = load_splits(cfg.dataset, None, cfg.max_items)
    device = torch.device(device)
    dls = array_dls(splits, cfg.img_size, cfg.batch_size, data_config(model, cfg.img_size), device)
    learn = build_learner(cfg, dls, model)
    learn.remove_cb(ProgressCallback)
    learn.add_cbs(list(cbs))

    def dls_for(size: int, bs: int):
        return array_dls(splits, size, bs, data_config(model, size), device)

    return cfg, learn, dls_for
