"""Activation memory of a training step: bytes autograd saves for backward, and gradient checkpointing.

The count uses ``torch.autograd.graph.saved_tensors_hooks``: every tensor an autograd node saves for its backward
passes through the pack hook, so the hook sees exactly what the graph keeps alive between forward and backward,
on any device and without allocator statistics (which CPUs do not have).
"""

from __future__ import annotations

import contextlib
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
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    try:
        model.train()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(*inputs)
            if loss_fn is not None:
                out = loss_fn(out)
        del out  # frees the graph (and its saved tensors) without a backward: grads stay as they were
    finally:
        model.train(was_training)
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])  # undo the running-statistics update of this probe's forward
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
