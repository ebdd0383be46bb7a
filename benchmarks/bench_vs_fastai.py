"""Accuracy and training speed of one architecture (``--arch``, default tresnet_m) trained three ways on the same
items, side by side in one run: the library's notebook path with its defaults ("ours"), plain fastai as a user writes
it, and timm's train.py: from random initialisation the recipe the official TResNet README recommends
(Alibaba-MIIL/TResNet, "TResNet Training"), with ``--weights`` what a timm user fine-tuning runs (TIMM_FINETUNE).

Every method gets the same images, image size, epochs (passes over the training split), batch size, seeds and
torch threads, and starts from random initialisation (or, with ``--weights PATH``, from that checkpoint: ours with
its pretrained defaults, fastai with ``fine_tune``, timm with train.py's ``--pretrained --pretrained-path``). A file in
another layout (official MIIL, EfficientNet-PyTorch) is converted once to a timm-layout file by ``tnb.load_model``,
which fastai and timm then read (neither converts those layouts itself).

- ours: what notebooks/00_quickstart.ipynb (arrays) and 08_your_own_data.ipynb (DATASET="folder") do:
  ``RunConfig.from_params`` (PRESET "cpu", PRECISION "auto": bf16 + channels_last on a CPU, fp16 on CUDA),
  ``seed_everything``, ``load_model``, the loaders, ``build_learner``, ``fit``, ``score`` / ``evaluate``. Only public
  functions, so a change of the library's defaults changes this column.
- fastai: ``ImageDataLoaders.from_folder(root, train="train", valid="valid", item_tfms=Resize(size), bs, seed)``
  (no batch_tfms: no augmentation), ``vision_learner(dls, "tresnet_m", pretrained=False, metrics=accuracy)``,
  ``fit_one_cycle(epochs)`` at fastai's ``defaults.lr``; fp32 (fastai's to_bf16/to_fp16 autocast CUDA only), and
  ``to_fp16()`` on CUDA, as a fastai user would write it.
- timm: train.py wired from timm's functions (create_dataset, create_loader with the prefetcher, FastCollateMixup,
  SoftTargetCrossEntropy, create_optimizer_v2, create_scheduler_v2, ModelEmaV3, NativeScaler) with the README's
  options (``--aa rand-m9-mstd0.5-inc1 --reprob 0.4 --remode pixel --mixup 0.2 --model-ema --sched cosine --amp``,
  ``-b 190`` on 8 GPUs at ``--lr 0.6``, 300 epochs) and train.py's defaults for the rest; see TIMM_RECIPE for where
  it is scaled to this run. Its accuracy is the EMA's, the model train.py validates and selects with --model-ema.

Data: fashion_mnist is the embedded subset through ``tnb.load_splits`` (ours: the quickstart's in-memory path), and
the same arrays written once as PNG files (28 px, grey) in ``root/{train,valid}/<class>/i.png`` for fastai and timm;
digits is scikit-learn's ``load_digits`` (1,797 8x8 images, 17 grey levels 0-16), upscaled bilinearly to 64 px PNGs,
split 1,437 / 360 stratified, and read by ours as DATASET "folder". ``--holdout`` draws items the main draw does not
hold (fashion: the embedded items ``load_splits`` leaves out; digits: another split seed), to confirm defaults tuned
on the main draw. digits_redrawn renders the same digits another way (nearest-neighbour blocks at 96 px, other split
seeds), which no default was chosen on. fashion_cifar is the fashion draw as 32 px RGB images, which ours reads
from CIFAR-10 python batches in the official format (the CIFAR notebook's path, DATASET "cifar10") and fastai and
timm from PNG files.

Training img/s counts the training phases only (batch fetching inside; validation, set-up and checkpoints outside;
the device synchronised at each end), the median over seeds; wall is one whole run (data set-up to evaluation).
Usage: python benchmarks/bench_vs_fastai.py [--arch A] [--datasets fashion_mnist digits digits_redrawn fashion_cifar]
       [--items N] [--size 64]
       [--epochs N] [--batch-size 32] [--seeds 0 1 2] [--weights PATH] [--holdout] [--only ours,fastai,timm] [--json P]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from ratios import ratio_line  # benchmarks/ratios.py
from timing import TrainTimer, sync  # benchmarks/timing.py

import tresnet_nb as tnb
from tresnet_nb.data.arrays import stratified_head

METHODS = ("ours", "fastai", "timm")
# per dataset: the training cap (None: all items) and epochs when --items / --epochs are not given
DATASET_DEFAULTS: dict[str, dict[str, int | None]] = {
    "fashion_mnist": {"items": 3000, "epochs": 2},
    "digits": {"items": None, "epochs": 3},
    "digits_redrawn": {"items": None, "epochs": 3},
    "fashion_cifar": {"items": 3000, "epochs": 2},
}
DIGITS_VALID, DIGITS_PX = 360, 64  # load_digits: 1,797 items -> 1,437 train / 360 valid, upscaled to 64 px
SPLIT_SEED, HOLDOUT_SPLIT_SEED = 0, 1  # digits' train/valid split: the main draw, and --holdout's
# digits_redrawn: the same digits rendered another way, for defaults tuned on the main draw: nearest-neighbour blocks
# at 96 px (each pipeline resizes them to --size its own way), split with other seeds
REDRAWN_PX, REDRAWN_SPLIT_SEED, REDRAWN_HOLDOUT_SPLIT_SEED = 96, 2, 3
# The README's timm command (Alibaba-MIIL/TResNet) and train.py's defaults, which this run scales (see timm_settings)
TIMM_RECIPE = {
    "opt": "sgd",
    "momentum": 0.9,
    "weight_decay": 2e-5,  # train.py defaults (the 2020 train.py had weight decay 1e-4)
    "lr": 0.6,
    "global_batch": 8 * 190,
    "epochs": 300,  # README: --lr=0.6, -b=190 on 8 GPUs, --epochs=300
    "imagenet_train": 1_281_167,  # ImageNet-1k training images: 842 steps an epoch at the README's global batch
    "sched": "cosine",
    "warmup_epochs": 5,
    "warmup_lr": 1e-5,
    "min_lr": 0.0,  # train.py defaults
    "ema_decay": 0.9998,  # train.py's --model-ema-decay default (the README sets --model-ema only)
    "aa": "rand-m9-mstd0.5-inc1",
    "reprob": 0.4,
    "remode": "pixel",
    "mixup": 0.2,  # README
    "smoothing": 0.1,
    "hflip": 0.5,
    "color_jitter": 0.4,
    "scale": (0.08, 1.0),
    "ratio": (3 / 4, 4 / 3),
    "train_interpolation": "random",
    "workers": 4,  # train.py defaults
}
# train.py's own defaults, which a timm user fine-tuning with --pretrained runs (timm train.py: --opt sgd, --lr-base 0.1
# per 256 samples scaled linearly, --momentum 0.9, --weight-decay 2e-5, --sched cosine, --warmup-epochs 5 of the default
# 300 (scaled here to the same fraction of the run's steps), --warmup-lr 1e-5, --smoothing 0.1, --hflip 0.5, --scale
# 0.08 1, --color-jitter 0.4; no RandAugment, random erasing, MixUp or EMA unless asked for)
TIMM_FINETUNE = {
    "opt": "sgd",
    "momentum": 0.9,
    "weight_decay": 2e-5,
    "lr_base": 0.1,
    "lr_base_size": 256,
    "sched": "cosine",
    "warmup_epochs": 5,
    "epochs": 300,
    "warmup_lr": 1e-5,
    "min_lr": 0.0,
    "smoothing": 0.1,
    "hflip": 0.5,
    "color_jitter": 0.4,
    "scale": (0.08, 1.0),
    "ratio": (3 / 4, 4 / 3),
    "aa": None,
    "reprob": 0.0,
    "remode": "pixel",
    "mixup": 0.0,
    "train_interpolation": "random",
    "workers": 4,
}
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "vs_fastai.json"


@dataclass
class Draw:
    """One dataset's items: uint8 grey (N, H, W) or RGB (N, H, W, 3) train and valid images with labels, and the
    class names."""

    name: str
    splits: tnb.ArraySplits
    in_memory: bool  # ours reads the arrays (the quickstart) rather than files (DATASET "folder" or "cifar10")
    note: str
    root: Path | None = None  # the PNG tree, once written (fastai and timm read it; ours too for DATASET "folder")
    ours_dataset: str = "folder"  # what ours reads from files: "folder" (the PNG tree) or "cifar10" (cifar_root)
    cifar_root: Path | None = None  # the same items as CIFAR-10 python batches, for ours with DATASET "cifar10"

    @property
    def n_classes(self) -> int:
        return len(self.splits.class_names)


@dataclass
class Run:
    """One method's run at one seed: accuracy, training images/s, wall seconds, and what else it reports."""

    method: str
    seed: int
    accuracy: float
    train_ips: float
    wall_s: float
    extra: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------- data


def fashion_draw(items: int | None, holdout: bool) -> Draw:
    """The embedded Fashion-MNIST subset as ``tnb.load_splits`` caps it, or (``holdout``) the items it leaves out:
    the first of them in each class (test items first) make a validation split as large as the main draw's, the
    rest train, capped at ``items``."""
    main = tnb.load_splits("fashion_mnist", None, items)
    if not holdout:
        return Draw("fashion_mnist", main, True, "the embedded subset, load_splits(fashion_mnist, None, items)")
    ds, n = tnb.get_dataset("fashion_mnist").read(None), len(main.class_names)
    train, test = ds["train"], ds["test"]
    unused_train = np.setdiff1d(np.arange(len(train)), stratified_head(train.labels, items, n))
    valid_cap = None if items is None else max(n, items // 2)
    unused_test = np.setdiff1d(np.arange(len(test)), stratified_head(test.labels, valid_cap, n))
    pool_x = np.concatenate([test.images[unused_test], train.images[unused_train]])
    pool_y = np.concatenate([test.labels[unused_test], train.labels[unused_train]])
    valid = stratified_head(pool_y, len(main.valid_y), n)
    rest = np.setdiff1d(np.arange(len(pool_y)), valid)
    rest = rest[stratified_head(pool_y[rest], items, n)]
    if len(rest) == 0:
        raise ValueError(f"--holdout leaves no fashion_mnist items to train on with --items {items}; use fewer")
    splits = tnb.ArraySplits(pool_x[rest], pool_y[rest], pool_x[valid], pool_y[valid], main.class_names)
    return Draw("fashion_mnist", splits, True, "holdout: embedded items load_splits leaves out (test items first)")


def digits_draw(items: int | None, holdout: bool, redrawn: bool = False) -> Draw:
    """scikit-learn's digits upscaled bilinearly to 64 px (0-16 grey levels mapped to 0-255), split 1,437 / 360
    stratified with a fixed seed (another one for ``holdout``), the training split capped at ``items`` and the
    validation split as load_splits caps it (max(classes, items // 2)). ``redrawn``: nearest-neighbour blocks at
    96 px instead, and other split seeds."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    grey = np.round(digits.images * (255 / 16)).astype(np.uint8)
    px, resample = (REDRAWN_PX, Image.NEAREST) if redrawn else (DIGITS_PX, Image.BILINEAR)
    images = np.stack([np.asarray(Image.fromarray(g).resize((px,) * 2, resample)) for g in grey])
    labels = digits.target.astype(np.int64)
    seeds = (REDRAWN_SPLIT_SEED, REDRAWN_HOLDOUT_SPLIT_SEED) if redrawn else (SPLIT_SEED, HOLDOUT_SPLIT_SEED)
    seed = seeds[holdout]
    tx, vx, ty, vy = train_test_split(images, labels, test_size=DIGITS_VALID, stratify=labels, random_state=seed)
    n = 10
    keep_t = stratified_head(ty, items, n)
    keep_v = stratified_head(vy, None if items is None else max(n, items // 2), n)
    names = tuple(str(c) for c in range(n))
    how = "nearest-neighbour" if redrawn else "bilinear"
    note = f"sklearn load_digits, {how} to {px} px, stratified split seed {seed}"
    name = "digits_redrawn" if redrawn else "digits"
    return Draw(name, tnb.ArraySplits(tx[keep_t], ty[keep_t], vx[keep_v], vy[keep_v], names), False, note)


def cifar_draw(items: int | None, holdout: bool) -> Draw:
    """The Fashion-MNIST draw as CIFAR-10 sees images: 32 x 32 RGB (the 28 px photos centred on 2 px of their black
    background, the grey copied to three channels). Ours reads it as the CIFAR notebook does, from python batches in
    the official format (:func:`write_cifar_batches`); fastai and timm read the same images as PNG files."""
    fashion = fashion_draw(items, holdout)
    s = fashion.splits

    def rgb32(images: np.ndarray) -> np.ndarray:
        return np.repeat(np.pad(images, ((0, 0), (2, 2), (2, 2)))[..., None], 3, axis=-1)

    splits = tnb.ArraySplits(rgb32(s.train_x), s.train_y, rgb32(s.valid_x), s.valid_y, s.class_names)
    note = f"{fashion.note}, as 32 px RGB CIFAR-10 python batches (ours: DATASET cifar10)"
    return Draw("fashion_cifar", splits, False, note, ours_dataset="cifar10")


def write_cifar_batches(draw: Draw, root: Path) -> Path:
    """The draw's training split as ``data_batch_1..5`` and its validation split as ``test_batch`` under
    ``root/cifar-10-batches-py``, in the official format (``tresnet_nb.data.cifar.write_cifar10``)."""
    from tresnet_nb.data.cifar import VARIANTS, write_cifar10

    s = draw.splits

    def rows(images: np.ndarray) -> np.ndarray:  # (N, 32, 32, 3) -> (N, 3072), the colour planes one after another
        return images.transpose(0, 3, 1, 2).reshape(len(images), -1)

    train, test = (rows(s.train_x), s.train_y.tolist()), (rows(s.valid_x), s.valid_y.tolist())
    write_cifar10(root / VARIANTS["cifar10"].folder, train, test, s.class_names)
    draw.cifar_root = root
    return root


def class_folder(index: int, name: str) -> str:
    """A folder name for class ``index`` that sorts in class order and holds no path separator."""
    return f"{index:02d}_" + "".join(c if c.isalnum() else "_" for c in name)


def write_tree(draw: Draw, root: Path) -> Path:
    """The draw as ``root/{train,valid}/<class>/<i>.png`` (grey PNGs at the arrays' size)."""
    s = draw.splits
    for split, images, labels in (("train", s.train_x, s.train_y), ("valid", s.valid_x, s.valid_y)):
        for c, name in enumerate(s.class_names):
            (root / split / class_folder(c, name)).mkdir(parents=True, exist_ok=True)
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            Image.fromarray(image).save(root / split / class_folder(int(label), s.class_names[label]) / f"{i}.png")
    draw.root = root
    return root


# -------------------------------------------------------------------------------------------------------- timing


class TrainPhases(TrainTimer):
    """benchmarks/timing.py's TrainTimer (seconds of each training phase) that counts the images trained and, unlike
    it, lets validation run: the runs report accuracy."""

    def __init__(self) -> None:
        super().__init__()
        self.images = 0

    def after_batch(self) -> None:
        if self.training:
            self.images += len(self.learn.yb[0])

    def before_validate(self) -> None:
        return None

    @property
    def ips(self) -> float:
        return self.images / max(sum(self.seconds), 1e-9)


@contextmanager
def own_backend_flags():
    """Restore the cuDNN and TF32 switches a method sets (ours: deterministic; timm's train.py: benchmark, TF32)."""
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32)
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[:2]
        torch.backends.cuda.matmul.allow_tf32 = saved[2]


# ------------------------------------------------------------------------------------------------------- methods


def run_ours(draw: Draw, args: argparse.Namespace, seed: int, epochs: int, out: Path) -> tuple[float, float, dict]:
    """The notebook path with the library's defaults: quickstart (arrays) or own-data notebook (DATASET "folder")."""
    dataset = "fashion_mnist" if draw.in_memory else draw.ours_dataset
    root = {"fashion_mnist": None, "folder": draw.root, "cifar10": draw.cifar_root}[dataset]
    cfg = tnb.RunConfig.from_params(
        "bench_vs_fastai",
        preset="cpu",
        arch=args.arch,
        weights=args.weights or "none",
        dataset=dataset,
        data_root=None if root is None else str(root),
        img_size=args.size,
        batch_size=args.batch_size,
        epochs=epochs,
        max_items=args.items_for[draw.name] if draw.in_memory else None,
        seed=seed,
        output_dir=str(out),
        **args.ours_params,
        **args.ours_options,
    )
    cfg.save()
    tnb.seed_everything(cfg.seed)
    device = tnb.device()
    if draw.in_memory:  # 00_quickstart: load_splits (the draw holds its result) and array_dls
        model = tnb.load_model(cfg.arch, cfg.weights, num_classes=draw.n_classes, **args.ours_models)
        dls = tnb.array_dls(draw.splits, cfg.img_size, cfg.batch_size, tnb.data_config(model, cfg.img_size), device)
        learn = tnb.build_learner(cfg, dls, model)
        data = None
    else:  # 08_your_own_data (the folder, resized once into the cache) or 02_cifar (the batches): open_data
        ds = tnb.get_dataset(cfg.dataset).read(cfg.data_root)
        model = tnb.load_model(cfg.arch, cfg.weights, num_classes=len(ds.class_names), **args.ours_models)
        data = tnb.open_data(cfg, model, device, ds)
        learn = tnb.build_learner(cfg, data.dls, model, task=data.task)
    timer = TrainPhases()
    learn.add_cb(timer)
    with learn.no_bar(), learn.no_logging():
        result = tnb.fit(learn, cfg, dls_for=None if data is None else data.dls_for)
        if data is None:
            evaluation = tnb.score(*tnb.predict(learn), draw.splits.class_names)
        else:
            evaluation = tnb.evaluate(learn, data)
    extra = {"fit_img_s": result.images_per_second, "lr": result.lr}  # fit's own rate counts validation too
    return evaluation.metric_value, timer.ips, {**extra, "recipe": result.recipe, "precision": learn.plan.precision}


def run_fastai(draw: Draw, args: argparse.Namespace, seed: int, epochs: int, out: Path) -> tuple[float, float, dict]:
    """Plain fastai: ImageDataLoaders.from_folder, vision_learner, fit_one_cycle (fine_tune with --weights)."""
    from fastai.callback import fp16 as _fp16  # noqa: F401  (defines Learner.to_fp16)
    from fastai.callback import progress as _progress  # noqa: F401  (the progress bar a user sees)
    from fastai.callback import schedule as _schedule  # noqa: F401  (defines fit_one_cycle, fine_tune)
    from fastai.metrics import accuracy
    from fastai.torch_core import defaults, set_seed
    from fastai.vision.augment import Resize
    from fastai.vision.data import ImageDataLoaders
    from fastai.vision.learner import vision_learner

    set_seed(seed)
    workers = {} if args.workers is None else {"num_workers": args.workers}
    dls = ImageDataLoaders.from_folder(
        draw.root,
        train="train",
        valid="valid",
        item_tfms=Resize(args.size),
        bs=args.batch_size,
        seed=seed,
        device=tnb.device(),
        **workers,
    )
    weights = {"pretrained_cfg_overlay": {"file": args.timm_weights}} if args.weights else {}
    learn = vision_learner(dls, args.arch, pretrained=bool(args.weights), metrics=accuracy, path=out, **weights)
    if dls.device.type == "cuda":  # a fastai user's mixed precision on CUDA (on a CPU it would warn, train fp32)
        learn.to_fp16()
    timer = TrainPhases()
    learn.add_cb(timer)
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(epochs) if args.weights else learn.fit_one_cycle(epochs)
        accuracy_ = float(learn.validate()[1])
    precision = "fp16" if dls.device.type == "cuda" else "fp32"
    return accuracy_, timer.ips, {"lr": 2e-3 if args.weights else defaults.lr, "precision": precision}


def timm_settings(n_classes: int, passes: int, steps_per_epoch: int, batch: int, finetune: bool = False) -> dict:
    """The README's recipe scaled to this run: the lr linearly to the batch (train.py's --lr-base rule for SGD:
    0.6 / 1520 a sample), the warm-up (5 of 300 epochs) and the EMA horizon 1 / (1 - decay) (5,000 of the README's
    252,600 steps) to the same fractions of this run's steps, the schedule stepped per update (train.py's
    --sched-on-updates; per epoch the warm-up would round away). ``finetune``: train.py's defaults (TIMM_FINETUNE),
    the lr scaled by --lr-base's rule, the warm-up to the same fraction of the run, no EMA."""
    r = TIMM_RECIPE
    total = passes * steps_per_epoch
    if finetune:
        f = TIMM_FINETUNE
        return {
            "lr": f["lr_base"] * batch / f["lr_base_size"],
            "ema_decay": None,
            "n_classes": n_classes,
            "warmup_steps": max(1.0, total * f["warmup_epochs"] / f["epochs"]),
            "total_steps": total,
        }
    readme_steps = r["epochs"] * (r["imagenet_train"] // r["global_batch"])
    decay = max(0.0, 1 - (1 - r["ema_decay"]) * readme_steps / total)  # 0 (a copy) for runs of a few steps
    warmup_steps = max(1.0, total * r["warmup_epochs"] / r["epochs"])
    return {
        "lr": r["lr"] * batch / r["global_batch"],
        "ema_decay": decay,
        "warmup_steps": warmup_steps,
        "total_steps": total,
        "n_classes": n_classes,
    }


def posterize_zero_bits_black(img: Image.Image, bits_to_keep: int, **_) -> Image.Image:
    """timm's posterize, giving what Pillow < 13 gave for 0 bits (a black image) instead of Pillow 13's ValueError:
    timm 1.0.29's PosterizeIncreasing asks for 0 bits whenever RandAugment's magnitude noise (mstd 0.5 around 9)
    reaches 10, about 2% of its draws (timm's main branch still passes 0)."""
    from timm.data.auto_augment import posterize

    return img.point(lambda _: 0) if bits_to_keep <= 0 else posterize(img, bits_to_keep)


def timm_loaders(root: Path, model: torch.nn.Module, args: argparse.Namespace, n_classes: int, seed: int):
    """train.py's datasets and loaders: folder datasets, the prefetcher (normalisation and random erasing on the
    device), FastCollateMixup (train.py's Mixup with its default prefetcher), eval resized by the cfg's crop_pct."""
    from timm.data import FastCollateMixup, auto_augment, create_dataset, create_loader, resolve_data_config

    for name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):  # looked up when the ops are built
        auto_augment.NAME_TO_OP[name] = posterize_zero_bits_black
    r, device = (TIMM_FINETUNE if args.weights else TIMM_RECIPE), tnb.device()
    cfg = resolve_data_config({"img_size": args.size}, model=model)  # mean 0, std 1, bilinear, crop_pct 0.875
    workers = r["workers"] if args.workers is None else args.workers
    common = dict(mean=cfg["mean"], std=cfg["std"], device=device, use_prefetcher=True, num_workers=workers)
    train_ds = create_dataset(
        "", root=str(root), split="train", is_training=True, batch_size=args.batch_size, seed=seed, input_img_mode="RGB"
    )
    eval_ds = create_dataset("", root=str(root), split="validation", is_training=False, input_img_mode="RGB")
    # train.py: FastCollateMixup when mixup is on, else label smoothing in the loss (LabelSmoothingCrossEntropy)
    mixup = (
        FastCollateMixup(mixup_alpha=r["mixup"], label_smoothing=r["smoothing"], num_classes=n_classes)
        if r["mixup"]
        else None
    )
    train = create_loader(
        train_ds,
        input_size=cfg["input_size"],
        batch_size=args.batch_size,
        is_training=True,
        re_prob=r["reprob"],
        re_mode=r["remode"],
        scale=r["scale"],
        ratio=r["ratio"],
        hflip=r["hflip"],
        color_jitter=r["color_jitter"],
        auto_augment=r["aa"],
        interpolation=r["train_interpolation"],
        collate_fn=mixup,
        **common,
    )
    valid = create_loader(
        eval_ds,
        input_size=cfg["input_size"],
        batch_size=args.batch_size,
        is_training=False,
        interpolation=cfg["interpolation"],
        crop_pct=cfg["crop_pct"],
        **common,
    )
    return train, valid


def timm_top1(model: torch.nn.Module, loader, autocast: Callable) -> float:
    """train.py's validate: top-1 of ``model`` over ``loader`` in eval mode under inference_mode."""
    model.eval()
    correct = seen = 0
    with torch.inference_mode(), autocast():
        for x, y in loader:
            correct += int((model(x).argmax(1) == y).sum())
            seen += len(y)
    return correct / max(seen, 1)


def run_timm(draw: Draw, args: argparse.Namespace, seed: int, epochs: int, out: Path) -> tuple[float, float, dict]:
    """timm's train.py: from random initialisation the TResNet README's recipe scaled to this run (timm_settings),
    EMA accuracy; with --weights train.py's own defaults from the pretrained file (TIMM_FINETUNE), the live model."""
    import timm
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    from timm.utils import ModelEmaV3, NativeScaler, random_seed

    r, device = (TIMM_FINETUNE if args.weights else TIMM_RECIPE), tnb.device()
    if device.type == "cuda":  # as train.py does on CUDA (own_backend_flags restores them afterwards)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.benchmark = True
    random_seed(seed, 0)
    overlay = {"pretrained_cfg_overlay": {"file": args.timm_weights, "num_classes": -1}} if args.weights else {}
    model = timm.create_model(args.arch, pretrained=bool(args.weights), num_classes=draw.n_classes, **overlay)
    model = model.to(device)
    train, valid = timm_loaders(draw.root, model, args, draw.n_classes, seed)
    passes = epochs + 1 if args.weights else epochs  # fine_tune's frozen epoch: the same passes as the others
    s = timm_settings(draw.n_classes, passes, len(train), args.batch_size, finetune=bool(args.weights))
    opt = create_optimizer_v2(model, opt=r["opt"], lr=s["lr"], weight_decay=r["weight_decay"], momentum=r["momentum"])
    sched, _ = create_scheduler_v2(
        opt,
        sched=r["sched"],
        num_epochs=passes,
        warmup_epochs=s["warmup_steps"] / len(train),
        warmup_lr=r["warmup_lr"],
        min_lr=r["min_lr"],
        step_on_epochs=False,
        updates_per_epoch=len(train),
    )
    ema = ModelEmaV3(model, decay=s["ema_decay"]) if s["ema_decay"] is not None else None
    amp = device.type == "cuda"  # --amp: float16 autocast with the loss scaler on CUDA; fp32 on a CPU
    autocast = (lambda: torch.autocast("cuda", dtype=torch.float16)) if amp else nullcontext
    soft = r["mixup"] > 0  # mixed targets: soft cross-entropy (smoothing inside the mixup); else smoothing here
    loss_fn = SoftTargetCrossEntropy() if soft else LabelSmoothingCrossEntropy(smoothing=r["smoothing"])
    scaler, loss_fn = (NativeScaler(device="cuda") if amp else None), loss_fn.to(device)
    seconds, images, updates = 0.0, 0, 0
    for epoch in range(passes):
        model.train()
        sync(device)
        start = time.perf_counter()
        for x, y in train:
            with autocast():
                loss = loss_fn(model(x), y)
            if scaler is not None:
                scaler(loss, opt)
            else:
                loss.backward()
                opt.step()
            opt.zero_grad()
            updates += 1
            if ema is not None:
                ema.update(model, step=updates)
            sched.step_update(num_updates=updates)
            images += len(x)
        sync(device)
        seconds += time.perf_counter() - start
        sched.step(epoch + 1)
        live = timm_top1(model, valid, autocast)  # train.py validates every epoch
        averaged = timm_top1(ema.module, valid, autocast) if ema is not None else live
    extra = {"live_accuracy": live, "lr": s["lr"], "ema_decay": s["ema_decay"], "warmup_steps": s["warmup_steps"]}
    return averaged, images / max(seconds, 1e-9), {**extra, "precision": "fp16 amp" if amp else "fp32"}


RUNNERS = {"ours": run_ours, "fastai": run_fastai, "timm": run_timm}


# ------------------------------------------------------------------------------------------------------- reports


def summary(runs: list[Run]) -> dict[str, float]:
    accs = [r.accuracy for r in runs]
    return {
        "mean": statistics.fmean(accs),
        "min": min(accs),
        "max": max(accs),
        "train_ips": statistics.median(r.train_ips for r in runs),
        "wall_s": statistics.median(r.wall_s for r in runs),
    }


def print_table(name: str, by_method: dict[str, list[Run]], seeds: list[int]) -> None:
    head = " ".join(f"seed {s:>3}" for s in seeds)
    print(f"{'method':<7} {head}   mean   spread (min..max)  train img/s  wall s/run  notes")
    for method, runs in by_method.items():
        s = summary(runs)
        accs = " ".join(f"{r.accuracy:8.4f}" for r in runs)
        notes = ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in runs[0].extra.items()
            if k != "live_accuracy"
        )
        if "live_accuracy" in runs[0].extra:
            notes += ", live model " + " ".join(f"{r.extra['live_accuracy']:.4f}" for r in runs)
        print(
            f"{method:<7} {accs} {s['mean']:.4f} {s['min']:.4f}..{s['max']:.4f} "
            f"{s['train_ips']:12.1f} {s['wall_s']:11.1f}  {notes}"
        )


def print_ratios(name: str, by_method: dict[str, list[Run]]) -> None:
    sums = {m: summary(runs) for m, runs in by_method.items()}
    if "ours" not in sums:
        return
    for peer in ("fastai", "timm"):
        if peer in sums:
            a, b = sums["ours"], sums[peer]
            print(ratio_line(f"ours / {peer}: {name} accuracy", a["mean"], b["mean"], "top1", "mean over seeds"))
            print(ratio_line(f"ours / {peer}: {name} train img/s", a["train_ips"], b["train_ips"], "img/s", "median"))
    if "fastai" in sums and "timm" in sums:
        print(goals_line(name, sums))


def goals_line(name: str, sums: dict[str, dict[str, float]]) -> str:
    """Whether the issue's goals hold: mean and worst seed at least the better peer's, training at least 1.2 times
    fastai's images/s and at least timm's."""
    ours = sums["ours"]
    best = max(("fastai", "timm"), key=lambda m: sums[m]["mean"])
    checks = {
        f"mean {ours['mean']:.4f} >= {best} {sums[best]['mean']:.4f}": ours["mean"] >= sums[best]["mean"],
        f"worst seed {ours['min']:.4f} >= {best} {sums[best]['min']:.4f}": ours["min"] >= sums[best]["min"],
        f"train img/s {ours['train_ips']:.1f} >= 1.2 times fastai {sums['fastai']['train_ips']:.1f}": ours["train_ips"]
        >= 1.2 * sums["fastai"]["train_ips"],
        f"train img/s {ours['train_ips']:.1f} >= timm {sums['timm']['train_ips']:.1f}": ours["train_ips"]
        >= sums["timm"]["train_ips"],
    }
    verdict = "MET" if all(checks.values()) else "NOT MET"
    return f"goals {name} {verdict}; " + "; ".join(f"{k} {'yes' if v else 'no'}" for k, v in checks.items())


# ---------------------------------------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="tresnet_m", help="a timm architecture, the same for every method")
    p.add_argument("--datasets", nargs="+", default=list(DATASET_DEFAULTS), choices=list(DATASET_DEFAULTS))
    p.add_argument(
        "--items",
        type=int,
        default=None,
        help="training items cap (default: fashion_mnist and fashion_cifar 3000, digits all); valid: max(classes, N // 2)",
    )
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=None, help="default: fashion_mnist and fashion_cifar 2, digits 3")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--weights", default=None, help="a checkpoint to start from (default: random initialisation)")
    p.add_argument("--holdout", action="store_true", help="items the main draw does not hold (see the docstring)")
    p.add_argument("--only", default=",".join(METHODS), help="comma-separated subset of ours,fastai,timm")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads, all methods")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="loader workers of fastai and timm (default: their own: fastai's defaults.cpus, train.py's 4)",
    )
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    p.add_argument(
        "--ours-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a training option (TrainOptions field) for ours, e.g. augment=flip, to measure a default against another",
    )
    p.add_argument(
        "--ours-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a notebook parameter (RunConfig field) for ours, e.g. lr=0.002",
    )
    p.add_argument(
        "--ours-model",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a timm.create_model keyword for ours, e.g. global_pool=catavgmax or drop_rate=0.25",
    )
    args = p.parse_args()
    for flag, example in (("ours_option", "augment=flip"), ("ours_param", "lr=0.002"), ("ours_model", "drop_rate=0.2")):
        setattr(args, f"{flag}s", keyword_values(p, flag, getattr(args, flag), example))
    if set(args.ours_params) & {"arch", "weights", "dataset", "data_root", "output_dir", "seed"}:
        p.error(
            f"--ours-param {sorted(args.ours_params)}: ARCH, WEIGHTS, DATASET, DATA_ROOT, OUTPUT_DIR and SEED "
            "are the benchmark's to set (use --weights, --seeds)"
        )
    args.methods = [m.strip() for m in args.only.split(",") if m.strip()]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown or not args.methods:
        p.error(f"--only {args.only!r}: choose a comma-separated subset of {','.join(METHODS)}")
    if "timm" in args.methods and args.batch_size % 2 and not args.weights:
        p.error(f"--batch-size {args.batch_size}: timm's Mixup needs an even batch; use {args.batch_size + 1}")
    args.items_for = {d: args.items if args.items is not None else DATASET_DEFAULTS[d]["items"] for d in args.datasets}
    return args


def keyword_values(p: argparse.ArgumentParser, flag: str, given: list[str], example: str) -> dict[str, object]:
    """``KEY=VALUE`` texts as a dict, each VALUE read as JSON where it parses (numbers, true/false), else as text."""
    out: dict[str, object] = {}
    for option in given:
        key, sep, value = option.partition("=")
        if not sep or not key:
            p.error(f"--{flag.replace('_', '-')} {option!r}: write KEY=VALUE, e.g. {example}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def timm_layout_weights(args: argparse.Namespace, work: Path) -> str:
    """``args.weights`` as a timm-layout safetensors file for ``args.arch`` (converted by tnb.load_model, every tensor
    checked; the file's own head kept), which fastai's and timm's pretrained_cfg_overlay file loading reads."""
    from tresnet_nb.model.weights import write_weights

    model = tnb.load_model(args.arch, args.weights)
    return str(write_weights(model, work / f"{args.arch}-timm-layout.safetensors"))


def run_dataset(draw: Draw, args: argparse.Namespace, work: Path) -> dict[str, list[Run]]:
    epochs = args.epochs or int(DATASET_DEFAULTS[draw.name]["epochs"])
    s = draw.splits
    print(
        f"\n== {draw.name}: {len(s.train_y)} train / {len(s.valid_y)} valid, {draw.note}; {args.size} px, "
        f"{epochs} epochs{' (+1 frozen epoch)' if args.weights else ''}, batch {args.batch_size}, seeds "
        f"{args.seeds}, {torch.get_num_threads()} threads, device {tnb.device()}, "
        f"{'weights ' + args.weights if args.weights else 'random init'}"
        + "".join(
            f"; ours with {name} {value}"
            for name, value in (
                ("options", args.ours_options),
                ("parameters", args.ours_params),
                ("timm keywords", args.ours_models),
            )
            if value
        )
    )
    by_method: dict[str, list[Run]] = {m: [] for m in args.methods}
    for k, seed in enumerate(args.seeds):
        order = args.methods[k % len(args.methods) :] + args.methods[: k % len(args.methods)]  # rotate who goes first
        for method in order:
            out = Path(tempfile.mkdtemp(dir=work, prefix=f"{draw.name}-{method}-{seed}-"))
            start = time.perf_counter()
            with own_backend_flags():
                accuracy, ips, extra = RUNNERS[method](draw, args, seed, epochs, out)
            run = Run(method, seed, accuracy, ips, time.perf_counter() - start, extra)
            by_method[method].append(run)
            print(f"  {method} seed {seed}: accuracy {accuracy:.4f}, {ips:.1f} train img/s, {run.wall_s:.1f} s")
            shutil.rmtree(out, ignore_errors=True)
    print_table(draw.name, by_method, args.seeds)
    print_ratios(draw.name, by_method)
    return by_method


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench_vs_fastai-"))
    os.environ["TRESNET_NB_CACHE"] = str(work / "cache")  # the library's resize-once cache: fresh for this run
    args.timm_weights = timm_layout_weights(args, work) if args.weights else None
    r = TIMM_RECIPE
    if args.weights:
        f = TIMM_FINETUNE
        print(
            f"timm column: train.py's defaults from --pretrained ({f['opt']} momentum {f['momentum']}, wd "
            f"{f['weight_decay']}, lr {f['lr_base']} per {f['lr_base_size']} samples, {f['sched']} with warm-up "
            f"{f['warmup_epochs']}/{f['epochs']} of the steps, smoothing {f['smoothing']}, random-resized crop "
            f"and flip, no RandAugment, erasing, MixUp or EMA)"
        )
    else:
        print(
            f"timm column: train.py with the TResNet README's options ({r['opt']} momentum {r['momentum']}, wd "
            f"{r['weight_decay']}, lr {r['lr']} at batch {r['global_batch']} scaled linearly, {r['sched']} with "
            f"warm-up {r['warmup_epochs']}/{r['epochs']} of the steps, EMA horizon scaled from decay "
            f"{r['ema_decay']} over {r['epochs']} ImageNet epochs, {r['aa']}, reprob {r['reprob']} {r['remode']}, "
            f"mixup {r['mixup']}, smoothing {r['smoothing']}, AMP on CUDA only; the schedule per update); "
            "accuracy of the EMA model"
        )
    results = {}
    try:
        for name in args.datasets:
            if name == "fashion_mnist":
                draw = fashion_draw(args.items_for[name], args.holdout)
            elif name == "fashion_cifar":
                draw = cifar_draw(args.items_for[name], args.holdout)
                write_cifar_batches(draw, work / "cifar")
            else:
                draw = digits_draw(args.items_for[name], args.holdout, redrawn=name == "digits_redrawn")
            write_tree(draw, work / name)
            by_method = run_dataset(draw, args, work)
            results[name] = {m: {"runs": [asdict(r) for r in runs], **summary(runs)} for m, runs in by_method.items()}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    record = {"args": {k: v for k, v in vars(args).items() if k != "json"}, "results": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"results: {args.json}")


if __name__ == "__main__":
    main()
