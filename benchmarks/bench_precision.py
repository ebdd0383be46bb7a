"""Training and inference throughput of fp32 (NCHW), fp32 + channels_last and bf16 autocast + channels_last on
this machine's CPU, through the library's own Learner, measured side by side in one run.

Training is timed over the training phase of an epoch (TrainTimer: batches, forward, backward, optimizer step;
no validation), inference over ``get_preds`` on the validation split. Rounds alternate the order of the three
settings; round 0 warms up (allocator, oneDNN kernel selection) and is not counted.
Usage: python benchmarks/bench_precision.py [--arch tresnet_m] [--img-size 224] [--batch-size 16] [--items 64]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from fastai.callback.progress import ProgressCallback
from ratios import ratio_line  # benchmarks/ratios.py
from timing import TrainTimer  # benchmarks/timing.py

import tresnet_nb as tnb

SETTINGS = (("fp32", False), ("fp32", True), ("bf16", True))  # (precision, channels_last)


def learner(precision: str, channels_last: bool, args: argparse.Namespace):
    cfg = tnb.RunConfig.from_params(
        "bench",
        preset="smoke",
        arch=args.arch,
        precision=precision,
        img_size=args.img_size,
        seed=0,
        batch_size=args.batch_size,
        max_items=args.items,
        output_dir="/tmp/tresnet-nb-bench",
    )
    tnb.seed_everything(cfg.seed)
    model = tnb.load_model(cfg.arch, "none", num_classes=10)
    splits = tnb.load_splits(cfg.dataset, None, cfg.max_items)
    dls = tnb.array_dls(splits, cfg.img_size, cfg.batch_size, tnb.data_config(model, cfg.img_size), tnb.device())
    learn = tnb.build_learner(cfg, dls, model)
    learn.remove_cb(ProgressCallback)
    if not channels_last:
        learn.remove_cbs([cb for cb in learn.cbs if isinstance(cb, tnb.ChannelsLast)])
    timer = TrainTimer()
    learn.add_cb(timer)
    return learn, timer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="tresnet_m")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(
        f"{args.arch} @ {args.img_size}px, batch {args.batch_size}, {args.items} train items, "
        f"{torch.get_num_threads()} threads, device {tnb.device()}"
    )
    runs = {s: learner(*s, args) for s in SETTINGS}
    train = {s: [] for s in SETTINGS}
    infer = {s: [] for s in SETTINGS}
    for round_ in range(args.repeats + 1):
        for setting in SETTINGS if round_ % 2 == 0 else SETTINGS[::-1]:
            learn, timer = runs[setting]
            with learn.no_logging():
                learn.fit(1, lr=1e-4)
            with learn.removed_cbs(timer):  # the timer cancels validation, which get_preds is made of
                start = time.perf_counter()
                learn.get_preds(dl=learn.dls.valid)
                infer_seconds = time.perf_counter() - start
            if round_:
                train[setting].append(len(learn.dls.train) * learn.dls.train.bs / timer.seconds[-1])
                infer[setting].append(len(learn.dls.valid.dataset) / infer_seconds)
    med = {s: (statistics.median(train[s]), statistics.median(infer[s])) for s in SETTINGS}
    for (precision, cl), (tr, inf) in med.items():
        name = f"{precision} {'channels_last' if cl else 'NCHW'}"
        print(
            f"{name:19s} train {tr:7.1f} img/s (range {min(train[precision, cl]):.1f}-{max(train[precision, cl]):.1f})"
            f"  infer {inf:7.1f} img/s"
        )
    bf16, fp32_cl, fp32 = med["bf16", True], med["fp32", True], med["fp32", False]
    for name, base in (("fp32 NCHW", fp32), ("fp32+channels_last", fp32_cl)):
        goal = "goal >= 1.4" if name == "fp32 NCHW" else ""
        print(ratio_line(f"bf16+channels_last / {name}: train", bf16[0], base[0], "img/s", goal))
        print(ratio_line(f"bf16+channels_last / {name}: infer", bf16[1], base[1], "img/s"))


if __name__ == "__main__":
    main()
