"""Writes the run in this folder as commit a837346 wrote it, before the training options became TrainOptions (its
run_config.json has them as an ``extra`` dict, its checkpoint's fingerprint says so too). Run with that commit first
on the path:

    git worktree add /tmp/a837346 a837346
    PYTHONPATH=/tmp/a837346:/tmp/a837346/tests python tests/data/legacy_a837346/make_legacy_run.py tests/data/legacy_a837346

A dataset notebook's configuration (its training switches at their defaults) trains the tests' tiny net on 16
Fashion-MNIST items at 32 px for 2 epochs and stops before the second: run_config.json and checkpoint.pth remain.
"""

import sys
from pathlib import Path

import torch
from fastai.callback.progress import ProgressCallback
from test_resume import Interrupt, InterruptAt, TinyNet

import tresnet_nb as tnb

out = Path(sys.argv[1])
switches = dict(
    recipe=None,
    progressive=None,
    tta=False,
    mixup=0.0,
    cutmix=0.0,
    accumulate=1,
    grad_checkpointing=False,
    balanced=False,
)
cfg = tnb.RunConfig.from_params(
    "08_your_own_data",
    preset="smoke",
    precision="fp32",
    img_size=32,
    batch_size=8,
    epochs=2,
    max_items=16,
    output_dir=str(out),
    extra=tnb.check_train_options(switches),
)
cfg.save()
tnb.seed_everything(cfg.seed)
model = TinyNet(10)
splits = tnb.load_splits(cfg.dataset, None, cfg.max_items)
dls = tnb.array_dls(splits, cfg.img_size, cfg.batch_size, tnb.data_config(model, cfg.img_size), torch.device("cpu"))
learn = tnb.build_learner(cfg, dls, model, **tnb.learner_options(cfg.extra))
learn.remove_cb(ProgressCallback)
learn.add_cb(InterruptAt(1, 1))
try:
    tnb.fit(learn, cfg, pretrained=False)
except Interrupt:
    print(f"stopped before epoch 2: {out / 'checkpoint.pth'}")
