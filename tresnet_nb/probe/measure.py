"""Throughput and memory probe: the paper's speed table (Top Training Speed, Top Inference Speed, Max Train Batch
Size) measured the same way on any machine.

What is timed, per architecture, on random tensors already on the device (the model's speed, not the data loader's):
- inference: eval mode (BatchNorm uses running statistics, no dropout) under ``torch.inference_mode``, one forward
  per step; forgetting ``model.eval()`` is the classic way to mis-measure it (Alibaba-MIIL/TResNet issue #3);
- training: train mode, forward, cross-entropy loss, backward and an SGD step (with a gradient scaler in fp16).
Both steps are :mod:`tresnet_nb.model.steps`' (the engine's batch search runs the same training step). Each is
warmed up, then timed in ``repeats`` rounds of ``steps`` steps, the device synchronised around each round on CUDA;
the report gives the median and the spread over the rounds, and img/s = batch / median step time.

Batch: on CUDA ``batch_size='max'`` searches the largest batch that fits (doubling then bisection, backing off on
out-of-memory and allocation failures and re-raising any other error, see
:func:`tresnet_nb.model.steps.search_max_batch`) and measures at 90% of it, the paper's protocol; a search that reaches
its cap reports '>= N' (the true maximum is larger) and measures at 90% of the cap. A CPU has no allocator limit to find, so there a fixed batch is used, and the
maximal training batch is estimated from the bytes autograd saves per image (every device reports that estimate).

One device, one process: on a multi-GPU machine this measures a single GPU, as the paper's table does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import nn

from ..model.describe import count_parameters
from ..model.load import load_model
from ..model.memory import saved_tensor_bytes
from ..model.steps import (
    NUM_CLASSES,
    PRECISIONS,
    inference_step,
    precision_autocast,
    random_images,
    search_max_batch,
    synchronize,
    training_step,
)
from ..runtime import device as default_device
from ..runtime import device_name, environment
from .results import ArchResult, ProbeReport
from .settings import CPU_BATCH, V100_GIB, ProbeSettings, paper_batch
from .timing import time_steps


def flops_per_image(model: nn.Module, img_size: int, device: torch.device) -> int:
    """Floating-point operations of one eval-mode forward of ``model`` on one image of side ``img_size`` on
    ``device`` (torch's flop counter: 2 per multiply-add, convolutions and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(1, 3, img_size, img_size, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def matmul_peak(device: torch.device, precision: str = "fp32", size: int | None = None, repeats: int = 5) -> float:
    """Achieved FLOP/s of a square matrix multiply of side ``size`` in ``precision`` on ``device``: a practical
    peak to compare the models' achieved FLOP/s with (the best of ``repeats`` rounds)."""
    size = size or (4096 if device.type == "cuda" else 1024)
    dtype = PRECISIONS[precision] or torch.float32
    a = torch.rand(size, size, device=device, dtype=dtype)
    b = torch.rand(size, size, device=device, dtype=dtype)
    a @ b  # warm-up (library initialisation, kernel selection)
    best = math.inf
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(3):
            a @ b
        synchronize(device)
        best = min(best, (time.perf_counter() - start) / 3)
    return 2 * size**3 / best


class UnmeasurableError(ValueError):
    """A measurement the settings ask for that the network cannot run at that size and batch."""


def smallest_norm_input(model: nn.Module, img_size: int, device: torch.device) -> int:
    """Values per channel that the smallest-map BatchNorm layer of ``model`` sees for one image of side ``img_size``
    (1 where the last feature map is 1x1); 0 when the model has no BatchNorm. One eval-mode forward."""
    sizes: list[int] = []
    hooks = [
        m.register_forward_pre_hook(lambda _m, args: sizes.append(args[0][0, 0].numel()))
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.rand(1, 3, img_size, img_size, device=device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return min(sizes, default=0)


def check_trainable(model: nn.Module, arch: str, img_size: int, batch: int, device: torch.device) -> None:
    """Refuse, before anything is timed, a training measurement that BatchNorm cannot run: in training mode it needs
    more than one value per channel, so a batch of ``batch`` at ``img_size`` px must give more than one at the
    network's smallest feature map (TResNet-M at 32 px ends on a 1x1 map: batch 1 cannot train there)."""
    per_image = smallest_norm_input(model, img_size, device)
    if per_image and batch * per_image < 2:
        least = -(-2 // per_image)
        raise UnmeasurableError(
            f"{arch} at {img_size} px ends on a {math.isqrt(per_image)}x{math.isqrt(per_image)} feature map, so a "
            f"training batch of {batch} gives its BatchNorm one value per channel, which it cannot train on. "
            f"Fix: --batch-size {least} or more (or 'max' on a GPU), or a larger --img-size"
        )


def saved_bytes_slope(
    model: nn.Module,
    img_size: int,
    device: torch.device,
    precision: str = "fp32",
    channels_last: bool = False,
    batches: tuple[int, int] = (2, 4),
) -> tuple[float, int]:
    """(bytes saved for backward per image, bytes saved whatever the batch) of a training forward and loss of
    ``model`` at ``img_size`` on ``device`` in ``precision``, from :func:`tresnet_nb.model.memory.saved_tensor_bytes`
    at the two ``batches``. The fixed part is real: under autocast every weight is cast to bf16/fp16 and the copy is
    saved for backward, once per step, so dividing one measurement by its batch would overstate the per-image cost
    at small batches."""
    small, large = batches
    totals = []
    for batch in (small, large):
        x = random_images(batch, img_size, device, channels_last)
        with precision_autocast(device, precision):
            totals.append(saved_tensor_bytes(model, x, lambda out: out.float().sum()).total_bytes)
        del x
    per_image = (totals[1] - totals[0]) / (large - small)
    return per_image, max(0, int(round(totals[0] - small * per_image)))


def resident_training_bytes(model: nn.Module) -> int:
    """Memory a training step of ``model`` holds whatever the batch: parameters, gradients and SGD's momentum."""
    return 3 * sum(p.numel() * p.element_size() for p in model.parameters())


def estimate_max_batch(saved_per_image: float, resident_bytes: int, budget_bytes: float) -> int:
    """The training batch whose activations (``saved_per_image`` bytes each) fill ``budget_bytes`` left after
    ``resident_bytes``: an upper estimate (it ignores the allocator's workspace and fragmentation and backward's
    transient buffers)."""
    if saved_per_image <= 0:
        raise ValueError(f"saved_per_image must be positive, not {saved_per_image!r}")
    return max(0, int((budget_bytes - resident_bytes) // saved_per_image))


def _budget_bytes(settings: ProbeSettings, device: torch.device) -> float:
    if settings.budget_gib is not None:
        return settings.budget_gib * 2**30
    if device.type == "cuda":
        return float(torch.cuda.get_device_properties(device).total_memory)
    return V100_GIB * 2**30


def probe_batches(
    model: nn.Module, result: ArchResult, settings: ProbeSettings, device: torch.device, search: bool
) -> dict[str, int]:
    """The batch of each mode: the settings' fixed one, 90% of the maximal batch found on the device (``search``),
    or :data:`CPU_BATCH`; ``result`` records the search and says which in its batch note."""
    batches: dict[str, int] = {}
    capped: list[str] = []  # modes whose search reached its cap, shown '>= N'
    for mode in settings.modes:
        if settings.batch_size != "max":
            batches[mode] = int(settings.batch_size)
            result.batch_note = f"fixed {settings.batch_size}"
        elif search:
            found = search_max_batch(model, mode, settings.img_size, device, settings.precision, settings.channels_last)
            setattr(result, f"max_{mode}_batch", found.largest)
            setattr(result, f"max_{mode}_batch_capped", found.capped)
            batches[mode] = paper_batch(found.largest)
            result.batch_note = "90% of the maximal batch"
            capped += [f"{mode} {found.shown}"] if found.capped else []
        else:
            batches[mode] = CPU_BATCH
            result.batch_note = f"fixed {CPU_BATCH} ('max' needs a CUDA device)"
    if capped:
        result.batch_note += f" (the search reached its cap: {', '.join(capped)}, 90% of the cap)"
    return batches


def probe_model(
    model: nn.Module,
    arch: str,
    settings: ProbeSettings,
    device: torch.device,
    search: bool | None = None,
    budget_bytes: float | None = None,
) -> ArchResult:
    """Measure ``model`` (already built, named ``arch``) on ``device`` as ``settings`` say. ``search`` decides
    whether ``batch_size='max'`` searches the device's memory (default: on CUDA only; elsewhere a fixed batch of
    :data:`CPU_BATCH`); ``budget_bytes`` is the batch estimate's memory (default: the settings' or the device's)."""
    model = model.to(device)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    search = device.type == "cuda" if search is None else search
    result = ArchResult(arch, count_parameters(model), "")
    if budget_bytes is None:
        budget_bytes = _budget_bytes(settings, device)
    if "train" in settings.modes and settings.batch_size != "max":  # before any timing ('max' searches from 8)
        check_trainable(model, arch, settings.img_size, settings.batch_size, device)
    batches = probe_batches(model, result, settings, device, search)
    step_model = torch.compile(model) if settings.compile else model
    if "infer" in batches:
        step = inference_step(
            step_model, batches["infer"], settings.img_size, device, settings.precision, settings.channels_last
        )
        result.infer = time_steps(step, batches["infer"], device, settings.warmup, settings.repeats, settings.steps)
    if "train" in batches:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        step = training_step(
            step_model, batches["train"], settings.img_size, device, settings.precision, settings.channels_last
        )
        result.train = time_steps(step, batches["train"], device, settings.warmup, settings.repeats, settings.steps)
        if device.type == "cuda":
            result.peak_memory_bytes = int(torch.cuda.max_memory_allocated(device))
        del step
    result.saved_bytes_per_image, result.saved_bytes_fixed = saved_bytes_slope(
        model, settings.img_size, device, settings.precision, settings.channels_last
    )
    result.max_train_batch_estimate = estimate_max_batch(
        result.saved_bytes_per_image, resident_training_bytes(model) + result.saved_bytes_fixed, budget_bytes
    )
    if settings.flops:
        result.flops_per_image = flops_per_image(model, settings.img_size, device)
    model.zero_grad(set_to_none=True)
    return result


def run_probe(
    settings: ProbeSettings,
    device: torch.device | None = None,
    progress: bool = True,
    build: Callable[[str], nn.Module] | None = None,
) -> ProbeReport:
    """Probe every architecture of ``settings`` on ``device`` (default: the first GPU, else the CPU), with random
    weights (speed does not depend on them), printing each step when ``progress``. ``build(arch)`` makes the model
    (default: :func:`load_model` with a 1000-class head, as the paper's ImageNet models)."""
    device = device or default_device()
    build = build or (lambda arch: load_model(arch, None, num_classes=NUM_CLASSES))
    start = time.perf_counter()
    budget = _budget_bytes(settings, device)
    peak = matmul_peak(device, settings.precision) if settings.flops else None
    report = ProbeReport(settings, device_name(device), environment(), budget, peak)
    for i, arch in enumerate(settings.archs, 1):
        if progress:
            print(
                f"[{i}/{len(settings.archs)}] {arch} at {settings.img_size} px, {settings.precision}"
                f"{', channels_last' if settings.channels_last else ''}, mode {settings.mode} ...",
                flush=True,
            )
        model = build(arch)
        result = probe_model(model, arch, settings, device, budget_bytes=budget)
        report.results.append(result)
        if progress:
            parts = [
                f"{m} {getattr(result, m).images_per_second:.1f} img/s (batch {getattr(result, m).batch_size})"
                for m in ("train", "infer")
                if getattr(result, m) is not None
            ]
            print(f"    {', '.join(parts)}", flush=True)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    report.seconds = time.perf_counter() - start
    return report
