"""Training images/s of the library's fastai Learner vs a bare PyTorch loop doing the same work, side by side.

Both train the same architecture (fresh from the same seed) on the same uint8 tensors of the embedded
Fashion-MNIST subset, with the same batch size, image size, preprocessing (scale, random flip, mean/std), memory
format, fp32, and AdamW at the same lr, betas, eps and weight decay (none on norm and bias, as fastai does).
Only the training phase is timed: a Callback starts the clock at ``before_train`` and stops it at
``after_train`` (so batch fetching and collation are inside, the validation epoch and fit set-up outside), and
it cancels validation, which neither side needs here. The bare loop is timed over the same batches of an epoch.
Rounds alternate which side goes first; the first round warms up (allocator, oneDNN kernel selection).
Usage: python benchmarks/bench_loop_overhead.py [--arch tresnet_m] [--img-size 64] [--batch-size 32] [--items 256]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from ratios import ratio_line  # benchmarks/ratios.py
from timing import TrainTimer, sync  # benchmarks/timing.py
from torch import nn

import tresnet_nb as tnb

LR = 1e-3
SEED = 42


class BareLoop:
    """One epoch of plain PyTorch training over the tensors behind a fastai training DataLoader."""

    def __init__(self, model: nn.Module, train_dl, data_cfg: dict, channels_last: bool, device: torch.device) -> None:
        self.model, self.device, self.channels_last = model.to(device).train(), device, channels_last
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.images, self.labels = train_dl.dataset.images, train_dl.dataset.labels
        self.bs, self.n_batches = train_dl.bs, len(train_dl)  # same batches per epoch (fastai drops the last)
        self.mean = torch.tensor(data_cfg["mean"], device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(data_cfg["std"], device=device).view(1, 3, 1, 1)
        decay = [p for p in model.parameters() if p.ndim > 1]
        no_decay = [p for p in model.parameters() if p.ndim <= 1]  # biases and norm weights, as fastai's wd_bn_bias
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
        # the library's Adam defaults (fastai's): mom 0.9, sqr_mom 0.99, eps 1e-5, decoupled weight decay 0.01
        self.opt = torch.optim.AdamW(groups, lr=LR, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01)

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[idx].to(self.device).float().div_(255)
        flip = torch.rand(x.shape[0], device=self.device) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.labels[idx].to(self.device)

    def epoch(self) -> float:
        sync(self.device)
        start = time.perf_counter()
        perm = torch.randperm(len(self.labels))
        for i in range(self.n_batches):
            x, y = self.batch(perm[i * self.bs : (i + 1) * self.bs])
            loss = F.cross_entropy(self.model(x), y)
            loss.backward()
            self.opt.step()
            self.opt.zero_grad()
        sync(self.device)
        return time.perf_counter() - start


def fresh_model(arch: str) -> nn.Module:
    torch.manual_seed(SEED)
    return tnb.load_model(arch, "none", num_classes=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="tresnet_m")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--items", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cfg = tnb.RunConfig.from_params(
        "bench",
        preset="smoke",
        arch=args.arch,
        precision="fp32",
        img_size=args.img_size,
        seed=SEED,
        batch_size=args.batch_size,
        max_items=args.items,
        output_dir="/tmp/tresnet-nb-bench",
    )
    dev = tnb.device()
    ours_model = fresh_model(cfg.arch)
    data_cfg = tnb.data_config(ours_model, cfg.img_size)
    splits = tnb.load_splits("fashion_mnist", None, cfg.max_items)
    dls = tnb.array_dls(splits, cfg.img_size, cfg.batch_size, data_cfg, dev)
    learn = tnb.build_learner(cfg, dls, ours_model)
    timer = TrainTimer()
    learn.add_cb(timer)
    channels_last = any(isinstance(cb, tnb.ChannelsLast) for cb in learn.cbs)
    bare = BareLoop(fresh_model(cfg.arch), dls.train, data_cfg, channels_last, dev)
    n_images = len(dls.train) * dls.train.bs
    print(
        f"{cfg.arch} @ {cfg.img_size}px, batch {dls.train.bs}, {n_images} images/epoch, precision {learn.plan.precision}, "
        f"{'channels_last' if channels_last else 'contiguous'}, {torch.get_num_threads()} threads, device {dev}"
    )
    ours, theirs = [], []
    for round_ in range(args.repeats + 1):  # round 0 warms up both sides
        for side in ("ours", "bare") if round_ % 2 == 0 else ("bare", "ours"):
            if side == "ours":
                with learn.no_bar(), learn.no_logging():
                    learn.fit(1, lr=LR)
                ours.append(n_images / timer.seconds[-1])
            else:
                theirs.append(n_images / bare.epoch())
    ours, theirs = ours[1:], theirs[1:]
    ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    for name, rates in (("ours (fastai Learner.fit)", ours), ("bare (PyTorch loop)      ", theirs)):
        print(
            f"{name} {statistics.median(rates):7.1f} img/s (median of {len(rates)}, "
            f"range {min(rates):.1f}-{max(rates):.1f})"
        )
    note = f"paired rounds x{min(ratios):.3f}-{max(ratios):.3f}; goal >= 0.95"
    print(ratio_line("ours / bare", statistics.median(ours), statistics.median(theirs), "img/s", note))


if __name__ == "__main__":
    main()
