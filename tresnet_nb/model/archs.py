"""The architectures: any convolutional network timm knows, its default weight tag and the input sizes it accepts.

TResNet and the paper's ResNet50 baseline have an entry in :data:`ARCHS` (the layout family of their checkpoints, the
paper's ImageNet top-1); any other timm name is looked up in timm's registry. Imports no torch, so the configuration
can check an ARCH or an IMG_SIZE before anything heavy is loaded (timm is imported only for a name outside the table
or a tag)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from ..paper import IMAGENET_TOP1


@dataclass(frozen=True)
class ArchSpec:
    """One architecture: its default pretrained tag (None: timm has no weights for it), its checkpoint layout family
    ('tresnet': timm's checkpoint_filter_fn converts the official MIIL layout; 'timm': as saved), the paper's ImageNet
    top-1 and the step its input sides must be a multiple of."""

    default_tag: str | None
    family: str = "timm"
    paper_top1: float | None = None
    size_step: int = 1


# TResNet's stem is a space-to-depth block of 4x4 pixels: sides must be multiples of 4 (later stages pad odd sizes:
# the paper fine-tunes at 368 px, which is 11.5 x 32).
TRESNET_STEP = 4
ARCHS: dict[str, ArchSpec] = {
    "tresnet_m": ArchSpec(
        default_tag="miil_in21k_ft_in1k",
        family="tresnet",
        paper_top1=IMAGENET_TOP1["tresnet_m"],
        size_step=TRESNET_STEP,
    ),
    "tresnet_l": ArchSpec(
        default_tag="miil_in1k", family="tresnet", paper_top1=IMAGENET_TOP1["tresnet_l"], size_step=TRESNET_STEP
    ),
    "tresnet_xl": ArchSpec(
        default_tag="miil_in1k", family="tresnet", paper_top1=IMAGENET_TOP1["tresnet_xl"], size_step=TRESNET_STEP
    ),
    "tresnet_v2_l": ArchSpec(
        default_tag="miil_in21k_ft_in1k",
        family="tresnet",
        paper_top1=IMAGENET_TOP1["tresnet_v2_l"],
        size_step=TRESNET_STEP,
    ),
    "resnet50": ArchSpec(default_tag="a1_in1k", family="timm", paper_top1=IMAGENET_TOP1["resnet50"]),
}
MIN_SIZE = 32  # five stride-2 stages leave a 1 x 1 feature map at 32 px
SIZE_STEP = TRESNET_STEP  # the rule when no architecture is named (e.g. a progressive schedule's sizes): safe for all


def arch_spec(name: str) -> ArchSpec:
    """The :class:`ArchSpec` of the timm architecture ``name`` (no tag); an unknown name or a network that takes
    only one input size (a vision transformer) is refused with the reason."""
    if name in ARCHS:
        return ARCHS[name]
    import timm
    from timm.models import get_pretrained_cfg

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.75)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"Unknown architecture {name!r}{hint} ARCH takes a timm model name (timm.list_models() lists them), "
            f"optionally with a weight tag ('tresnet_m.miil_in21k'); e.g. {sorted(ARCHS)}"
        )
    cfg = get_pretrained_cfg(name)
    if cfg is not None and cfg.fixed_input_size:
        raise ValueError(
            f"{name} takes only {cfg.input_size[-1]} x {cfg.input_size[-1]} px inputs (its position embedding is "
            f"fixed: a vision transformer), while this workbook trains at any IMG_SIZE and resizes progressively. "
            f"Fix: choose a convolutional network, e.g. 'tresnet_m', 'convnext_tiny' or 'tf_efficientnet_lite0'"
        )
    return ArchSpec(default_tag=cfg.tag if cfg is not None else None)


def split_arch(arch: str) -> tuple[str, str | None]:
    """Split ``arch`` ('tresnet_m' or 'tresnet_m.miil_in21k') into a timm name and an optional tag, checking both."""
    if not isinstance(arch, str) or not arch:
        raise ValueError(f"ARCH must be a timm model name such as 'tresnet_m', not {arch!r}")
    name, _, tag = arch.partition(".")
    arch_spec(name)
    if tag:
        from timm.models import list_pretrained

        known = list_pretrained(f"{name}.*")
        if f"{name}.{tag}" not in known:
            raise ValueError(f"Unknown weight tag {tag!r} for {name}; timm knows {known}")
    return name, tag or None


def check_img_size(img_size: int, arch: str | None = None) -> int:
    """Return ``img_size`` if ``arch`` accepts it (TResNet: a multiple of 4; others: any side; at least 32 for
    all), else raise; without ``arch``, the rule that suits every architecture (a multiple of 4)."""
    step = arch_spec(arch.partition(".")[0]).size_step if arch else SIZE_STEP
    if not isinstance(img_size, int) or isinstance(img_size, bool) or img_size < MIN_SIZE or img_size % step:
        lower = max(MIN_SIZE, (int(img_size) // step) * step) if isinstance(img_size, (int, float)) else 224
        why = (
            f"TResNet needs (its stem folds {step}x{step} pixel blocks into channels)"
            if step == TRESNET_STEP
            else "the networks need (five stride-2 stages)"
        )
        rule = f"a multiple of {step} of at least {MIN_SIZE}" if step > 1 else f"a whole number of at least {MIN_SIZE}"
        suggestion = f"{lower} or {lower + step}" if step > 1 else f"{max(lower, MIN_SIZE)}"
        raise ValueError(f"Image size {img_size!r} is not {rule}, which {why}; use e.g. {suggestion}")
    return img_size
