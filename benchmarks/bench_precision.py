"""fp32 vs bf16 autocast (both channels_last) on this machine's CPU, through the library's own Learner.

Prints training and inference throughput for each precision, measured side by side in one run, and their ratio.
Usage: python benchmarks/bench_precision.py [--arch tresnet_m] [--img-size 64] [--batch-size 32] [--items 256]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import tresnet_nb as tnb


def measure(precision: str, args: argparse.Namespace) -> dict[str, float]:
    cfg = tnb.RunConfig.from_params(
        "bench", preset="smoke", arch=args.arch, precision=precision, img_size=args.img_size,
        batch_size=args.batch_size, max_items=args.items, output_dir="/tmp/tresnet-nb-bench",
    )  # fmt: skip
    model = tnb.load_model(cfg.arch, "none", num_classes=10)
    splits = tnb.load_splits(cfg.dataset, None, cfg.max_items)
    dls = tnb.array_dls(splits, cfg.img_size, cfg.batch_size, tnb.data_config(model, cfg.img_size), tnb.device())
    learn = tnb.build_learner(cfg, dls, model)
    train_rates, infer_rates = [], []
    for _ in range(args.repeats + 1):  # the first round warms up (allocator, oneDNN kernel selection)
        with learn.no_bar(), learn.no_logging():
            start = time.perf_counter()
            learn.fit(1, lr=1e-3)
            elapsed = time.perf_counter() - start
            infer_start = time.perf_counter()
            learn.get_preds(dl=dls.valid)
            infer = time.perf_counter() - infer_start
        n_train, n_valid = len(dls.train) * dls.train.bs, len(dls.valid.dataset)
        train_rates.append(n_train / elapsed)  # the epoch includes its validation pass, as users see it
        infer_rates.append(n_valid / infer)
    return {"train": statistics.median(train_rates[1:]), "infer": statistics.median(infer_rates[1:]),
            "train_spread": max(train_rates[1:]) - min(train_rates[1:])}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="tresnet_m")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--items", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"{args.arch} @ {args.img_size}px, batch {args.batch_size}, {args.items} train items, "
          f"{torch.get_num_threads()} threads, device {tnb.device()}")  # fmt: skip
    results = {p: measure(p, args) for p in ("fp32", "bf16")}
    for p, r in results.items():
        print(f"{p:5s} train {r['train']:7.1f} img/s (spread {r['train_spread']:.1f})  infer {r['infer']:7.1f} img/s")
    print(f"bf16+channels_last / fp32+channels_last: train x{results['bf16']['train'] / results['fp32']['train']:.2f}, "
          f"infer x{results['bf16']['infer'] / results['fp32']['infer']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
