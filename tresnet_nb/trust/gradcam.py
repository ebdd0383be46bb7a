"""Where does the model look? Grad-CAM (the ``grad-cam`` package) on the last stage of the network: TResNet's
``body.layer4``, any other timm CNN by its ``feature_info`` (the module of the last feature level)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import need


def target_layer(model: nn.Module) -> nn.Module:
    """The layer whose activations Grad-CAM weighs: the last stage of a TResNet, else the module timm's
    ``feature_info`` names for the last feature level."""
    body = getattr(model, "body", None)
    if body is not None and hasattr(body, "layer4"):
        return body.layer4
    info = getattr(model, "feature_info", None)
    if not info:
        raise ValueError(
            f"{type(model).__name__} has no feature_info naming its stages; pass the layer to look at as layer="
        )
    name = info[-1]["module"]
    return model.get_submodule(name)


def gradcam_maps(
    model: nn.Module, x: torch.Tensor, classes: Sequence[int], layer: nn.Module | None = None
) -> np.ndarray:
    """Grad-CAM maps (items, H, W) in [0, 1], at the input's size, of ``x`` (normalised input batch) for the class
    ``classes[i]`` of each item (e.g. the predicted or the true one). The model is left as it was found."""
    need("pytorch_grad_cam", "Grad-CAM")
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if len(classes) != len(x):
        raise ValueError(f"need one target class per image: {len(x)} images, {len(classes)} classes")
    was_training = model.training
    model.eval()
    try:
        with GradCAM(model=model, target_layers=[layer or target_layer(model)]) as cam:
            x = x.to(next(model.parameters()).device, torch.float32)
            maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes])
    finally:
        model.train(was_training)
    return np.asarray(maps, dtype=np.float32)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """``heat`` (H, W in [0, 1]) drawn over the uint8 ``image`` (H, W[, 3]) in matplotlib's jet colours."""
    from matplotlib import colormaps

    rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    colours = colormaps["jet"](np.clip(heat, 0, 1))[..., :3]
    return (rgb.astype(np.float32) / 255 * (1 - alpha) + colours * alpha).clip(0, 1)


def plot_gradcam_grid(
    images: np.ndarray, maps: np.ndarray, titles: Sequence[str], path: Path | str, cols: int = 4
) -> Path:
    """Save a grid of Grad-CAM overlays (one per image, with its title) to ``path``."""
    import matplotlib.pyplot as plt

    n = len(images)
    if n == 0 or len(maps) != n or len(titles) != n:
        raise ValueError(
            f"need as many maps and titles as images (>0): {n} images, {len(maps)} maps, {len(titles)} titles"
        )
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, heat, title in zip(axes.flat, images, maps, titles, strict=False):
        ax.imshow(overlay(image, heat))
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
