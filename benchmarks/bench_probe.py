"""The probe's img/s against a plain reference loop on the same model, batch and settings, in one run.

The reference is written here the way timm's benchmark.py measures: the model in eval mode, one input tensor made
once, a few untimed warm-up steps, then N steps timed end to end with the device synchronised before and after;
training steps are forward, cross-entropy, backward and an SGD step. Inference runs under ``inference_mode`` as the
probe's does (the settings are the same); timm's ``no_grad`` is timed too, for the difference the grad mode alone
makes (on CPU in bf16 at small sizes ``inference_mode`` was measured up to 1.4x faster). The probe
(tresnet_nb.probe.time_steps with the steps of tresnet_nb.model.steps, which the engine's batch search shares) and
the reference take turns, round after round, so drift of the machine's speed hits both, and each reports the median
of its rounds. Goal: the probe within 5% of the reference (ratio 0.95-1.05).
Usage: python benchmarks/bench_probe.py [--arch tresnet_m] [--img-size 224] [--batch-size 16] [--precision bf16]
       [--rounds 5] [--steps 3] [--mode both]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from ratios import ratio_line  # benchmarks/ratios.py

import tresnet_nb as tnb
from tresnet_nb import probe


class ReferenceLoop:
    """Plain steps on one input, timed end to end (timm benchmark.py's method), for one model and precision."""

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, precision: str) -> None:
        self.model, self.x, self.dtype = model, x, probe.PRECISIONS[precision]
        self.y = torch.randint(0, 1000, (x.shape[0],), device=x.device)
        self.opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.x.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)

    def seconds(self, mode: str, steps: int, no_grad: bool = False) -> float:
        """Seconds per step over ``steps`` steps, the device synchronised before and after; inference under
        ``inference_mode`` as the probe's, or ``no_grad`` as timm's benchmark.py."""
        device = self.x.device
        self.model.train(mode == "train")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            if mode == "infer":
                with torch.no_grad() if no_grad else torch.inference_mode(), self.autocast():
                    self.model(self.x)
            else:
                with self.autocast():
                    loss = F.cross_entropy(self.model(self.x).float(), self.y)
                loss.backward()
                self.opt.step()
                self.opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="tresnet_m")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--precision", choices=tuple(probe.PRECISIONS), default="bf16")
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of probe and reference")
    parser.add_argument("--steps", type=int, default=3, help="steps per round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--mode", choices=("infer", "train", "both"), default="both")
    args = parser.parse_args()

    device = tnb.device()
    torch.manual_seed(0)
    channels_last = not args.no_channels_last
    model = tnb.load_model(args.arch, None, num_classes=1000).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    x = torch.rand(args.batch_size, 3, args.img_size, args.img_size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    print(
        f"{args.arch} at {args.img_size} px, batch {args.batch_size}, {args.precision}"
        f"{', channels_last' if channels_last else ''}, {device.type}, {torch.get_num_threads()} threads; "
        f"{args.rounds} alternating rounds of {args.steps} steps"
    )
    reference = ReferenceLoop(model, x, args.precision)
    modes = ("infer", "train") if args.mode == "both" else (args.mode,)
    for mode in modes:
        make = probe.inference_step if mode == "infer" else probe.training_step
        step = make(model, args.batch_size, args.img_size, device, args.precision, channels_last)
        for _ in range(args.warmup):
            step()
        reference.seconds(mode, max(args.warmup, 1))
        ours, theirs, no_grad = [], [], []
        for _ in range(args.rounds):
            ours.append(probe.time_steps(step, args.batch_size, device, warmup=0, repeats=1, steps=args.steps).median_s)
            theirs.append(reference.seconds(mode, args.steps))
            if mode == "infer":
                no_grad.append(reference.seconds(mode, args.steps, no_grad=True))
        ref_ips = args.batch_size / statistics.median(theirs)
        print(ratio_line(f"probe / reference: {mode}", args.batch_size / statistics.median(ours), ref_ips, "img/s"))
        if no_grad:  # the grad mode alone: what inference_mode gains over no_grad here
            no_grad_ips = args.batch_size / statistics.median(no_grad)
            print(ratio_line("reference inference_mode / no_grad", ref_ips, no_grad_ips, "img/s"))


if __name__ == "__main__":
    main()
