"""TResNet (and the paper's ResNet50 baseline) over timm: architectures, weight sources, safe loading, preprocessing.

Weights come from one of three places, resolved by :func:`load_model`:
1. a timm pretrained tag (``tresnet_m.miil_in21k``): the local Hugging Face cache first, the hub when reachable;
2. a local file: an official Alibaba-MIIL checkpoint (InplaceABN layout) or a timm-layout .pth/.safetensors;
3. ``None``: random initialisation.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import timm
import timm.data
import torch
from timm.models.tresnet import checkpoint_filter_fn as tresnet_filter
from torch import nn

from .archs import ARCHS, check_img_size, split_arch
from .hub import WeightsUnavailableError, fetch_pretrained
from .weights import check_keys, read_state_dict


def _identity_filter(state_dict: dict, model: nn.Module) -> dict:
    return state_dict


# checkpoint filters by ArchSpec.family: timm's converts the official MIIL (InplaceABN) layout
FILTERS: dict[str, Callable[[dict, nn.Module], dict]] = {"tresnet": tresnet_filter, "timm": _identity_filter}


# What the project's loaders do to an image, in timm's terms, recorded in place of the pretrained cfg's centre crop
# (0.875 for TResNet): every loader squishes the whole image to size x size with bilinear resampling
# (tresnet_nb/data/highres.py decode_resized: PIL BILINEAR; data/arrays.py to_tensor_images: F.interpolate bilinear,
# antialias), so training, validation and a deployment rebuilding the transform from this record
# (timm.data.create_transform: crop_mode 'squash' resizes both sides to size / crop_pct, then centre-crops size,
# which at crop_pct 1.0 crops nothing) see the same pixels. The official 448 px evaluation squishes too
# (Alibaba-MIIL/TResNet validate.py). data/ is a unit beside model/, not below it, so the two are tied by a test
# (tests/test_export.py) rather than an import.
LOADER_PREPROCESSING: dict[str, Any] = {"interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "squash"}
# the attribute holding a model's calibrated temperature (notebook 09): predict and the exports' sidecars read it
TEMPERATURE_ATTR = "calibrated_temperature"
WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".tar", ".safetensors", ".ckpt")


@dataclass(frozen=True)
class WeightsInfo:
    """Where a model's weights came from; saved with every run (``pretrained`` is what metrics.json reports)."""

    arch: str
    requested: str | None
    source: str  # 'random', 'hf-cache', 'hub' or 'file'
    location: str | None  # file path or hub repo
    tag: str | None  # timm pretrained tag when the weights came from the hub or its cache
    pretrained: bool
    head: str  # 'pretrained' (kept), 'new' (replaced for num_classes) or 'random'
    num_classes: int
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_file_request(weights: str) -> bool:
    return os.sep in weights or weights.endswith(WEIGHT_FILE_SUFFIXES) or Path(weights).exists()


def _head_classes(state_dict: dict[str, torch.Tensor], model: nn.Module) -> int:
    """Number of classes of the classifier stored in ``state_dict`` (0 if it has none)."""
    classifier = model.pretrained_cfg.get("classifier", "head.fc")
    weight = state_dict.get(f"{classifier}.weight")
    return int(weight.shape[0]) if weight is not None else 0


def _build_from_state_dict(name: str, tag: str | None, state_dict: dict[str, torch.Tensor], source: str) -> nn.Module:
    # created under its tag, the model carries that tag's pretrained cfg (input size, crop) for preprocessing
    full_name = f"{name}.{tag}" if tag else name
    probe = timm.create_model(full_name, pretrained=False, num_classes=0)
    state_dict = FILTERS[ARCHS[name].family](state_dict, probe)
    model = timm.create_model(full_name, pretrained=False, num_classes=_head_classes(state_dict, probe))
    check_keys(model, state_dict, source)
    model.load_state_dict(state_dict, strict=True)
    return model


def load_model(
    arch: str, weights: str | Path | None = "auto", num_classes: int | None = None, **timm_kwargs: Any
) -> nn.Module:
    """Create ``arch`` with ``weights`` ('auto', a timm tag, a file path or None) and a head of ``num_classes``.

    ``num_classes=None`` keeps the checkpoint's head (1K or 21K); another number replaces it (transfer).
    ``weights='auto'`` uses the arch's default tag and falls back to random init, saying so, when offline.
    The model's ``weights_info`` attribute records what happened. Extra keywords go to ``timm.create_model``.
    """
    name, arch_tag = split_arch(arch)
    requested = None if weights is None else str(weights)
    if requested is not None and requested.lower() in ("none", "random", ""):
        requested = None
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"num_classes must be a positive int or None (keep the pretrained head), not {num_classes!r}")
    note = ""
    state_dict, source, location, tag = None, "random", None, None
    if requested is not None:
        if requested != "auto" and _is_file_request(requested):
            state_dict, source, location = read_state_dict(requested), "file", requested
        else:
            tag = arch_tag or ARCHS[name].default_tag
            if requested != "auto":
                _, tag = split_arch(requested if requested.startswith(f"{name}.") else f"{name}.{requested}")
            try:
                path, source = fetch_pretrained(name, tag)
                state_dict, location = read_state_dict(path), str(path)
            except WeightsUnavailableError as err:
                if requested != "auto":
                    raise
                note = f"pretrained weights unavailable, RANDOM initialisation: {err}"
                warnings.warn(note, stacklevel=2)
                source, tag = "random", None
    if state_dict is None:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes or 1000, **timm_kwargs)
        head = "random"
    else:
        model = _build_from_state_dict(name, tag, state_dict, source=f"weights {location!r}")
        head = "pretrained"
        if num_classes is not None and num_classes != model.num_classes:
            model.reset_classifier(num_classes)
            head = "new"
    model.weights_info = WeightsInfo(
        arch=name, requested=requested, source=source, location=location, tag=tag, pretrained=state_dict is not None,
        head=head, num_classes=model.num_classes, note=note,
    )  # fmt: skip
    return model


def weights_info(model: nn.Module) -> WeightsInfo:
    """The :class:`WeightsInfo` that :func:`load_model` attached to ``model``."""
    info = getattr(model, "weights_info", None)
    if not isinstance(info, WeightsInfo):
        raise ValueError("This model was not created by tresnet_nb.load_model, so its weights' origin is unknown")
    return info


def data_config(model: nn.Module, img_size: int | None = None) -> dict[str, Any]:
    """Preprocessing of ``model``: input size and mean/std from its timm pretrained cfg, resizing as the loaders do
    (:data:`LOADER_PREPROCESSING`: a bilinear squish, no crop), at ``img_size`` if given."""
    cfg = {**timm.data.resolve_model_data_config(model), **LOADER_PREPROCESSING}
    if img_size is not None:
        cfg["input_size"] = (3, check_img_size(img_size), check_img_size(img_size))
    return cfg


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
