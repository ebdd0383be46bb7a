"""How big each gpu-check section's work is, by device and ``--quick``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

SECTIONS = ("tests", "probe", "finetune", "iabn", "compile", "export")
DATA_WAIT_GOAL = 0.05  # the finetune section's goal on a GPU with 16 CPU cores
KAGGLE_SIZE = (2048, 1365)  # Plant Pathology 2020's photographs; Herbarium 2020's sheets are ~1000 x 1500
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, kw_only=True)
class Sizes:
    """How big each section's work is: the full check on a GPU, ``--quick`` on a GPU, or a CPU's toy sizes."""

    probe_archs: tuple[str, ...]
    probe_size: int
    probe_high: int
    probe_precisions: tuple[str, ...]
    probe_batch: int | str  # 'max': the paper's 90% of the maximal batch
    files: int  # distinct JPEGs written (~0.1 s each); the split repeats them (hard links) up to `items`
    items: int
    phases: tuple[tuple[int, int, int], ...]  # (size, batch, timed steps)
    warmup_steps: int
    model_batch: int  # iabn and compile: the timed batch
    model_size: int
    search: bool  # iabn: search the maximal batch (CUDA)
    compile_backend: str | None  # None: torch.compile's default (inductor)
    repeats: int
    tests_timeout_s: int


def sizes_for(device: torch.device, quick: bool) -> Sizes:
    """The work of each section on ``device`` (full or ``quick``)."""
    if device.type == "cuda":
        if quick:
            return Sizes(
                probe_archs=("tresnet_m", "resnet50"), probe_size=224, probe_high=448,
                probe_precisions=("fp16", "bf16"), probe_batch=256, files=32, items=2048,
                phases=((224, 64, 20), (448, 32, 10)), warmup_steps=5, model_batch=128, model_size=224,
                search=False, compile_backend=None, repeats=3, tests_timeout_s=90,
            )  # fmt: skip
        return Sizes(
            probe_archs=("tresnet_m", "tresnet_l", "tresnet_xl", "resnet50"), probe_size=224, probe_high=448,
            probe_precisions=("fp16", "bf16"), probe_batch="max", files=64, items=4096,
            phases=((224, 64, 40), (448, 32, 20)), warmup_steps=5, model_batch=128, model_size=224, search=True,
            compile_backend=None, repeats=5, tests_timeout_s=120,
        )  # fmt: skip
    # a CPU proves the code paths at toy sizes; inductor's C++ build alone would take minutes here, so compile
    # traces with aot_eager (dynamo's capture and AOTAutograd's forward/backward graphs, no code generation)
    return Sizes(
        probe_archs=("tresnet_m",), probe_size=64, probe_high=96, probe_precisions=("fp32", "bf16"), probe_batch=2,
        files=8, items=24, phases=((64, 4, 3), (96, 4, 2)), warmup_steps=1, model_batch=2, model_size=64,
        search=False, compile_backend="aot_eager", repeats=1, tests_timeout_s=300,
    )  # fmt: skip
