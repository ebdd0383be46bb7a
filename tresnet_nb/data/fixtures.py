"""Pictures for dataset fixtures: small real image files, so that readers, verification and loaders run on the
same kind of files as the real datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# Three classes told apart by colour: a model can learn them, so smoke runs on fixtures train for real.
FIXTURE_CLASSES = {"cat": (200, 120, 60), "dog": (90, 90, 200), "fox": (220, 80, 20)}


def write_image(path: Path, colour: tuple[int, int, int], rng: np.random.Generator, size: tuple[int, int]) -> Path:
    """Write a noisy picture of ``colour`` and ``size`` (width, height) to ``path``, format from its extension."""
    w, h = size
    noise = rng.integers(-40, 41, (h, w, 3))
    pixels = np.clip(np.array(colour)[None, None, :] + noise, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path
