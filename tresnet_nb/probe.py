"""Throughput and memory probe: the paper's speed table (Top Training Speed, Top Inference Speed, Max Train Batch
Size) measured the same way on any machine.

What is timed, per architecture, on random tensors already on the device (the model's speed, not the data loader's):
- inference: eval mode (BatchNorm uses running statistics, no dropout) under ``torch.inference_mode``, one forward
  per step; forgetting ``model.eval()`` is the classic way to mis-measure it (Alibaba-MIIL/TResNet issue #3);
- training: train mode, forward, cross-entropy loss, backward and an SGD step (with a gradient scaler in fp16).
Each is warmed up, then timed in ``repeats`` rounds of ``steps`` steps, the device synchronised around each round on
CUDA; the report gives the median and the spread over the rounds, and img/s = batch / median step time.

Batch: on CUDA ``batch_size='max'`` searches the largest batch that fits (doubling then bisection, backing off on
out-of-memory and re-raising any other error, see :func:`tresnet_nb.memory.max_batch_size`) and measures at 90% of
it, the paper's protocol. A CPU has no allocator limit to find, so there a fixed batch is used, and the maximal
training batch is estimated from the bytes autograd saves per image (every device reports that estimate).

One device, one process: on a multi-GPU machine this measures a single GPU, as the paper's table does.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .memory import buffers_restored, max_batch_size, saved_tensor_bytes
from .models import check_img_size, count_parameters, load_model, split_arch
from .report import atomic_write_text, environment
from .report import device as default_device

MODES = ("infer", "train", "both")
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PAPER_FRACTION = 0.9  # the paper measures at 90% of the maximal batch size
CPU_BATCH = 16  # batch used on a CPU when 'max' is asked (no allocator limit to search)
V100_GIB = 16.0  # the paper's device; the default memory budget of the batch estimate off CUDA
NUM_CLASSES = 1000


@dataclass(frozen=True)
class PaperSpeed:
    """One row of the paper's table: V100, mixed precision, 224 px, at 90% of the maximal batch."""

    train: float  # img/s
    infer: float  # img/s
    max_batch: int


# TResNet paper (WACV 2021), table 1, and the official README (Alibaba-MIIL/TResNet).
PAPER_V100: dict[str, PaperSpeed] = {
    "resnet50": PaperSpeed(805, 2830, 288),
    "tresnet_m": PaperSpeed(730, 2930, 512),
    "tresnet_l": PaperSpeed(345, 1390, 316),
    "tresnet_xl": PaperSpeed(250, 1060, 240),
}
TABLE_COLUMNS = ("Top Training Speed (img/sec)", "Top Inference Speed (img/sec)", "Max Train Batch Size")


def paper_batch(max_batch: int) -> int:
    """The batch the paper's protocol measures at: 90% of the maximal batch (rounded down, at least 1)."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, not {max_batch!r}")
    return max(1, math.floor(PAPER_FRACTION * max_batch))


@dataclass(frozen=True)
class Timing:
    """Seconds per step of each timed round (each the mean over ``steps`` steps) at ``batch_size``."""

    batch_size: int
    seconds: tuple[float, ...]
    steps: int

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def ms_per_step(self) -> float:
        return 1000 * self.median_s

    @property
    def images_per_second(self) -> float:
        return self.batch_size / self.median_s

    @property
    def spread(self) -> float:
        """(slowest - fastest round) / median: 0.05 means the rounds agree within 5%."""
        return (max(self.seconds) - min(self.seconds)) / self.median_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size, "steps": self.steps, "seconds": list(self.seconds),
            "ms_per_step": self.ms_per_step, "images_per_second": self.images_per_second, "spread": self.spread,
        }  # fmt: skip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[], Any], batch_size: int, device: torch.device, warmup: int = 2, repeats: int = 5,
               steps: int = 1) -> Timing:  # fmt: skip
    """Run ``step`` ``warmup`` times, then time ``repeats`` rounds of ``steps`` calls, synchronising the device
    before and after each round so that queued CUDA kernels are counted in the round that launched them."""
    if repeats < 1 or steps < 1 or warmup < 0:
        raise ValueError(f"Need repeats >= 1, steps >= 1, warmup >= 0; got {repeats!r}, {steps!r}, {warmup!r}")
    for _ in range(warmup):
        step()
    rounds = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        rounds.append((time.perf_counter() - start) / steps)
    return Timing(batch_size, tuple(rounds), steps)


def _autocast(device: torch.device, precision: str) -> torch.autocast:
    dtype = PRECISIONS[precision]
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def _inputs(batch: int, img_size: int, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = torch.rand(batch, 3, img_size, img_size, device=device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def inference_step(model: nn.Module, batch: int, img_size: int, device: torch.device, precision: str = "fp32",
                   channels_last: bool = False) -> Callable[[], None]:  # fmt: skip
    """One eval-mode forward of a fixed random batch under ``inference_mode`` (and autocast unless fp32)."""
    x = _inputs(batch, img_size, device, channels_last)

    def step() -> None:
        model.eval()
        with torch.inference_mode(), _autocast(device, precision):
            model(x)

    return step


def training_step(model: nn.Module, batch: int, img_size: int, device: torch.device, precision: str = "fp32",
                  channels_last: bool = False, num_classes: int = NUM_CLASSES) -> Callable[[], None]:  # fmt: skip
    """One train-mode step on a fixed random batch: forward and cross-entropy under autocast (unless fp32),
    backward, SGD step (momentum 0.9) and zero_grad; fp16 goes through a gradient scaler as mixed-precision
    training does. The optimizer's state is created by the first call, so warm-up includes it."""
    x = _inputs(batch, img_size, device, channels_last)
    y = torch.randint(0, num_classes, (batch,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16" and device.type == "cuda")

    def step() -> None:
        model.train()
        with _autocast(device, precision):
            loss = F.cross_entropy(model(x).float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    return step


def search_max_batch(model: nn.Module, mode: str, img_size: int, device: torch.device, precision: str = "fp32",
                     channels_last: bool = False, start: int = 8, limit: int = 4096) -> int:  # fmt: skip
    """The largest batch for which one ``mode`` ('train' or 'infer') step runs without running out of memory
    (:func:`tresnet_nb.memory.max_batch_size`: out-of-memory backs off, any other error propagates). The model's
    BatchNorm statistics are restored afterwards; training steps here change its weights, which a probe's random
    model does not mind."""
    if mode not in ("train", "infer"):
        raise ValueError(f"mode must be 'train' or 'infer', not {mode!r}")
    make = training_step if mode == "train" else inference_step

    def fits(batch: int) -> None:
        make(model, batch, img_size, device, precision, channels_last)()
        _sync(device)

    with buffers_restored(model):
        return max_batch_size(fits, start=min(start, limit), limit=limit).largest


def flops_per_image(model: nn.Module, img_size: int, device: torch.device) -> int:
    """Floating-point operations of one eval-mode forward of one image (torch's flop counter: 2 per multiply-add,
    convolutions and matmuls)."""
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
    """Achieved FLOP/s of a square matrix multiply in ``precision`` on ``device``: a practical peak to compare the
    models' achieved FLOP/s with (the best of ``repeats`` rounds)."""
    size = size or (4096 if device.type == "cuda" else 1024)
    dtype = PRECISIONS[precision] or torch.float32
    a = torch.rand(size, size, device=device, dtype=dtype)
    b = torch.rand(size, size, device=device, dtype=dtype)
    a @ b  # warm-up (library initialisation, kernel selection)
    best = math.inf
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        for _ in range(3):
            a @ b
        _sync(device)
        best = min(best, (time.perf_counter() - start) / 3)
    return 2 * size**3 / best


def saved_bytes_slope(model: nn.Module, img_size: int, device: torch.device, precision: str = "fp32",
                      channels_last: bool = False, batches: tuple[int, int] = (2, 4)) -> tuple[float, int]:  # fmt: skip
    """(bytes saved for backward per image, bytes saved whatever the batch) of a training forward and loss, from
    :func:`tresnet_nb.memory.saved_tensor_bytes` at two batch sizes. The fixed part is real: under autocast every
    weight is cast to bf16/fp16 and the copy is saved for backward, once per step, so dividing one measurement by
    its batch would overstate the per-image cost at small batches."""
    small, large = batches
    totals = []
    for batch in (small, large):
        x = _inputs(batch, img_size, device, channels_last)
        with _autocast(device, precision):
            totals.append(saved_tensor_bytes(model, x, lambda out: out.float().sum()).total_bytes)
        del x
    per_image = (totals[1] - totals[0]) / (large - small)
    return per_image, max(0, int(round(totals[0] - small * per_image)))


def resident_training_bytes(model: nn.Module) -> int:
    """Memory a training step holds whatever the batch: parameters, their gradients and SGD's momentum buffer."""
    return 3 * sum(p.numel() * p.element_size() for p in model.parameters())


def estimate_max_batch(saved_per_image: float, resident_bytes: int, budget_bytes: float) -> int:
    """The training batch whose saved activations fill ``budget_bytes`` left after ``resident_bytes``: an upper
    estimate (it ignores the allocator's workspace and fragmentation and backward's transient buffers)."""
    if saved_per_image <= 0:
        raise ValueError(f"saved_per_image must be positive, not {saved_per_image!r}")
    return max(0, int((budget_bytes - resident_bytes) // saved_per_image))


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


@dataclass
class ArchResult:
    """The measurements of one architecture (None where the mode or device did not allow it)."""

    arch: str
    parameters: int
    batch_note: str
    train: Timing | None = None
    infer: Timing | None = None
    max_train_batch: int | None = None  # measured (CUDA search)
    max_infer_batch: int | None = None
    saved_bytes_per_image: float | None = None
    saved_bytes_fixed: int | None = None  # saved once per step whatever the batch (autocast's weight copies)
    max_train_batch_estimate: int | None = None
    peak_memory_bytes: int | None = None  # CUDA allocator peak over the training timing
    flops_per_image: int | None = None

    def achieved_flops(self, mode: str) -> float | None:
        """FLOP/s achieved in ``mode``: the forward's FLOPs per image x img/s, x3 in training (backward ~ 2x)."""
        timing = self.train if mode == "train" else self.infer
        if timing is None or self.flops_per_image is None:
            return None
        return self.flops_per_image * (3 if mode == "train" else 1) * timing.images_per_second

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["train"] = self.train.to_dict() if self.train else None
        record["infer"] = self.infer.to_dict() if self.infer else None
        record["achieved_train_flops"] = self.achieved_flops("train")
        record["achieved_infer_flops"] = self.achieved_flops("infer")
        return record


@dataclass
class ProbeReport:
    """A probe run: its settings, the device and versions, the matmul peak and one result per architecture."""

    settings: ProbeSettings
    device: str
    environment: dict[str, Any]
    budget_bytes: float
    matmul_peak_flops: float | None
    results: list[ArchResult] = field(default_factory=list)
    seconds: float = 0.0

    def table(self) -> pd.DataFrame:
        """The paper's table layout, ours beside the paper's V100 numbers (224 px, mixed precision)."""
        measured = any(r.max_train_batch is not None for r in self.results)
        batch_col = (
            TABLE_COLUMNS[2] if measured else f"{TABLE_COLUMNS[2]} (estimated, {self.budget_bytes / 2**30:g} GiB)"
        )
        rows = []
        for r in self.results:
            paper = PAPER_V100.get(split_arch(r.arch)[0])
            rows.append({
                "Model": r.arch,
                TABLE_COLUMNS[0]: round(r.train.images_per_second, 1) if r.train else None,
                TABLE_COLUMNS[1]: round(r.infer.images_per_second, 1) if r.infer else None,
                batch_col: r.max_train_batch if measured else r.max_train_batch_estimate,
                f"paper V100: {TABLE_COLUMNS[0]}": paper.train if paper else None,
                f"paper V100: {TABLE_COLUMNS[1]}": paper.infer if paper else None,
                f"paper V100: {TABLE_COLUMNS[2]}": paper.max_batch if paper else None,
            })  # fmt: skip
        return pd.DataFrame(rows).set_index("Model")

    def details(self) -> pd.DataFrame:
        """Everything measured per architecture: batch, ms/step and spread, memory, FLOPs and their share of the
        matmul peak."""
        rows = []
        for r in self.results:
            row: dict[str, Any] = {"Model": r.arch, "params (M)": round(r.parameters / 1e6, 2), "batch": r.batch_note}
            for mode in ("train", "infer"):
                t = getattr(r, mode)
                if t is not None:
                    row[f"{mode} batch"] = t.batch_size
                    row[f"{mode} ms/step"] = round(t.ms_per_step, 2)
                    row[f"{mode} spread"] = f"{100 * t.spread:.1f}%"
                    achieved = r.achieved_flops(mode)
                    if achieved is not None:
                        row[f"{mode} GFLOP/s"] = round(achieved / 1e9, 1)
                        if self.matmul_peak_flops:
                            row[f"{mode} % of matmul peak"] = round(100 * achieved / self.matmul_peak_flops, 1)
            if r.flops_per_image is not None:
                row["GFLOPs/image"] = round(r.flops_per_image / 1e9, 2)
            if r.saved_bytes_per_image is not None:
                row["saved MiB/image"] = round(r.saved_bytes_per_image / 2**20, 2)
            if r.peak_memory_bytes is not None:
                row["peak MiB"] = round(r.peak_memory_bytes / 2**20)
            rows.append(row)
        return pd.DataFrame(rows).set_index("Model")

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": asdict(self.settings), "device": self.device, "environment": self.environment,
            "budget_bytes": self.budget_bytes, "matmul_peak_flops": self.matmul_peak_flops, "seconds": self.seconds,
            "paper_v100": {k: asdict(v) for k, v in PAPER_V100.items()},
            "results": [r.to_dict() for r in self.results],
        }  # fmt: skip

    def to_json(self, path: Path | str) -> Path:
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, default=str) + "\n")
        return path

    def to_csv(self, path: Path | str) -> Path:
        """The table and the details side by side, one row per architecture, with the device and settings."""
        path = Path(path)
        frame = self.table().join(self.details())
        frame.insert(0, "img_size", self.settings.img_size)
        frame.insert(1, "precision", self.settings.precision)
        frame.insert(2, "channels_last", self.settings.channels_last)
        frame.insert(3, "device", self.device)
        atomic_write_text(path, frame.to_csv())
        return path


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return environment()["device"] if device.type == "cpu" else device.type


def _budget_bytes(settings: ProbeSettings, device: torch.device) -> float:
    if settings.budget_gib is not None:
        return settings.budget_gib * 2**30
    if device.type == "cuda":
        return float(torch.cuda.get_device_properties(device).total_memory)
    return V100_GIB * 2**30


def probe_model(model: nn.Module, arch: str, settings: ProbeSettings, device: torch.device,
                search: bool | None = None, budget_bytes: float | None = None) -> ArchResult:  # fmt: skip
    """Measure ``model`` (already built) as ``settings`` say. ``search`` decides whether ``batch_size='max'``
    searches the device's memory (default: on CUDA only; elsewhere a fixed batch of :data:`CPU_BATCH`)."""
    model = model.to(device)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    search = device.type == "cuda" if search is None else search
    result = ArchResult(arch, count_parameters(model), "")
    if budget_bytes is None:
        budget_bytes = _budget_bytes(settings, device)
    batches: dict[str, int] = {}
    for mode in settings.modes:
        if settings.batch_size != "max":
            batches[mode] = int(settings.batch_size)
            result.batch_note = f"fixed {settings.batch_size}"
        elif search:
            largest = search_max_batch(model, mode, settings.img_size, device, settings.precision,
                                       settings.channels_last)  # fmt: skip
            setattr(result, f"max_{mode}_batch", largest)
            batches[mode] = paper_batch(largest)
            result.batch_note = "90% of the maximal batch"
        else:
            batches[mode] = CPU_BATCH
            result.batch_note = f"fixed {CPU_BATCH} ('max' needs a CUDA device)"
    step_model = torch.compile(model) if settings.compile else model
    if "infer" in batches:
        step = inference_step(step_model, batches["infer"], settings.img_size, device, settings.precision,
                              settings.channels_last)  # fmt: skip
        result.infer = time_steps(step, batches["infer"], device, settings.warmup, settings.repeats, settings.steps)
    if "train" in batches:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        step = training_step(step_model, batches["train"], settings.img_size, device, settings.precision,
                             settings.channels_last)  # fmt: skip
        result.train = time_steps(step, batches["train"], device, settings.warmup, settings.repeats, settings.steps)
        if device.type == "cuda":
            result.peak_memory_bytes = int(torch.cuda.max_memory_allocated(device))
        del step
    result.saved_bytes_per_image, result.saved_bytes_fixed = saved_bytes_slope(model, settings.img_size, device,
                                                                               settings.precision,
                                                                               settings.channels_last)  # fmt: skip
    result.max_train_batch_estimate = estimate_max_batch(
        result.saved_bytes_per_image, resident_training_bytes(model) + result.saved_bytes_fixed, budget_bytes
    )
    if settings.flops:
        result.flops_per_image = flops_per_image(model, settings.img_size, device)
    model.zero_grad(set_to_none=True)
    return result


def run_probe(settings: ProbeSettings, device: torch.device | None = None, progress: bool = True,
              build: Callable[[str], nn.Module] | None = None) -> ProbeReport:  # fmt: skip
    """Probe every architecture of ``settings`` on ``device`` (default: the first GPU, else the CPU), with random
    weights (speed does not depend on them). ``build(arch)`` makes the model (default: :func:`load_model` with a
    1000-class head, as the paper's ImageNet models)."""
    device = device or default_device()
    build = build or (lambda arch: load_model(arch, None, num_classes=NUM_CLASSES))
    start = time.perf_counter()
    budget = _budget_bytes(settings, device)
    peak = matmul_peak(device, settings.precision) if settings.flops else None
    report = ProbeReport(settings, _device_name(device), environment(), budget, peak)
    for i, arch in enumerate(settings.archs, 1):
        if progress:
            print(f"[{i}/{len(settings.archs)}] {arch} at {settings.img_size} px, {settings.precision}"
                  f"{', channels_last' if settings.channels_last else ''}, mode {settings.mode} ...", flush=True)  # fmt: skip
        model = build(arch)
        result = probe_model(model, arch, settings, device, budget_bytes=budget)
        report.results.append(result)
        if progress:
            parts = [f"{m} {getattr(result, m).images_per_second:.1f} img/s (batch {getattr(result, m).batch_size})"
                     for m in ("train", "infer") if getattr(result, m) is not None]  # fmt: skip
            print(f"    {', '.join(parts)}", flush=True)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    report.seconds = time.perf_counter() - start
    return report


def plan(device: torch.device, preset: str = "cpu", archs: Sequence[str] | None = None, img_size: int | None = None,
         precision: str | None = None, batch_size: int | str | None = None, **overrides: Any) -> ProbeSettings:  # fmt: skip
    """The probe's settings for ``device`` and a notebook preset: on a GPU the paper's protocol (TResNet-M/L/XL and
    ResNet50 at 224, fp16, 90% of the maximal batch); on a CPU a reduced set with the same columns (TResNet-M and
    ResNet50, bf16 + channels_last, a fixed batch); ``smoke`` shrinks either to seconds. Given values win."""
    gpu = device.type == "cuda"
    precision = None if precision == "auto" else precision  # RunConfig's 'auto': the plan's choice
    base: dict[str, Any] = (
        {"archs": ("tresnet_m", "tresnet_l", "tresnet_xl", "resnet50"), "img_size": 224, "precision": "fp16",
         "channels_last": True, "batch_size": "max", "repeats": 5}
        if gpu else
        {"archs": ("tresnet_m", "resnet50"), "img_size": 224, "precision": "bf16", "channels_last": True,
         "batch_size": CPU_BATCH, "warmup": 1, "repeats": 3}
    )  # fmt: skip
    if preset == "smoke":
        base.update(img_size=64, batch_size=4, warmup=1, repeats=2)
    elif preset not in ("cpu", "paper"):
        raise ValueError(f"Unknown preset {preset!r}; choose one of ('smoke', 'cpu', 'paper')")
    given = {"archs": tuple(archs) if archs else None, "img_size": img_size, "precision": precision,
             "batch_size": batch_size, **overrides}  # fmt: skip
    base.update({k: v for k, v in given.items() if v is not None})
    return ProbeSettings(**base)


def parse_archs(text: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """'tresnet_m, resnet50' or a list -> a tuple of names; None or '' -> None (the plan's default)."""
    if text is None:
        return None
    names = [a.strip() for a in (text.split(",") if isinstance(text, str) else text) if a.strip()]
    return tuple(names) or None


def metrics_record(report: ProbeReport, notebook: str = "01_throughput_probe", preset: str = "cpu") -> dict[str, Any]:
    """metrics.json of a probe run: the first architecture's training img/s beside the paper's V100 number."""
    first = report.results[0]
    arch = split_arch(first.arch)[0]
    timing = first.train or first.infer
    name = "train_images_per_second" if first.train else "infer_images_per_second"
    paper = PAPER_V100.get(arch)
    target = (paper.train if first.train else paper.infer) if paper else None
    return {
        "notebook": notebook, "preset": preset, "dataset": "none (random tensors)", "arch": first.arch,
        "weights": "none", "weights_source": "random", "pretrained": False, "img_size": report.settings.img_size,
        "epochs": None, "metric_name": name, "metric_value": float(timing.images_per_second),
        "paper_target": target, "paper_device": "V100, mixed precision, 90% of the maximal batch, 224 px",
        "train_seconds": round(report.seconds, 2), "device": report.device,
        "versions": report.environment["versions"], "probe": report.to_dict(),
    }  # fmt: skip


def batch_arg(text: str) -> int | str:
    """``--batch-size`` value: a positive integer or 'max'."""
    if text == "max":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"--batch-size must be a positive integer or 'max', not {text!r}")
    return value


def probe_command(args: Any) -> int:
    """``python -m tresnet_nb probe``: measure, print the table beside the paper's and the details, write JSON/CSV
    and the bar chart when asked."""
    import sys

    try:
        device = torch.device(args.device) if args.device else default_device()
        settings = plan(
            device, "cpu", archs=args.arch, img_size=args.img_size, precision=args.precision,
            batch_size=batch_arg(args.batch_size) if args.batch_size is not None else None, mode=args.mode,
            channels_last=args.channels_last, compile=args.compile or None, warmup=args.warmup, repeats=args.repeats,
            steps=args.steps, budget_gib=args.budget_gib, flops=False if args.no_flops else None,
        )  # fmt: skip
    except (ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"probe on {_device_name(device)}: {settings}", flush=True)
    report = run_probe(settings, device)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(report.table().to_string())
        print(report.details().to_string())
    if report.matmul_peak_flops:
        print(f"matmul peak ({settings.precision}): {report.matmul_peak_flops / 1e9:.1f} GFLOP/s")
    for option, write in ((args.json, report.to_json), (args.csv, report.to_csv)):
        if option:
            print(f"wrote {write(option)}")
    if args.plot:
        from .views import plot_throughput

        plot_throughput(report, args.plot)
        print(f"wrote {args.plot}")
    return 0


def high_res_settings(settings: ProbeSettings, device: torch.device, size: int | None = None) -> ProbeSettings | None:
    """The same probe at a higher resolution: ``size`` if given (0 turns it off), else 448 px on a GPU (the paper's
    high-resolution models) and nothing on a CPU, where 448 px would take minutes per architecture."""
    if size == 0 or (size is None and device.type != "cuda"):
        return None
    return replace(settings, img_size=check_img_size(size or 448))


def memory_comparison(arch: str = "tresnet_m", img_size: int = 224, precision: str = "fp32",
                      channels_last: bool = False, budget_gib: float = V100_GIB, baseline: str | None = "resnet50",
                      device: torch.device | None = None) -> pd.DataFrame:  # fmt: skip
    """Activation memory of a training step of ``arch`` with plain BatchNorm, with InPlace-ABN (the pure-PyTorch
    backend, :mod:`tresnet_nb.iabn`) and with gradient checkpointing, and of ``baseline``: MiB saved for backward per
    image, the ratio to plain BatchNorm, and the maximal training batch those bytes allow in ``budget_gib`` beside
    the paper's V100 batch (the paper's TResNet trained with InPlace-ABN)."""
    import copy

    from .iabn import convert_to_iabn
    from .memory import grad_checkpointing

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
        ]  # fmt: skip
    ).set_index("variant")


def relative_table(report: ProbeReport, baseline: str = "resnet50") -> pd.DataFrame | None:
    """Each architecture's speed relative to ``baseline`` measured in the same run, beside the same ratio in the
    paper's V100 table: the comparison that carries across devices better than raw img/s (None without the
    baseline). Ratios still depend on the device: a CPU favours fewer FLOPs, a GPU TResNet's GPU-friendly design."""
    base = next((r for r in report.results if split_arch(r.arch)[0] == baseline), None)
    if base is None:
        return None
    rows = []
    for r in report.results:
        name = split_arch(r.arch)[0]
        paper, paper_base = PAPER_V100.get(name), PAPER_V100.get(baseline)
        row: dict[str, Any] = {"Model": r.arch}
        for mode in ("train", "infer"):
            ours, theirs = getattr(r, mode), getattr(base, mode)
            if ours is not None and theirs is not None:
                row[f"{mode} vs {baseline} (ours)"] = round(ours.images_per_second / theirs.images_per_second, 2)
                if paper and paper_base:
                    row[f"{mode} vs {baseline} (paper)"] = round(getattr(paper, mode) / getattr(paper_base, mode), 2)
        rows.append(row)
    return pd.DataFrame(rows).set_index("Model")


def verdict(report: ProbeReport) -> str:
    """One honest sentence on how this run compares with the paper's table."""
    s = report.settings
    protocol = s.img_size == 224 and s.precision in ("fp16", "bf16") and any(r.max_train_batch for r in report.results)
    where = f"{report.device}, {s.img_size} px, {s.precision}, batch: {report.results[0].batch_note}"
    if protocol and report.device.startswith("cuda"):
        return (
            f"Measured with the paper's protocol on {where}: comparable to the paper's V100 table up to the GPU model."
        )
    return (f"Measured on {where}: not the paper's protocol (V100, mixed precision, 224 px, 90% of the maximal batch), "
            "so the raw img/s are not comparable with the paper's; the ratios between architectures are.")  # fmt: skip


def unused_parameters(**params: Any) -> str:
    """The notebook parameters a probe has no use for (weights, data, epochs) that were set, said aloud: every
    notebook takes the same parameters so that one ``run`` command can pass them to all, and the probe ignores
    these rather than pretend to use them."""
    given = {k: v for k, v in params.items() if v is not None}
    if not given:
        return "every parameter set is used"
    return f"ignored by the probe (speed and memory do not depend on them; random weights, random tensors): {given}"
