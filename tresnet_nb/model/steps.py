"""The training and inference steps the throughput probe times and the batch searches run, and the two searches:
the probe's (:func:`search_max_batch`, one bare step) and the engine's (:func:`find_max_batch`, what a real fit holds).

One step is shared so that a number measured by the probe and a batch found before a fit come from the same code:
a fixed random batch, autocast unless fp32, cross-entropy, backward and an optimizer step (with a gradient scaler in
fp16 on CUDA). The searches themselves are :func:`tresnet_nb.model.memory.max_batch_size` (doubling, bisection,
backing off on out-of-memory and allocation failures only, and saying when the cap was reached).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .memory import SEARCH_LIMIT, BatchSearch, buffers_restored, max_batch_size

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
OPTIMIZERS = ("sgd", "adam")
NUM_CLASSES = 1000  # ImageNet-1K: the head of the paper's models


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued kernels (CUDA runs asynchronously; a CPU has nothing to wait for)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_precision(precision: str) -> torch.dtype | None:
    """The autocast dtype of ``precision`` ('fp32': None); any other name is refused with the choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; choose one of {tuple(PRECISIONS)}")
    return PRECISIONS[precision]


def precision_autocast(device: torch.device, precision: str) -> torch.autocast:
    """Autocast on ``device`` in ``precision`` ('bf16', 'fp16'), disabled for 'fp32'."""
    dtype = check_precision(precision)
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def random_images(batch: int, img_size: int, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """A ``batch`` of random RGB images of side ``img_size`` on ``device``, channels_last if asked."""
    x = torch.rand(batch, 3, img_size, img_size, device=device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def inference_step(
    model: nn.Module,
    batch: int,
    img_size: int,
    device: torch.device,
    precision: str = "fp32",
    channels_last: bool = False,
) -> Callable[[], None]:
    """One eval-mode forward of ``model`` on a fixed random ``batch`` at ``img_size`` on ``device`` under
    ``inference_mode`` (and autocast in ``precision`` unless fp32; ``channels_last`` input if asked)."""
    check_precision(precision)
    x = random_images(batch, img_size, device, channels_last)

    def step() -> None:
        model.eval()
        with torch.inference_mode(), precision_autocast(device, precision):
            model(x)

    return step


class TrainingStep:
    """One train-mode step, called with no argument: forward and cross-entropy under autocast (unless fp32),
    backward, optimizer step (through a gradient scaler in fp16 on CUDA, as mixed-precision training does) and
    ``zero_grad``. The optimizer's state (SGD's momentum, Adam's two moments) is created by the first call, so a
    warm-up step includes it; ``optimizer`` is kept for whoever needs to see that state."""

    def __init__(
        self,
        model: nn.Module,
        batch: int,
        img_size: int,
        device: torch.device,
        precision: str = "fp32",
        channels_last: bool = False,
        num_classes: int = NUM_CLASSES,
        optimizer: str = "sgd",
    ) -> None:
        check_precision(precision)
        self.model, self.device, self.precision = model, device, precision
        self.x = random_images(batch, img_size, device, channels_last)
        self.y = torch.randint(0, num_classes, (batch,), device=device)
        self.optimizer = make_optimizer(model, optimizer)
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16" and device.type == "cuda")

    def __call__(self) -> None:
        self.model.train()
        with precision_autocast(self.device, self.precision):
            loss = F.cross_entropy(self.model(self.x).float(), self.y)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)


def make_optimizer(model: nn.Module, name: str = "sgd") -> torch.optim.Optimizer:
    """The step's optimizer over ``model``'s parameters: ``name`` 'sgd' (momentum 0.9: one buffer per parameter,
    the probe's) or 'adam' (AdamW: two moment buffers per parameter, what a real fit holds)."""
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    if name == "adam":
        return torch.optim.AdamW(model.parameters(), lr=1e-4)
    raise ValueError(f"Unknown optimizer {name!r}; choose one of {OPTIMIZERS}")


def training_step(
    model: nn.Module,
    batch: int,
    img_size: int,
    device: torch.device,
    precision: str = "fp32",
    channels_last: bool = False,
    num_classes: int = NUM_CLASSES,
    optimizer: str = "sgd",
) -> TrainingStep:
    """One train-mode step of ``model`` on a fixed random ``batch`` at ``img_size`` on ``device`` in ``precision``
    (``channels_last`` input, ``num_classes`` targets, ``optimizer`` 'sgd' or 'adam'): see :class:`TrainingStep`."""
    return TrainingStep(model, batch, img_size, device, precision, channels_last, num_classes, optimizer)


def search_max_batch(
    model: nn.Module,
    mode: str,
    img_size: int,
    device: torch.device,
    precision: str = "fp32",
    channels_last: bool = False,
    start: int = 8,
    limit: int = SEARCH_LIMIT,
) -> BatchSearch:
    """The largest batch for which one bare ``mode`` ('train' or 'infer') step of ``model`` at ``img_size`` on
    ``device`` in ``precision`` runs without running out of memory, searched from ``start`` up to ``limit``
    (:func:`max_batch_size`: out-of-memory and allocation failures back off, any other error propagates; a search
    that reached ``limit`` is ``capped``, its ``largest`` a lower bound). The model's BatchNorm statistics are
    restored afterwards; training steps here change its weights, which the probe's random model does not mind."""
    if mode not in ("train", "infer"):
        raise ValueError(f"mode must be 'train' or 'infer', not {mode!r}")
    make = training_step if mode == "train" else inference_step

    def fits(batch: int) -> None:
        try:
            make(model, batch, img_size, device, precision, channels_last)()
            synchronize(device)
        finally:  # an out-of-memory error in backward leaves some gradients allocated for the next try to pay for
            model.zero_grad(set_to_none=True)

    with buffers_restored(model):
        return max_batch_size(fits, start=min(start, limit), limit=limit)


def _fit_step(
    model: nn.Module,
    img_size: int,
    device: torch.device,
    num_classes: int,
    precision: str = "fp16",
    channels_last: bool = True,
    optimizer: str = "adam",
    ema: bool = True,
    valid_factor: int = 2,
    observe: Callable[[TrainingStep, nn.Module | None], None] | None = None,
) -> Callable[[int], None]:
    """The ``fits(batch)`` of :func:`find_max_batch`: one training step with ``optimizer``'s state, then a
    validation forward at ``valid_factor`` x the batch, an EMA copy of ``model`` held throughout when ``ema``.
    ``observe(step, ema_copy)`` is called at the end while everything is still held (for tests)."""

    def fits(batch: int) -> None:
        try:
            # timm's ModelEmaV3 (the EMA callback) keeps a full copy of the model on the same device for the fit
            average = copy.deepcopy(model).requires_grad_(False) if ema else None
            step = training_step(model, batch, img_size, device, precision, channels_last, num_classes, optimizer)
            step()  # ``step`` stays referenced: the optimizer's moments stay allocated through validation, as in a fit
            # the loaders validate at twice the training batch, and the EMA callback swaps the average in for
            # validation after saving the live weights: one more copy of the state while validating
            live = copy.deepcopy(model.state_dict()) if ema else None
            inference_step(model, valid_factor * batch, img_size, device, precision, channels_last)()
            synchronize(device)
            if observe is not None:
                observe(step, average)
            del live, average, step
        finally:  # an out-of-memory error in backward leaves some gradients allocated for the next try to pay for
            model.zero_grad(set_to_none=True)

    return fits


@contextlib.contextmanager
def _parameters_restored(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block optimizer steps may change ``model``'s parameters; they are put back after. The copy lives
    on the CPU so that it takes no device memory from the search it protects."""
    saved = [p.detach().to("cpu", copy=True) for p in model.parameters()]
    try:
        yield model
    finally:
        with torch.no_grad():
            for p, value in zip(model.parameters(), saved, strict=True):
                p.copy_(value)


def find_max_batch(
    model: nn.Module,
    img_size: int,
    num_classes: int,
    precision: str = "fp16",
    device: torch.device | None = None,
    limit: int = SEARCH_LIMIT,
    channels_last: bool = True,
    optimizer: str = "adam",
    ema: bool = True,
    valid_factor: int = 2,
) -> BatchSearch:
    """The largest training batch of ``model`` (``num_classes`` outputs) at ``img_size`` in ``precision`` on a CUDA
    ``device``, up to ``limit`` (``capped`` if that fitted), counting what a real fit holds: ``optimizer``'s state ('adam': two moments per
    parameter), an EMA copy of the model when ``ema``, and a validation forward at ``valid_factor`` x the batch
    (searched with :func:`max_batch_size`; weights, BatchNorm statistics and train/eval mode are restored after).
    On a CPU there is no allocator limit to find: pick a batch, and see :func:`saved_tensor_bytes` for its memory."""
    device = device or (torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    if device.type != "cuda":
        raise ValueError(
            f"find_max_batch searches a CUDA device's memory; this run is on {device.type}. Fix: set BATCH_SIZE "
            "yourself (tresnet_nb.model.memory.saved_tensor_bytes estimates the activation memory per image)"
        )
    if valid_factor < 1:
        raise ValueError(f"valid_factor must be a positive integer (the loaders validate at 2x), not {valid_factor!r}")
    check_precision(precision)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}")
    model = model.to(device)
    was_training = model.training
    fits = _fit_step(model, img_size, device, num_classes, precision, channels_last, optimizer, ema, valid_factor)
    try:
        with _parameters_restored(model), buffers_restored(model):
            return max_batch_size(fits, limit=limit)
    finally:
        model.train(was_training)
