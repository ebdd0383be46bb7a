"""InPlace-ABN against plain BatchNorm and gradient checkpointing on TResNet: bytes saved for backward, step time,
and the largest training batch a memory budget holds, next to ResNet50 (the paper's baseline).

Memory is what autograd saves for backward in one fp32 forward + loss at --batch-size
(tresnet_nb.model.memory.saved_tensor_bytes: activation storages counted once; saved parameters listed apart). The
training step (forward, loss, backward, AdamW step) is timed alternately for BN and InPlace-ABN after a warm-up
step of each; InPlace-ABN inverts the activation in backward, so some slowdown is expected.

Maximal training batch, estimated as tresnet_nb.probe does for a device it cannot fill:

    batch_max = floor((budget - resident - fixed) / per_image)

budget = --budget-gib (16: a V100, the paper's device); resident = 3 x the fp32 parameter bytes (weights, gradients
and an SGD momentum buffer: probe.resident_training_bytes); per_image and fixed = bytes saved for backward per image
and per step, from two batch sizes (--batch-size / 2 and --batch-size) under bf16 autocast, i.e. activations in two
bytes as with the paper's fp16 mixed precision (probe.saved_bytes_slope). It is an upper estimate: the CUDA context,
cuDNN workspaces, allocator fragmentation and backward's transient buffers are not counted. Paper (Ridnik et al.,
"TResNet", WACV 2021, table 1; V100, mixed precision, 224 px): TResNet-M 512, trained with InPlace-ABN; ResNet50 288.
Usage: python benchmarks/bench_iabn.py [--arch tresnet_m] [--baseline resnet50] [--img-size 224] [--batch-size 8]
       [--steps 2] [--budget-gib 16]
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch
import torch.nn.functional as F
from ratios import ratio_line  # benchmarks/ratios.py
from timing import step_seconds  # benchmarks/timing.py
from torch import nn

import tresnet_nb as tnb
from tresnet_nb.model.iabn_convert import convert_to_iabn
from tresnet_nb.model.memory import SavedBytes, grad_checkpointing, saved_tensor_bytes
from tresnet_nb.paper import PAPER_V100
from tresnet_nb.probe import (
    NUM_CLASSES,
    V100_GIB,
    estimate_max_batch,
    resident_training_bytes,
    saved_bytes_slope,
)

MIB = 2**20


def describe(saved: SavedBytes) -> str:
    return (
        f"{saved.total_bytes / MIB:8.1f} MiB ({saved.per_image_bytes / MIB:6.2f} MiB/image, {saved.n_tensors} "
        f"tensors; saved parameters {saved.parameter_bytes / MIB:.1f} MiB)"
    )


def max_batch(model: nn.Module, args: argparse.Namespace, device: torch.device) -> tuple[int, float]:
    """(estimated maximal training batch, saved bytes per image under bf16 autocast) of ``model``."""
    batches = (max(1, args.batch_size // 2), max(2, args.batch_size))
    per_image, fixed = saved_bytes_slope(model, args.img_size, device, "bf16", not args.contiguous, batches)
    resident = resident_training_bytes(model) + fixed
    return estimate_max_batch(per_image, resident, args.budget_gib * 2**30), per_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="tresnet_m")
    parser.add_argument("--baseline", default="resnet50", help="plain-BatchNorm model to compare the batch with")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per mode, after one warm-up step each")
    parser.add_argument("--budget-gib", type=float, default=V100_GIB, help="memory for the batch estimate")
    parser.add_argument("--contiguous", action="store_true", help="NCHW instead of the library's channels_last")
    args = parser.parse_args()
    dev = tnb.device()
    torch.manual_seed(0)
    memory_format = torch.contiguous_format if args.contiguous else torch.channels_last
    plain = tnb.load_model(args.arch, "none", num_classes=NUM_CLASSES).to(dev, memory_format=memory_format).train()
    iabn = convert_to_iabn(copy.deepcopy(plain), precision="bf16")  # it is measured under bf16 autocast
    info = iabn.iabn_info
    x = torch.rand(args.batch_size, 3, args.img_size, args.img_size, device=dev).contiguous(memory_format=memory_format)
    y = torch.randint(0, NUM_CLASSES, (args.batch_size,), device=dev)
    print(
        f"{args.arch} @ {args.img_size}px, batch {args.batch_size}, fp32, "
        f"{'contiguous' if args.contiguous else 'channels_last'}, {torch.get_num_threads()} threads, device {dev}; "
        f"InPlace-ABN backend {info.backend!r}: {len(info.converted)} of "
        f"{len(info.converted) + len(info.skipped)} BatchNorm+activation pairs converted"
    )

    def loss_fn(out: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, y)

    saved = {"BN": saved_tensor_bytes(plain, x, loss_fn), "InPlace-ABN": saved_tensor_bytes(iabn, x, loss_fn)}
    with grad_checkpointing(plain):
        saved["checkpointed"] = saved_tensor_bytes(plain, x, loss_fn)
    baseline = tnb.load_model(args.baseline, "none", num_classes=NUM_CLASSES).to(dev, memory_format=memory_format)
    base_saved = saved_tensor_bytes(baseline, x, loss_fn)
    for name, s in saved.items():
        print(f"saved for backward, {args.arch} {name + ':':13s} {describe(s)}")
    print(f"saved for backward, {args.baseline} {'BN:':13s} {describe(base_saved)}")

    models = {"bn": plain, "iabn": iabn}
    opts = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, m in models.items()}
    times: dict[str, list[float]] = {"bn": [], "iabn": []}
    for i in range(args.steps + 1):  # step 0 of each mode warms up
        for name in ("bn", "iabn") if i % 2 == 0 else ("iabn", "bn"):
            times[name].append(step_seconds(models[name], opts[name], x, y))
    for name in ("bn", "iabn"):
        t = times[name][1:]
        print(
            f"step time, {name + ':':5s} {statistics.median(t):6.2f} s (median of {len(t)}, range "
            f"{min(t):.2f}-{max(t):.2f}; {args.batch_size / statistics.median(t):.1f} img/s)"
        )
    print(ratio_line("iabn / bn: saved bytes", saved["InPlace-ABN"].total_bytes, saved["BN"].total_bytes, "B"))
    step = {name: statistics.median(t[1:]) for name, t in times.items()}
    print(ratio_line("iabn / bn: step time", step["iabn"], step["bn"], "s"))
    print(ratio_line("checkpointed / bn: saved bytes", saved["checkpointed"].total_bytes, saved["BN"].total_bytes, "B"))

    del opts, times
    print(
        f"max train batch in {args.budget_gib:g} GiB at {args.img_size}px, bf16 activations (upper estimate, see "
        f"the docstring's formula); paper: V100, TResNet table 1"
    )
    rows = [
        (f"{args.arch} BN", plain, None),
        (f"{args.arch} InPlace-ABN", iabn, args.arch),
        (f"{args.baseline} BN", baseline, args.baseline),
    ]
    estimates = {}
    for label, model, paper_arch in rows:
        batch, per_image = max_batch(model, args, dev)
        estimates[label] = batch
        paper = PAPER_V100.get(paper_arch or "")
        print(
            f"  {label:22s} {batch:6d}  ({per_image / MIB:.2f} MiB/image)"
            + (f"  paper {paper.max_batch}" if paper else "")
        )
    paper_arch, paper_base = PAPER_V100.get(args.arch), PAPER_V100.get(args.baseline)
    paper_note = (
        f"paper x{paper_arch.max_batch / paper_base.max_batch:.2f} ({paper_arch.max_batch} / {paper_base.max_batch})"
        if paper_arch and paper_base
        else ""
    )
    label = f"{args.arch} InPlace-ABN / {args.baseline} BN: max batch"
    ours, theirs = estimates[f"{args.arch} InPlace-ABN"], estimates[f"{args.baseline} BN"]
    print(ratio_line(label, ours, theirs, "images", paper_note))


if __name__ == "__main__":
    main()
