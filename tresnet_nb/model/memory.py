"""Activation memory of a training step: bytes autograd saves for backward, gradient checkpointing, and the
search for the largest batch that fits (:func:`max_batch_size`; the steps it searches with are in
:mod:`tresnet_nb.model.steps`).

The count uses ``torch.autograd.graph.saved_tensors_hooks``: every tensor an autograd node saves for its backward
passes through the pack hook, so the hook sees exactly what the graph keeps alive between forward and backward,
on any device and without allocator statistics (which CPUs do not have).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class SavedBytes:
    """What one training forward (and loss) saved for backward.

    ``total_bytes`` counts activation storages once each; model parameters and buffers that autograd saves (e.g. a
    Linear's weight) are reported apart in ``parameter_bytes`` because they are resident whether or not a graph is.
    """

    total_bytes: int
    per_image_bytes: float
    parameter_bytes: int
    n_tensors: int  # pack-hook calls: tensors saved, a tensor saved by two nodes counted twice
    n_storages: int  # distinct activation storages behind those tensors
    batch_size: int

    @property
    def total_mib(self) -> float:
        return self.total_bytes / 2**20

    @property
    def per_image_mib(self) -> float:
        return self.per_image_bytes / 2**20


def _storage_key(t: torch.Tensor) -> tuple[str, int]:
    return (str(t.device), t.untyped_storage().data_ptr())


@contextlib.contextmanager
def buffers_restored(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block ``model`` may update its buffers (BatchNorm running statistics); they are put back after."""
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    try:
        yield model
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])


def saved_tensor_bytes(
    model: nn.Module,
    x: torch.Tensor | Sequence[torch.Tensor],
    loss_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> SavedBytes:
    """Bytes saved for backward by one training-mode forward of ``model`` on ``x`` (a tensor or a tuple of inputs)
    and ``loss_fn`` (output -> scalar, e.g. ``lambda out: F.cross_entropy(out, y)``; default: no loss).

    The model is left as found: its train/eval mode, grads and buffers (BatchNorm running statistics) are restored,
    and the graph is dropped without a backward pass.
    """
    inputs = (x,) if isinstance(x, torch.Tensor) else tuple(x)
    own = {_storage_key(t) for t in (*model.parameters(), *model.buffers())}
    # Keyed by storage, not by tensor: ReLU saves its output and the next Linear saves the same tensor as its input,
    # and a slice or transpose saved by one node shares the storage of its base. We take the storage's nbytes, not
    # the viewed bytes: any saved view keeps its whole storage allocated, so the storage is what the graph costs,
    # while summing viewed bytes would undercount a slice of a large buffer and double-count overlapping views.
    # The dict also holds each tensor until counting ends, so a freed storage's address cannot be reused meanwhile.
    storages: dict[tuple[str, int], torch.Tensor] = {}
    n_tensors = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal n_tensors
        n_tensors += 1
        storages.setdefault(_storage_key(t), t)
        return t

    was_training = model.training
    try:  # the buffers are restored: undo the running-statistics update of this probe's forward
        with buffers_restored(model), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model.train()
            out = model(*inputs)
            if loss_fn is not None:
                out = loss_fn(out)
            del out  # frees the graph (and its saved tensors) without a backward: grads stay as they were
    finally:
        model.train(was_training)
    total = sum(t.untyped_storage().nbytes() for k, t in storages.items() if k not in own)
    params = sum(t.untyped_storage().nbytes() for k, t in storages.items() if k in own)
    batch = int(inputs[0].shape[0]) if inputs and inputs[0].ndim else 1
    n_storages = sum(1 for k in storages if k not in own)
    return SavedBytes(total, total / batch, params, n_tensors, n_storages, batch)


@contextlib.contextmanager
def grad_checkpointing(model: nn.Module, enable: bool = True) -> Iterator[nn.Module]:
    """Within the block, ``model`` recomputes activations in backward instead of saving them (``enable``), through
    timm's ``set_grad_checkpointing``; the previous setting is restored on exit.

    timm's TResNet checkpoints each residual block of layer1-4 (``checkpoint_seq(..., flatten=True)``); the stem and
    the head run normally. Caveat: the recomputation repeats BatchNorm's forward in train mode, so the running
    statistics are updated twice per step (pytorch/pytorch#96136); losses and gradients are unchanged.
    """
    setter = getattr(model, "set_grad_checkpointing", None)
    if setter is None:
        raise TypeError(
            f"{type(model).__name__} has no set_grad_checkpointing; pass a timm model (e.g. tresnet_nb.load_model(...))"
            " or wrap its stages in torch.utils.checkpoint.checkpoint(..., use_reentrant=False)"
        )
    previous = bool(getattr(model, "grad_checkpointing", False))
    setter(enable)
    try:
        yield model
    finally:
        setter(previous)


# The searches' default cap: 2**16 images. 4096 was reached by inference at 224 px on an 80-141 GB GPU (H100,
# H200), which then reported the cap as the maximum; a search that still reaches this one says so (`capped`).
SEARCH_LIMIT = 2**16
# Allocation failures that CUDA libraries report as their own status, not as torch.OutOfMemoryError: cuBLAS when
# creating a handle or its workspace, cuDNN for its workspace. They mean "no memory left" as much as an OOM does
# and leave the context usable; any other CUDA error (an illegal memory access) does not, and propagates.
ALLOCATION_FAILURES = re.compile(r"\b(CUBLAS|CUDNN)_STATUS_ALLOC_FAILED\b|\bCUDNN_STATUS_\w*NOT_ENOUGH_WORKSPACE\b")


@dataclass(frozen=True)
class BatchSearch:
    """The largest batch that fitted, the smallest that did not (None if ``limit`` fitted: then the search was
    capped and the true maximum is at least ``largest``), and every try."""

    largest: int
    smallest_failing: int | None
    tried: tuple[tuple[int, bool], ...]

    @property
    def capped(self) -> bool:
        """Whether the search stopped at its limit, which fitted: ``largest`` is a lower bound, not the maximum."""
        return self.smallest_failing is None

    @property
    def shown(self) -> str:
        """``largest`` as a table shows it: '>= N' when the search was capped, else 'N'."""
        return f">= {self.largest}" if self.capped else str(self.largest)


def _is_oom(err: BaseException) -> bool:
    """Whether ``err`` means the batch did not fit: CUDA's out-of-memory or a library's allocation failure."""
    text = str(err)
    return (
        isinstance(err, torch.OutOfMemoryError)
        or "out of memory" in text.lower()
        or ALLOCATION_FAILURES.search(text) is not None
    )


def max_batch_size(fits: Callable[[int], None], start: int = 2, limit: int = SEARCH_LIMIT) -> BatchSearch:
    """The largest batch size for which ``fits(batch)`` returns without running out of memory: doubling from
    ``start`` until it fails or reaches ``limit`` (then the result is ``capped``), then bisection. Out-of-memory
    errors and cuBLAS/cuDNN allocation failures are caught (and the CUDA cache emptied); any other error propagates
    at once, since errors such as an illegal memory access leave the CUDA context unusable and retrying would only
    hide them."""
    if not 1 <= start <= limit:
        raise ValueError(f"Need 1 <= start <= limit, not start={start!r}, limit={limit!r}")
    tried: list[tuple[int, bool]] = []

    def attempt(batch: int) -> bool:
        try:
            fits(batch)
            ok = True
        except (torch.OutOfMemoryError, RuntimeError) as err:
            if not _is_oom(err):
                raise
            ok = False
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        tried.append((batch, ok))
        return ok

    good, bad = 0, None
    batch = start
    while True:
        if attempt(batch):
            good = batch
            if batch >= limit:
                break
            batch = min(batch * 2, limit)
        else:
            bad = batch
            break
    if good == 0 and bad is not None:  # even start failed: search below it
        low, high = 0, bad
    else:
        low, high = good, bad
    while high is not None and high - low > 1:
        mid = (low + high) // 2
        if attempt(mid):
            low = mid
        else:
            high = mid
    if low == 0:
        raise RuntimeError("Not even a batch of 1 fits in memory; use a smaller image size or model")
    return BatchSearch(low, high, tuple(tried))
