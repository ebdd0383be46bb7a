"""Model weights on disk: safe reading, the official Alibaba-MIIL (InplaceABN) key layout, and saving.

Every ``.pth`` file is read with ``torch.load(weights_only=True)``: tensors and plain containers only, so a
checkpoint that would run code while unpickling is refused before any of it runs.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..files import atomic_write

SAFETENSORS_SUFFIXES = (".safetensors",)
# Wrappers seen around state dicts: official MIIL files use 'model' or 'state_dict'; timm's train.py
# checkpoints use 'state_dict' (and 'state_dict_ema'); DDP prefixes every key with 'module.'.
WRAPPER_KEYS = ("model", "state_dict")
# InplaceABN stores a BN weight w and applies |w| + eps (timm's checkpoint_filter_fn, tresnet.py).
IABN_EPS = 1e-5


class UnsafeCheckpointError(ValueError):
    """A checkpoint needs arbitrary unpickling (code execution) and was refused."""


def read_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """Read the tensors of the checkpoint at ``path`` (.pth/.pt/.bin via weights_only, or .safetensors)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Checkpoint {str(path)!r} does not exist; pass the path of a .pth or .safetensors file"
        )
    if path.suffix in SAFETENSORS_SUFFIXES:
        from safetensors.torch import load_file

        return dict(load_file(str(path), device="cpu"))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"Refused to load {str(path)!r}: it holds Python objects that only a full unpickle could build, "
            f"and unpickling can run arbitrary code, so it was not executed. Details: {str(err).splitlines()[0]} "
            f"Fix: if you trust the file's origin, re-save only its tensors "
            f"(torch.save(model.state_dict(), 'clean.pth')) or convert it to .safetensors."
        ) from None
    return unwrap_state_dict(obj, source=str(path))


def unwrap_state_dict(obj: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Return the flat ``{name: tensor}`` dict inside ``obj`` (unwrapping 'model'/'state_dict' and 'module.')."""
    for key in WRAPPER_KEYS:
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source} holds a {type(obj).__name__}, not a state dict of tensors")
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(
            f"{source} is not a flat state dict: {len(not_tensors)} entries are not tensors, "
            f"e.g. {not_tensors[:5]}; expected {{name: tensor}} or a dict wrapping one under {WRAPPER_KEYS}"
        )
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)


def check_keys(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise a KeyError naming every missing, unexpected or mis-shaped key of ``state_dict`` for ``model``."""
    expected = model.state_dict()
    # BatchNorm fills a missing num_batches_tracked itself (InplaceABN checkpoints lack it); it is not a weight.
    missing = sorted(k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state_dict if k not in expected)
    shapes = sorted(
        f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or shapes:
        parts = [f"{source} does not fit the model:"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if keys:
                shown = ", ".join(keys[:12]) + (f", ... ({len(keys)} in all)" if len(keys) > 12 else "")
                parts.append(f"{title} keys: {shown}")
        parts.append("Fix: check that the architecture matches the file (e.g. tresnet_m vs tresnet_l, 1K vs 21K head).")
        raise KeyError(" ".join(parts))


def _miil_name(model: nn.Module, key: str) -> str:
    """Official MIIL name of timm TResNet ``key``: conv2d_ABN is Sequential(conv, InplaceABN), nested once more
    when an anti-alias layer follows it (timm's checkpoint_filter_fn undoes exactly this)."""
    m = re.match(r"(.*\.downsample\.\d+)\.(conv|bn)\.(.+)$", key)
    if m:
        return f"{m[1]}.{0 if m[2] == 'conv' else 1}.{m[3]}"
    m = re.match(r"(.*conv\d+)\.(conv|bn)\.(.+)$", key)
    if not m:
        return key
    holder = model.get_submodule(m[1])
    has_aa = getattr(holder, "aa", None) is not None and not isinstance(holder.aa, nn.Identity)
    inner = 0 if m[2] == "conv" else 1
    return f"{m[1]}.0.{inner}.{m[3]}" if has_aa else f"{m[1]}.{inner}.{m[3]}"


def to_miil_layout(model: nn.Module, negate_fraction: float = 0.5, seed: int = 0) -> dict[str, torch.Tensor]:
    """State dict of a timm TResNet ``model`` in the official MIIL InplaceABN layout.

    A BN weight g becomes w with |w| + eps = g; a ``negate_fraction`` of them (chosen with ``seed``) is stored
    negative, as InplaceABN allows, so a loader that forgets the |w| conversion is caught.
    """
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in model.state_dict().items():
        value = value.detach().clone()
        if re.search(r"\.bn\.weight$", key):
            if (value <= IABN_EPS).any():
                raise ValueError(f"{key} has weights <= {IABN_EPS}; InplaceABN cannot represent them")
            sign = torch.where(torch.rand(value.shape, generator=gen) < negate_fraction, -1.0, 1.0)
            value = sign * (value - IABN_EPS)
        out[_miil_name(model, key)] = value
    return out


def write_miil_checkpoint(model: nn.Module, path: Path | str, wrapper: str = "model", **layout) -> Path:
    """Save ``model`` to ``path`` as an official MIIL checkpoint ``{wrapper: state_dict}`` ('model' or 'state_dict')."""
    if wrapper not in WRAPPER_KEYS:
        raise ValueError(f"Unknown wrapper {wrapper!r}; official files use one of {WRAPPER_KEYS}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({wrapper: to_miil_layout(model, **layout)}, path)
    return path


# The safetensors metadata entry in which write_weights records how the weights were trained (a JSON object), so that
# the file alone says which size, labels and preprocessing the model expects (TrainedWith).
METADATA_KEY = "tresnet_nb"
METADATA_FORMAT = 1


@dataclass(frozen=True)
class TrainedWith:
    """How the weights in a file this library wrote were trained: what the model expects to be given and returns.

    ``pretrained`` says whether that training started from pretrained weights (``weights`` names them); ``source``
    is where this was read: the file's own metadata, or the run_config.json and metrics.json beside an older file."""

    arch: str
    tag: str | None
    img_size: int
    class_names: tuple[str, ...]
    task: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    pretrained: bool
    weights: str
    temperature: float | tuple[float, ...] | None = None
    source: str = "metadata"

    def to_json(self) -> str:
        data = {k: v for k, v in asdict(self).items() if k != "source"}
        return json.dumps({"format": METADATA_FORMAT, **data})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str) -> TrainedWith:
        """From the metadata's JSON object (or one built from a run folder); a missing or mistyped entry raises."""
        try:
            t = data.get("temperature")
            return cls(
                arch=str(data["arch"]),
                tag=data.get("tag"),
                img_size=int(data["img_size"]),
                class_names=tuple(str(n) for n in data["class_names"]),
                task=str(data["task"]),
                mean=tuple(float(v) for v in data["mean"]),
                std=tuple(float(v) for v in data["std"]),
                interpolation=str(data["interpolation"]),
                pretrained=bool(data["pretrained"]),
                weights=str(data["weights"]),
                temperature=None if t is None else float(t) if not isinstance(t, list) else tuple(map(float, t)),
                source=source,
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{source} does not describe a training run ({type(err).__name__}: {err})") from None


def read_trained_with(path: Path | str) -> TrainedWith | None:
    """The :class:`TrainedWith` stored in the safetensors file at ``path`` by :func:`write_weights`, else None."""
    path = Path(path)
    if path.suffix not in SAFETENSORS_SUFFIXES:
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        text = (f.metadata() or {}).get(METADATA_KEY)
    if text is None:
        return None
    return TrainedWith.from_dict(json.loads(text), source=f"the metadata of {str(path)!r}")


def write_weights(model: nn.Module, path: Path | str, trained: TrainedWith | None = None) -> Path:
    """Save ``model``'s state dict as safetensors (timm layout, loadable by ``load_model(arch, weights=path)``),
    atomically, with ``trained`` (how it was trained: size, labels, preprocessing) in the file's metadata."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"format": "pt", **({METADATA_KEY: trained.to_json()} if trained is not None else {})}
    return atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))
