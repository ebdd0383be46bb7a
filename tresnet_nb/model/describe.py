"""A model described for a notebook table: architecture, parameters, where its weights came from, its
preprocessing."""

from __future__ import annotations

from typing import Any

from torch import nn

from .load import data_config, weights_info


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


def describe_model(model: nn.Module, img_size: int | None = None) -> dict[str, Any]:
    """Architecture, parameter count, weights' origin and preprocessing of ``model``, for a notebook table."""
    info = weights_info(model)
    cfg = data_config(model, img_size)
    return {
        "arch": info.arch,
        "parameters": f"{count_parameters(model) / 1e6:.2f}M",
        "weights": info.requested or "none",
        "pretrained": info.pretrained,
        "source": info.source if info.location is None else f"{info.source}: {info.location}",
        "head": f"{info.head} ({info.num_classes} classes)",
        "input_size": cfg["input_size"],
        "mean": cfg["mean"],
        "std": cfg["std"],
        "interpolation": cfg["interpolation"],
        # as timm.data.create_transform takes it: 'squash 1.0' is the whole image resized to size x size, no crop
        "crop": f"{cfg['crop_mode']} {cfg['crop_pct']}",
    }
