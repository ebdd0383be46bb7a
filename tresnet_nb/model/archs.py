"""The architectures: names, default weight tags and the input sizes they accept. Imports no torch, so the
configuration can check an ARCH or an IMG_SIZE before anything heavy is loaded (timm is read only to check a tag)."""

from __future__ import annotations

from dataclasses import dataclass

from ..paper import IMAGENET_TOP1


@dataclass(frozen=True)
class ArchSpec:
    """One architecture: its default pretrained tag, its checkpoint layout family and the paper's ImageNet top-1."""

    default_tag: str
    family: str  # 'tresnet' (timm's checkpoint_filter_fn converts the official MIIL layout) or 'timm' (as saved)
    paper_top1: float | None


ARCHS: dict[str, ArchSpec] = {
    "tresnet_m": ArchSpec("miil_in21k_ft_in1k", "tresnet", IMAGENET_TOP1["tresnet_m"]),
    "tresnet_l": ArchSpec("miil_in1k", "tresnet", IMAGENET_TOP1["tresnet_l"]),
    "tresnet_xl": ArchSpec("miil_in1k", "tresnet", IMAGENET_TOP1["tresnet_xl"]),
    "tresnet_v2_l": ArchSpec("miil_in21k_ft_in1k", "tresnet", IMAGENET_TOP1["tresnet_v2_l"]),
    "resnet50": ArchSpec("a1_in1k", "timm", IMAGENET_TOP1["resnet50"]),
}
# TResNet's stem is a space-to-depth block of 4x4 pixels: sides must be multiples of 4 (later stages pad odd sizes:
# the paper fine-tunes at 368 px, which is 11.5 x 32). ResNet50 takes any size.
SIZE_STEP = 4
MIN_SIZE = 32


def split_arch(arch: str) -> tuple[str, str | None]:
    """Split ``arch`` ('tresnet_m' or 'tresnet_m.miil_in21k') into a known name and an optional tag."""
    name, _, tag = arch.partition(".")
    if name not in ARCHS:
        raise ValueError(f"Unknown architecture {arch!r}; choose one of {sorted(ARCHS)} (optionally 'name.tag')")
    if tag:
        from timm.models import list_pretrained

        known = list_pretrained(f"{name}.*")
        if f"{name}.{tag}" not in known:
            raise ValueError(f"Unknown weight tag {tag!r} for {name}; timm knows {known}")
    return name, tag or None


def check_img_size(img_size: int) -> int:
    """Return ``img_size`` if the networks accept it (a multiple of 4, at least 32), else raise."""
    if not isinstance(img_size, int) or isinstance(img_size, bool) or img_size < MIN_SIZE or img_size % SIZE_STEP:
        lower = max(MIN_SIZE, (int(img_size) // SIZE_STEP) * SIZE_STEP) if isinstance(img_size, (int, float)) else 224
        raise ValueError(
            f"Image size {img_size!r} is not a multiple of {SIZE_STEP} of at least {MIN_SIZE}, which TResNet needs "
            f"(its stem folds {SIZE_STEP}x{SIZE_STEP} pixel blocks into channels); use e.g. {lower} or "
            f"{lower + SIZE_STEP}"
        )
    return img_size
