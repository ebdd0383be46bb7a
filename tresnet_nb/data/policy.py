"""The names of the augmentation policies and their check, free of torch so that a configuration can be checked
before anything heavy loads (the policies themselves are in :mod:`tresnet_nb.data.augment`)."""

from __future__ import annotations

AUGMENTS = ("none", "flip", "autoaugment", "randaugment")


def check_augment(policy: str, erasing: float = 0.0) -> None:
    """Raise ValueError for an unknown ``policy`` or an ``erasing`` probability outside [0, 1]."""
    if policy not in AUGMENTS:
        raise ValueError(f"Unknown augmentation {policy!r}; choose one of {AUGMENTS}")
    if isinstance(erasing, bool) or not isinstance(erasing, (int, float)) or not 0 <= erasing <= 1:
        raise ValueError(f"Random-erasing probability must be a number in [0, 1], not {erasing!r}")
