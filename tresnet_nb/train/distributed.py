"""Data-parallel training (DDP) under ``torchrun`` or ``accelerate launch``, with plain PyTorch and a fastai Callback.

fastai's own ``fastai.distributed`` needs ``accelerate`` (it does not import without it), converts every BatchNorm to
SyncBatchNorm (which torch implements for CUDA only) and broadcasts indices through CUDA tensors, so it cannot run on
a CPU. This module does the same job with ``torch.nn.parallel.DistributedDataParallel`` directly:

- **Batch size is per process.** Each of the ``WORLD_SIZE`` processes draws ``BATCH_SIZE`` items per step, so one
  optimizer step sees ``BATCH_SIZE * WORLD_SIZE`` items (the global batch) and an epoch has ``WORLD_SIZE`` times fewer
  steps. The learning rate is not scaled: set ``LR`` yourself when the global batch changes (Goyal et al. 2017).
- **Training data are sharded by stride.** Every epoch, rank 0's order of the items is broadcast, padded by repeating
  its first items to a multiple of ``WORLD_SIZE`` (as ``torch.utils.data.DistributedSampler`` does), and rank ``r``
  takes items ``r, r + W, r + 2W, ...``. Step ``k`` therefore trains on items ``k*B*W .. (k+1)*B*W - 1`` of that
  order: the batch a single process with batch ``B*W`` would draw.
- **Gradients are averaged** by DDP; the model is wrapped only while a training phase runs, so checkpoints, EMA,
  validation and export see the plain model and plain ``state_dict`` keys.
- **BatchNorm statistics are per process** (each rank normalises with its own shard's batch statistics, as DDP does);
  DDP makes rank 0's running statistics authoritative, and they are broadcast to every rank after each training
  phase. SyncBatchNorm (``sync_bn=True``) computes them over the global batch, on CUDA only.
- **Validation runs on the full set in every process**, with fastai's automatic cross-process gathering switched off:
  weights and buffers are identical on every rank, so the metrics are identical and exact (no padded duplicates),
  and ``predict`` returns the whole set in order on every rank. It costs validation time that does not shrink with
  more processes; validation sets here are small next to training.
- **The process group waits 60 minutes** for a collective (``$TRESNET_NB_DIST_TIMEOUT_MIN``, or ``timeout_min`` of
  :func:`init_distributed`), not torch's default of 10 (NCCL) or 30 (gloo), after which a rank waiting for the
  others is aborted. Work that grows with the dataset (screening and caching image files) is shared by every rank
  (``tresnet_nb.data.highres``) so that no rank waits long at any size; the timeout only has to cover the slowest
  rank's lag, a download in rank 0 (weights) and the slowest validation. Under NCCL each process is bound to its
  GPU (``device_id``): the communicator forms at once, so a broken NCCL setup fails at start, and barriers and
  object collectives use that GPU instead of guessing one.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from fastai.callback.core import Callback
from fastai.learner import Learner
from fastai.torch_core import to_detach
from fastcore.basics import noop
from torch.nn.parallel import DistributedDataParallel

from .callbacks import EMA

LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")  # set by torchrun / accelerate launch
TIMEOUT_ENV = "TRESNET_NB_DIST_TIMEOUT_MIN"
DEFAULT_TIMEOUT_MIN = 60.0  # torch's defaults (10 min NCCL, 30 gloo) are short for a weights download in rank 0


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: rank, world size, local rank, backend (None alone) and device."""

    rank: int
    world_size: int
    local_rank: int
    backend: str | None
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str) -> int:
    text = os.environ[name]
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"Environment variable {name}={text!r} is not an integer; launch with torchrun") from None


def dist_timeout(timeout_min: float | None = None) -> timedelta:
    """How long a collective waits for the other ranks: ``timeout_min`` minutes, else $TRESNET_NB_DIST_TIMEOUT_MIN,
    else 60."""
    source = f"timeout_min={timeout_min!r}"
    if timeout_min is None:
        text = os.environ.get(TIMEOUT_ENV)
        if text is None:
            return timedelta(minutes=DEFAULT_TIMEOUT_MIN)
        source = f"{TIMEOUT_ENV}={text!r}"
        try:
            timeout_min = float(text)
        except ValueError:
            timeout_min = math.nan
    if not (math.isfinite(timeout_min) and timeout_min > 0):
        raise ValueError(
            f"{source} is not a positive number of minutes for the process group's timeout; set e.g. "
            f"{TIMEOUT_ENV}=90, or leave it unset for {DEFAULT_TIMEOUT_MIN:g}"
        )
    return timedelta(minutes=timeout_min)


def process_group_kwargs(backend: str, local_rank: int, timeout: timedelta) -> dict[str, Any]:
    """The arguments of ``init_process_group`` for ``backend`` ('gloo' or 'nccl') in the process of ``local_rank``
    with collectives waiting ``timeout``: NCCL is bound to that process's GPU (``device_id``, torch >= 2.3)."""
    kwargs: dict[str, Any] = {"backend": backend, "init_method": "env://", "timeout": timeout}
    if backend == "nccl":
        kwargs["device_id"] = torch.device("cuda", local_rank)
    return kwargs


def init_distributed(timeout_min: float | None = None) -> DistInfo:
    """Join the process group that ``torchrun`` / ``accelerate launch`` describe in the environment (gloo on CPU,
    nccl on CUDA with the device of LOCAL_RANK), collectives waiting ``timeout_min`` minutes (see
    :func:`dist_timeout`); alone (no such variables, or WORLD_SIZE 1) it does nothing."""
    timeout = dist_timeout(timeout_min)  # checked alone too, so a bad setting shows before a multi-GPU launch
    cuda = torch.cuda.is_available()
    if "WORLD_SIZE" not in os.environ or _env_int("WORLD_SIZE") == 1:
        return DistInfo(0, 1, 0, None, torch.device("cuda" if cuda else "cpu"))
    missing = [name for name in LAUNCH_ENV if name not in os.environ]
    if missing:
        raise ValueError(
            f"WORLD_SIZE is set but {missing} are not; launch with `torchrun --nproc_per_node=N -m "
            f"tresnet_nb train ...` (or accelerate launch), which sets all of {list(LAUNCH_ENV)}"
        )
    rank, world, local = _env_int("RANK"), _env_int("WORLD_SIZE"), _env_int("LOCAL_RANK")
    device = torch.device("cpu")
    if cuda:
        if local >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK {local} but this machine has {torch.cuda.device_count()} CUDA devices; "
                "start at most that many processes per node"
            )
        torch.cuda.set_device(local)  # before the group: NCCL and the object collectives use the current device
        device = torch.device("cuda", local)
    if not dist.is_initialized():
        dist.init_process_group(**process_group_kwargs("nccl" if cuda else "gloo", local, timeout))
    return DistInfo(rank, world, local, dist.get_backend(), device)


def cleanup() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


class ShardIndices:
    """A fastai ``get_idxs`` for one rank of ``world``: the loader's full epoch order as rank 0 drew it, padded to a
    multiple of ``world`` by repeating its first items, then every ``world``-th item starting at ``rank``. While
    installed, the loader's ``n`` is this rank's share, so ``len(dl)`` counts this rank's batches."""

    def __init__(self, dl: Any, rank: int, world: int) -> None:
        self.dl, self.full, self.n, self.rank, self.world = dl, dl.get_idxs, dl.n, rank, world

    @property
    def shard_len(self) -> int:
        return -(-self.n // self.world)

    def __call__(self) -> list[int]:
        self.dl.n = self.n  # fastai's own get_idxs draws dl.n indices: the full set here, then back to the share
        try:
            idxs = list(self.full())  # every rank draws, so every rank's loader RNG advances alike (resume restores it)
        finally:
            self.dl.n = self.shard_len
        if len(idxs) != self.n:
            raise ValueError(
                f"the training loader's get_idxs gave {len(idxs)} indices for {self.n} items; sharding "
                "needs one index per item per epoch"
            )
        order = torch.tensor(idxs, dtype=torch.int64, device=_collective_device())
        dist.broadcast(order, src=0)
        idxs = order.tolist()
        padded = idxs + (idxs * self.world)[: self.shard_len * self.world - self.n]
        return padded[self.rank :: self.world]


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics), DDP's authoritative copy."""
    with torch.no_grad():
        for buf in module.buffers():
            dist.broadcast(buf, src=0)


def _local_detach(b: Any, cpu: bool = True, gather: bool = True) -> Any:
    return to_detach(b, cpu, gather=False)  # every rank validated the full set: nothing to gather


class DistributedDDP(Callback):
    """Train with DistributedDataParallel: wrap the model while training, shard the training loader by rank, keep
    BatchNorm buffers in step, and validate the full set in every process without gathering (see module notes)."""

    order = 20  # before_fit after ChannelsLast (5) has set the layout DDP buckets; before EMA (55) and Checkpoint (70)

    def __init__(self, device: torch.device) -> None:
        self.device, self.ddp, self.shard, self._saved = device, None, None, {}

    def before_fit(self) -> None:
        if hasattr(self.learn, "gather_preds"):  # get_preds: a validation-only pass, nothing to wrap
            return
        dl = self.learn.dls.train
        shard = ShardIndices(dl, dist.get_rank(), dist.get_world_size())
        if dl.drop_last and shard.shard_len < dl.bs:
            raise ValueError(
                f"{shard.n} training items over {shard.world} processes leave {shard.shard_len} per "
                f"process, fewer than BATCH_SIZE {dl.bs} (per process): no full batch to train on. "
                "Lower BATCH_SIZE, use more items or fewer processes"
            )
        ids = [self.device.index] if self.device.type == "cuda" else None
        # DDP's constructor broadcasts rank 0's parameters and buffers, so every rank starts identical; by default it
        # also gives every training forward rank 0's buffers (torch: "rank 0 is the authoritative copy")
        self.ddp = DistributedDataParallel(self.learn.model, device_ids=ids)
        self._saved = {"n": dl.n, "get_idxs": dl.__dict__.get("get_idxs")}
        self.shard = shard
        dl.get_idxs, dl.n = shard, shard.shard_len

    def before_train(self) -> None:
        if self.ddp is not None:
            self.learn.model = self.ddp

    def after_train(self) -> None:
        if self.ddp is not None:
            self.learn.model = self.ddp.module
            # an EMA's buffers follow each rank's own running statistics step by step: rank 0's too, like the model's
            emas = [cb.average for cb in self.learn.cbs if isinstance(cb, EMA) and cb.average is not None]
            for module in (self.learn.model, *emas):
                broadcast_buffers(module)

    def before_validate(self) -> None:
        self.learn.dl.to_detach = _local_detach  # fastai's Learner.to_detach defers to the loader's

    def after_validate(self) -> None:
        self.learn.dl.__dict__.pop("to_detach", None)

    def after_fit(self) -> None:
        if self.ddp is None:
            return
        self.learn.model = self.ddp.module
        dl = self.learn.dls.train
        dl.n = self._saved["n"]
        if self._saved["get_idxs"] is None:
            del dl.get_idxs
        else:
            dl.get_idxs = self._saved["get_idxs"]
        self.ddp, self.shard = None, None


def check_sync_bn(sync_bn: bool, device: torch.device) -> None:
    """Raise unless SyncBatchNorm, if asked for (``sync_bn``), can run on ``device``."""
    if sync_bn and device.type != "cuda":
        raise ValueError(
            f"sync_bn needs CUDA devices (torch implements SyncBatchNorm for CUDA only); this job runs "
            f"on {device.type}: leave sync_bn off"
        )


def distribute(learn: Learner, info: DistInfo, sync_bn: bool = False) -> Learner:
    """Make ``learn`` train data-parallel in the job ``info`` describes (a no-op alone); ``sync_bn`` computes
    BatchNorm statistics over the global batch (CUDA only). Other ranks than 0 stay silent."""
    check_sync_bn(sync_bn, info.device)
    if info.world_size == 1:
        return learn
    if any(isinstance(cb, DistributedDDP) for cb in learn.cbs):
        raise ValueError("This learner is already distributed; call distribute() once per learner")
    if not dist.is_initialized():
        raise ValueError(
            f"{info} describes {info.world_size} processes but no process group exists; get the "
            "DistInfo from init_distributed()"
        )
    if sync_bn:
        from timm.layers import convert_sync_batchnorm  # keeps timm's BatchNormAct2d activation, unlike torch's

        learn.model = convert_sync_batchnorm(learn.model)  # same Parameter objects: the optimizer still holds them
    if not info.is_main:
        from fastai.callback.progress import ProgressCallback

        learn.remove_cb(ProgressCallback)
        learn.logger = noop
    learn.add_cb(DistributedDDP(info.device))
    return learn
