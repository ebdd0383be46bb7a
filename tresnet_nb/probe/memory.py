"""Activation memory of TResNet's variants beside each other (:func:`memory_comparison`): plain BatchNorm,
InPlace-ABN, gradient checkpointing and a baseline, with the maximal training batch those bytes allow."""

from __future__ import annotations

import copy

import pandas as pd
import torch
from torch import nn

from ..model.archs import split_arch
from ..model.iabn_convert import convert_to_iabn
from ..model.load import load_model
from ..model.memory import grad_checkpointing
from ..model.steps import NUM_CLASSES
from ..paper import PAPER_V100
from ..runtime import device as default_device
from .measure import estimate_max_batch, resident_training_bytes, saved_bytes_slope
from .settings import V100_GIB


def memory_comparison(
    arch: str = "tresnet_m",
    img_size: int = 224,
    precision: str = "fp32",
    channels_last: bool = False,
    budget_gib: float = V100_GIB,
    baseline: str | None = "resnet50",
    device: torch.device | None = None,
) -> pd.DataFrame:
    """Activation memory of a training step of ``arch`` at ``img_size`` in ``precision`` (``channels_last`` if
    asked) on ``device`` with plain BatchNorm, with InPlace-ABN (the pure-PyTorch backend,
    :mod:`tresnet_nb.model.iabn`) and with gradient checkpointing, and of ``baseline``: MiB saved for backward per
    image, the ratio to plain BatchNorm, and the maximal training batch those bytes allow in ``budget_gib`` beside
    the paper's V100 batch (the paper's TResNet trained with InPlace-ABN)."""
    device = device or default_device()
    budget = budget_gib * 2**30

    def measure(model: nn.Module) -> tuple[float, int]:
        model = model.to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        per_image, fixed = saved_bytes_slope(model, img_size, device, precision, channels_last)
        return per_image, estimate_max_batch(per_image, resident_training_bytes(model) + fixed, budget)

    model = load_model(arch, None, num_classes=NUM_CLASSES)
    rows = [(f"{arch}, BatchNorm (timm)", arch, *measure(model))]
    converted = convert_to_iabn(copy.deepcopy(model), backend="pure")
    rows.append((f"{arch}, InPlace-ABN", arch, *measure(converted)))
    with grad_checkpointing(model):
        rows.append((f"{arch}, gradient checkpointing", arch, *measure(model)))
    if baseline:
        rows.append((f"{baseline}, BatchNorm", baseline, *measure(load_model(baseline, None, num_classes=NUM_CLASSES))))
    first = rows[0][2]
    paper_key = f"paper V100 max train batch (224 px, {V100_GIB:g} GB)"
    return pd.DataFrame(
        [
            {
                "variant": name,
                "saved MiB/image": round(per_image / 2**20, 2),
                "vs BatchNorm": round(per_image / first, 3),
                f"max train batch (est., {budget_gib:g} GiB)": batch,
                paper_key: PAPER_V100[split_arch(a)[0]].max_batch if split_arch(a)[0] in PAPER_V100 else None,
            }
            for name, a, per_image, batch in rows
        ]
    ).set_index("variant")
