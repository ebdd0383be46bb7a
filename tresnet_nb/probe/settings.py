"""What the probe measures and how: its constants, :class:`ProbeSettings` and the notebook's and command line's ways
to make them (:func:`plan`, :func:`parse_archs`, :func:`high_res_settings`, :func:`batch_arg`,
:func:`unused_parameters`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..model.archs import check_img_size, split_arch
from ..model.steps import PRECISIONS
from ..runtime import cpu_precision

MODES = ("infer", "train", "both")
PAPER_FRACTION = 0.9  # the paper measures at 90% of the maximal batch size
CPU_BATCH = 16  # batch used on a CPU when 'max' is asked (no allocator limit to search)
V100_GIB = 16.0  # the paper's device; the default memory budget of the batch estimate off CUDA
TABLE_COLUMNS = ("Top Training Speed (img/sec)", "Top Inference Speed (img/sec)", "Max Train Batch Size")


def paper_batch(max_batch: int) -> int:
    """The batch the paper's protocol measures at for ``max_batch``: 90% of it (rounded down, at least 1)."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, not {max_batch!r}")
    return max(1, math.floor(PAPER_FRACTION * max_batch))


@dataclass(frozen=True)
class ProbeSettings:
    """What the probe measures and how; ``batch_size`` is a number or 'max' (the paper's protocol on CUDA)."""

    archs: tuple[str, ...]
    img_size: int = 224
    mode: str = "both"
    precision: str = "fp32"
    channels_last: bool = False
    batch_size: int | str = "max"
    compile: bool = False
    warmup: int = 2
    repeats: int = 5
    steps: int = 1
    budget_gib: float | None = None  # batch estimate's memory: None = the CUDA device's, else a V100's 16 GiB
    flops: bool = True

    def __post_init__(self) -> None:
        if not self.archs:
            raise ValueError("Give at least one architecture, e.g. archs=('tresnet_m', 'resnet50')")
        for arch in self.archs:
            split_arch(arch)
        check_img_size(self.img_size)
        if self.mode not in MODES:
            raise ValueError(f"Unknown mode {self.mode!r}; choose one of {MODES}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"Unknown precision {self.precision!r}; choose one of {tuple(PRECISIONS)}")
        if self.batch_size != "max" and (
            isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1
        ):
            raise ValueError(f"batch_size must be a positive integer or 'max', not {self.batch_size!r}")
        for name in ("repeats", "steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)!r}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be at least 0, not {self.warmup!r}")
        if self.budget_gib is not None and self.budget_gib <= 0:
            raise ValueError(f"budget_gib must be positive (GiB) or None, not {self.budget_gib!r}")

    @property
    def modes(self) -> tuple[str, ...]:
        return ("train", "infer") if self.mode == "both" else (self.mode,)


def plan(
    device: torch.device,
    preset: str = "cpu",
    archs: Sequence[str] | None = None,
    img_size: int | None = None,
    precision: str | None = None,
    batch_size: int | str | None = None,
    **overrides: Any,
) -> ProbeSettings:
    """The probe's settings for ``device`` and a notebook preset: on a GPU the paper's protocol (TResNet-M/L/XL and
    ResNet50 at 224, fp16, 90% of the maximal batch); on a CPU a reduced set with the same columns (TResNet-M and
    ResNet50, bf16 where the CPU computes it natively, else fp32, + channels_last, a fixed batch); ``smoke`` shrinks
    either to seconds. Given values win."""
    gpu = device.type == "cuda"
    precision = None if precision == "auto" else precision  # RunConfig's 'auto': the plan's choice
    base: dict[str, Any] = (
        {
            "archs": ("tresnet_m", "tresnet_l", "tresnet_xl", "resnet50"),
            "img_size": 224,
            "precision": "fp16",
            "channels_last": True,
            "batch_size": "max",
            "repeats": 5,
        }
        if gpu
        else {
            "archs": ("tresnet_m", "resnet50"),
            "img_size": 224,
            "precision": cpu_precision(),
            "channels_last": True,
            "batch_size": CPU_BATCH,
            "warmup": 1,
            "repeats": 3,
        }
    )
    if preset == "smoke":
        base.update(img_size=64, batch_size=4, warmup=1, repeats=2)
    elif preset not in ("cpu", "paper"):
        raise ValueError(f"Unknown preset {preset!r}; choose one of ('smoke', 'cpu', 'paper')")
    given = {
        "archs": tuple(archs) if archs else None,
        "img_size": img_size,
        "precision": precision,
        "batch_size": batch_size,
        **overrides,
    }
    base.update({k: v for k, v in given.items() if v is not None})
    return ProbeSettings(**base)


def parse_archs(text: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``text`` 'tresnet_m, resnet50' or a list -> a tuple of names; None or '' -> None (the plan's default)."""
    if text is None:
        return None
    names = [a.strip() for a in (text.split(",") if isinstance(text, str) else text) if a.strip()]
    return tuple(names) or None


def high_res_settings(settings: ProbeSettings, device: torch.device, size: int | None = None) -> ProbeSettings | None:
    """``settings`` at a higher resolution: ``size`` if given (0 turns it off), else 448 px on a GPU ``device`` (the
    paper's high-resolution models) and nothing on a CPU, where 448 px would take minutes per architecture."""
    if size == 0 or (size is None and device.type != "cuda"):
        return None
    return replace(settings, img_size=check_img_size(size or 448))


def batch_arg(text: str) -> int | str:
    """``--batch-size`` value ``text``: a positive integer or 'max'."""
    if text == "max":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"--batch-size must be a positive integer or 'max', not {text!r}")
    return value


def unused_parameters(**params: Any) -> str:
    """The notebook ``params`` a probe has no use for (weights, data, epochs) that were set, said aloud: every
    notebook takes the same parameters so that one ``run`` command can pass them to all, and the probe ignores
    these rather than pretend to use them."""
    given = {k: v for k, v in params.items() if v is not None}
    if not given:
        return "every parameter set is used"
    return f"ignored by the probe (speed and memory do not depend on them; random weights, random tensors): {given}"
