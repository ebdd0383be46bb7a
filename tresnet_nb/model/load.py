"""TResNet (and the paper's ResNet50 baseline) over timm: architectures, weight sources, safe loading, preprocessing.

Weights come from one of three places, resolved by :func:`load_model`:
1. a timm pretrained tag (``tresnet_m.miil_in21k``): the local Hugging Face cache first, the hub when reachable;
2. a local file: an official Alibaba-MIIL checkpoint (InplaceABN layout) or a timm-layout .pth/.safetensors;
3. ``None``: random initialisation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import timm
import timm.data
import torch
from timm.models.tresnet import checkpoint_filter_fn as tresnet_filter
from torch import nn

from ..hints import warn
from .archs import arch_spec, check_img_size, split_arch
from .convert import from_efficientnet_pytorch, is_efficientnet_pytorch
from .hub import WeightsUnavailableError, fetch_pretrained
from .weights import TrainedWith, check_keys, read_state_dict, read_trained_with, write_weights


def _identity_filter(state_dict: dict, model: nn.Module | None) -> dict:
    return state_dict


# checkpoint filters by ArchSpec.family: timm's converts the official MIIL (InplaceABN) layout
FILTERS: dict[str, Callable[[dict, nn.Module | None], dict]] = {"tresnet": tresnet_filter, "timm": _identity_filter}


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
RUN_FILES = ("run_config.json", "metrics.json")  # beside a run's model.safetensors: how it was trained
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
    trained: TrainedWith | None = None  # a file this library wrote: how it was trained (size, labels, preprocessing)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_file_request(weights: str) -> bool:
    return os.sep in weights or weights.endswith(WEIGHT_FILE_SUFFIXES) or Path(weights).exists()


def _read_file(path: str) -> tuple[dict[str, torch.Tensor], TrainedWith | None]:
    """The tensors of the weights file ``path`` and how the library trained them (the file's metadata; for a file
    written before it had any, the run folder beside it), refusing a folder with the fix."""
    if Path(path).is_dir():
        inside = Path(path) / "model.safetensors"
        hint = (
            f"pass {str(inside)!r}, or open the run with tnb.load_run({path!r})"
            if inside.is_file()
            else ("pass the path of a .pth or .safetensors file")
        )
        raise IsADirectoryError(f"Weights {path!r} is a folder, not a weights file; {hint}")
    state_dict = read_state_dict(path)
    return state_dict, read_trained_with(path) or trained_with_from_run_dir(Path(path))


def trained_with_from_run_dir(path: Path) -> TrainedWith | None:
    """How ``path`` (a run's model.safetensors written before the weights carried it) was trained, read from the
    run_config.json and metrics.json beside it; None when it is not in such a folder. The class names are there only
    when metrics.json lists them (``tnb.load_run`` reads them from the dataset otherwise)."""
    folder = path.parent
    if path.name != "model.safetensors" or not all((folder / f).is_file() for f in RUN_FILES):
        return None
    source = f"{folder / RUN_FILES[0]} and {RUN_FILES[1]}"
    cfg, record = (json.loads((folder / f).read_text()) for f in RUN_FILES)
    name, tag = split_arch(cfg["arch"])
    pre = timm.models.get_pretrained_cfg(f"{name}.{tag}" if tag else name)
    options = record.get("options") or {}
    return TrainedWith.from_dict(
        {
            "arch": name,
            "tag": tag,
            "img_size": cfg["img_size"],
            "class_names": record.get("class_names") or [],
            "task": options.get("task") or "single-label",
            "mean": pre.mean,
            "std": pre.std,
            "interpolation": LOADER_PREPROCESSING["interpolation"],
            "pretrained": record["pretrained"],
            "weights": cfg["weights"],
            "temperature": record.get("temperature"),
        },
        source=source,
    )


def to_timm_layout(name: str, full_name: str, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state_dict`` in timm's key layout for ``full_name``: the official MIIL layout converted (TResNet), an
    EfficientNet-PyTorch file converted (``tf_efficientnet*``), a timm file as it is."""
    if is_efficientnet_pytorch(state_dict):
        head = state_dict.get("_fc.weight")
        reference = timm.create_model(full_name, pretrained=False, num_classes=0 if head is None else head.shape[0])
        return from_efficientnet_pytorch(state_dict, reference, arch=name)
    return FILTERS[arch_spec(name).family](state_dict, None)


def _build(
    full_name: str,
    state_dict: dict[str, torch.Tensor],
    num_classes: int | None,
    source: str,
    timm_kwargs: dict[str, Any],
) -> tuple[nn.Module, str]:
    """``full_name`` (created under its tag, so it carries that tag's pretrained cfg) with ``state_dict`` loaded
    strictly; a head of another ``num_classes`` is new (``reset_classifier``: PyTorch's default initialisation, as
    fastai's and timm's fine-tuning give a new head), every other tensor from the file."""
    classifier = timm.models.get_pretrained_cfg(full_name).classifier or "head.fc"
    head_weight = state_dict.get(f"{classifier}.weight")
    file_classes = int(head_weight.shape[0]) if head_weight is not None else 0
    new_head = num_classes is not None and num_classes != file_classes
    if new_head:  # the body alone from the file (a keyword such as global_pool may change the head's input too)
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(f"{classifier}.")}
    model = timm.create_model(full_name, pretrained=False, num_classes=0 if new_head else file_classes, **timm_kwargs)
    check_keys(model, state_dict, source)
    model.load_state_dict(state_dict, strict=True)
    if new_head:  # reset_classifier would put back its own default pooling unless told the one asked for
        pool = {"global_pool": timm_kwargs["global_pool"]} if "global_pool" in timm_kwargs else {}
        model.reset_classifier(num_classes, **pool)
    return model, "new" if new_head else "pretrained"


def _check_trained(arch: str, name: str, tag: str | None, trained: TrainedWith | None, location: str) -> str | None:
    """The tag to create ``name`` under: the one asked for, else the one the file was trained under; a file
    trained as another architecture is refused."""
    if trained is None:
        return tag
    if trained.arch != name:
        raise ValueError(
            f"{location!r} holds {trained.arch} weights (trained by tresnet_nb, {trained.source}), not {arch}; "
            f"Fix: load it as {trained.arch!r}"
        )
    return tag or trained.tag


def _tagged_weights(arch: str, name: str, arch_tag: str | None, requested: str):
    """(state_dict, source, location, tag, note) of the weights a tag names (in ``arch`` or ``requested``; 'auto':
    the architecture's default tag), from the hub or its cache. A tag the user named and cannot have raises
    :class:`WeightsUnavailableError`; 'auto' without a tag falls back to random initialisation with a warning."""
    tag = arch_tag
    if requested != "auto":
        _, tag = split_arch(requested if requested.startswith(f"{name}.") else f"{name}.{requested}")
        if arch_tag is not None and tag != arch_tag:
            raise ValueError(f"ARCH {arch!r} and WEIGHTS {requested!r} name two weight tags; give the tag once")
    tag = tag or arch_spec(name).default_tag
    try:
        if tag is None:
            raise WeightsUnavailableError(f"timm has no pretrained weights for {name}")
        path, source = fetch_pretrained(name, tag)
        return read_state_dict(path), source, str(path), tag, ""
    except WeightsUnavailableError as err:
        if requested != "auto" or arch_tag is not None:
            raise  # a tag the user named: not having it is an error, not a silent random model
        note = f"pretrained weights unavailable, RANDOM initialisation: {err}"
        warn(note, stacklevel=4)
        return None, "random", None, None, note


def load_model(
    arch: str, weights: str | Path | None = "auto", num_classes: int | None = None, **timm_kwargs: Any
) -> nn.Module:
    """Create ``arch`` with ``weights`` ('auto', a timm tag, a file path or None) and a head of ``num_classes``.

    ``num_classes=None`` keeps the checkpoint's head (1K or 21K); another number replaces it (transfer).
    A tag named in ``arch`` or ``weights`` is a request: weights that cannot be had raise
    :class:`WeightsUnavailableError`. Only an untagged ``arch`` with ``weights='auto'`` falls back to random
    initialisation, saying so. The model's ``weights_info`` attribute records what happened. Extra keywords go to
    ``timm.create_model`` on every path (e.g. ``drop_rate``, ``global_pool``).
    """
    name, arch_tag = split_arch(arch)
    requested = None if weights is None else str(weights)
    if requested is not None and requested.lower() in ("none", "random", ""):
        requested = None
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ValueError(f"num_classes must be a positive int or None (keep the pretrained head), not {num_classes!r}")
    note = ""
    state_dict, source, location, tag, trained = None, "random", None, arch_tag, None
    if requested is not None:
        if requested != "auto" and _is_file_request(requested):
            state_dict, trained = _read_file(requested)
            source, location = "file", requested
            tag = _check_trained(arch, name, arch_tag, trained, requested)
        else:
            state_dict, source, location, tag, note = _tagged_weights(arch, name, arch_tag, requested)
    full_name = f"{name}.{tag}" if tag else name
    if state_dict is None:
        model = timm.create_model(full_name, pretrained=False, num_classes=num_classes or 1000, **timm_kwargs)
        head = "random"
    else:
        source_text = f"weights {location!r}"
        model, head = _build(
            full_name, to_timm_layout(name, full_name, state_dict), num_classes, source_text, timm_kwargs
        )
    model.weights_info = WeightsInfo(
        arch=name,
        requested=requested,
        source=source,
        location=location,
        tag=tag,
        pretrained=trained.pretrained if trained is not None else state_dict is not None,
        head=head,
        num_classes=model.num_classes,
        note=note,
    )
    if trained is not None and head == "pretrained":
        adopt_trained(model, trained)
    return model


def adopt_trained(model: nn.Module, trained: TrainedWith) -> None:
    """Give ``model`` (from :func:`load_model`) what ``trained`` says of its training: ``weights_info.trained``, the
    pretrained cfg that :func:`data_config` and timm's own tools (``resolve_data_config``, ``create_transform``)
    read, so they rebuild the transform it was trained with, and its calibration temperature, if any."""
    if trained.temperature is not None:
        setattr(model, TEMPERATURE_ATTR, trained.temperature)
    model.pretrained_cfg = {**model.pretrained_cfg, **trained_cfg(trained)}
    model.weights_info = replace(weights_info(model), trained=trained)


def trained_cfg(trained: TrainedWith) -> dict[str, Any]:
    """The pretrained-cfg entries (timm's names) of the preprocessing ``trained`` records."""
    size = trained.img_size
    return {
        **LOADER_PREPROCESSING,
        "input_size": (3, size, size),
        "mean": trained.mean,
        "std": trained.std,
        "num_classes": len(trained.class_names) or None,
        "fixed_input_size": False,
    }


def trained_with(
    model: nn.Module, img_size: int, class_names: Sequence[str], task: str = "single-label"
) -> TrainedWith:
    """How ``model`` was trained, to store with its weights: ``img_size``, ``class_names`` (output order), ``task``,
    the preprocessing the loaders applied and the weights training started from."""
    if len(class_names) != getattr(model, "num_classes", len(class_names)):
        raise ValueError(f"{len(class_names)} class names for a model with {model.num_classes} outputs")
    info = weights_info(model)
    cfg = data_config(model, img_size)
    temperature = getattr(model, TEMPERATURE_ATTR, None)
    if isinstance(temperature, list):
        temperature = tuple(temperature)
    return TrainedWith(
        arch=info.arch,
        tag=info.tag if info.trained is None else info.trained.tag,
        img_size=int(img_size),
        class_names=tuple(str(n) for n in class_names),
        task=task,
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        interpolation=cfg["interpolation"],
        pretrained=info.pretrained,
        weights=info.trained.weights if info.trained is not None else info.requested or "none",
        temperature=temperature,
    )


def save_weights(
    model: nn.Module,
    path: Path | str,
    img_size: int | None = None,
    class_names: Sequence[str] | None = None,
    task: str = "single-label",
) -> Path:
    """Save ``model``'s weights as safetensors (timm layout) at ``path``, atomically; with ``img_size`` and
    ``class_names``, how it was trained goes into the file (:func:`trained_with`), so that ``load_model(arch, path)``
    knows its size, labels and preprocessing."""
    if (img_size is None) != (class_names is None):
        raise ValueError("Give img_size and class_names together (how the model was trained), or neither")
    trained = None if img_size is None else trained_with(model, img_size, class_names, task)
    return write_weights(model, path, trained)


def weights_info(model: nn.Module) -> WeightsInfo:
    """The :class:`WeightsInfo` that :func:`load_model` attached to ``model``."""
    info = getattr(model, "weights_info", None)
    if not isinstance(info, WeightsInfo):
        raise ValueError("This model was not created by tresnet_nb.load_model, so its weights' origin is unknown")
    return info


def data_config(model: nn.Module, img_size: int | None = None) -> dict[str, Any]:
    """Preprocessing of ``model``: input size and mean/std from its timm pretrained cfg (for a model loaded from a
    file this library wrote: as trained), resizing as the loaders do (:data:`LOADER_PREPROCESSING`: a bilinear
    squish, no crop), at ``img_size`` if given."""
    cfg = {**timm.data.resolve_model_data_config(model), **LOADER_PREPROCESSING}  # as trained: adopt_trained
    info = getattr(model, "weights_info", None)
    if img_size is not None:
        size = check_img_size(img_size, info.arch if isinstance(info, WeightsInfo) else None)
        cfg["input_size"] = (3, size, size)
    return cfg
