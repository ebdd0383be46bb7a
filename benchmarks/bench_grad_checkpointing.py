"""Activation memory and step time of a training step with and without timm's gradient checkpointing.

Memory is what autograd saves for backward in one forward + loss (tresnet_nb.model.memory.saved_tensor_bytes: activation
storages counted once; saved parameters listed apart, being resident anyway). It is what the graph holds between
forward and backward, not the peak: backward of a checkpointed block briefly re-materialises that block's
activations. The step (forward, loss, backward, AdamW step) is timed alternately in both modes after a warm-up
step of each; checkpointing recomputes each block's forward in backward, so it is expected to be slower.
Usage: python benchmarks/bench_grad_checkpointing.py [--arch tresnet_m] [--img-size 224] [--batch-size 8] [--steps 2]
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from ratios import ratio_line  # benchmarks/ratios.py
from timing import step_seconds  # benchmarks/timing.py

import tresnet_nb as tnb
from tresnet_nb.model.memory import SavedBytes, grad_checkpointing, saved_tensor_bytes

MIB = 2**20


def describe(saved: SavedBytes) -> str:
    return (
        f"{saved.total_bytes / MIB:8.1f} MiB ({saved.per_image_bytes / MIB:6.2f} MiB/image, {saved.n_tensors} "
        f"tensors; saved parameters {saved.parameter_bytes / MIB:.1f} MiB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="tresnet_m")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per mode, after one warm-up step each")
    parser.add_argument("--contiguous", action="store_true", help="NCHW instead of the library's channels_last")
    args = parser.parse_args()
    dev = tnb.device()
    torch.manual_seed(0)
    memory_format = torch.contiguous_format if args.contiguous else torch.channels_last
    model = tnb.load_model(args.arch, "none", num_classes=10).to(dev, memory_format=memory_format).train()
    x = torch.rand(args.batch_size, 3, args.img_size, args.img_size, device=dev).contiguous(memory_format=memory_format)
    y = torch.randint(0, 10, (args.batch_size,), device=dev)
    print(
        f"{args.arch} @ {args.img_size}px, batch {args.batch_size}, fp32, "
        f"{'contiguous' if args.contiguous else 'channels_last'}, {torch.get_num_threads()} threads, device {dev}"
    )

    def loss_fn(out: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, y)

    plain = saved_tensor_bytes(model, x, loss_fn)
    with grad_checkpointing(model):
        checkpointed = saved_tensor_bytes(model, x, loss_fn)
    print(f"saved for backward, plain:        {describe(plain)}")
    print(f"saved for backward, checkpointed: {describe(checkpointed)}")

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times: dict[bool, list[float]] = {False: [], True: []}
    for i in range(args.steps + 1):  # step 0 of each mode warms up
        for enable in (False, True) if i % 2 == 0 else (True, False):
            with grad_checkpointing(model, enable):
                times[enable].append(step_seconds(model, opt, x, y))
    for enable, name in ((False, "plain"), (True, "checkpointed")):
        t = times[enable][1:]
        print(
            f"step time, {name + ':':13s} {statistics.median(t):6.2f} s (median of {len(t)}, range "
            f"{min(t):.2f}-{max(t):.2f}; {args.batch_size / statistics.median(t):.1f} img/s)"
        )
    print(ratio_line("checkpointed / plain: saved bytes", checkpointed.total_bytes, plain.total_bytes, "B"))
    step = {enable: statistics.median(t[1:]) for enable, t in times.items()}
    print(ratio_line("checkpointed / plain: step time", step[True], step[False], "s"))


if __name__ == "__main__":
    main()
