"""The gpu-check's fine-tune: the miil recipe through the real file pipeline (Kaggle-size JPEGs, the resize-once
cache, loader workers, pinned memory), timed per step with the wait for each batch apart."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastai.callback.core import Callback, CancelFitException
from PIL import Image

from .sizes import DATA_WAIT_GOAL, KAGGLE_SIZE, Sizes


def write_kaggle_like(
    root: Path, files: int, items: int, classes: int = 8, seed: int = 0, size: tuple[int, int] = KAGGLE_SIZE
) -> tuple[list[Path], np.ndarray]:
    """``files`` distinct JPEG photographs of ``size`` (smooth colour fields with noise, quality 90, ~0.5 MB) under
    ``root``, and ``items`` paths: the files and hard links to them (each a path of its own, so the cache resizes
    each once, as it would distinct images); labels cycle through ``classes``."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    originals = []
    for i in range(files):
        a, b, c = rng.uniform(0.002, 0.01, 3)
        base = np.stack([np.sin(xx * a + i), np.cos(yy * b), np.sin((xx + yy) * c)], -1) * 100 + 128
        noise = rng.normal(0, 12, (-(-h // 4), -(-w // 4), 3)).repeat(4, 0).repeat(4, 1)[:h, :w]
        path = root / f"img{i:05d}.jpg"
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path, quality=90)
        originals.append(path)
    paths = list(originals)
    for j in range(files, items):
        link = root / f"img{j:05d}.jpg"
        if not link.exists():
            os.link(originals[j % files], link)
        paths.append(link)
    return paths[:items], np.arange(items, dtype=np.int64) % classes


class StepClock(Callback):
    """Times each training step and the wait for its batch (from the end of the previous step to the start of this
    one: the loader, the transfer and the per-image policy); stops the fit after ``warmup + steps`` steps; the last
    ``steps`` are the timed ones."""

    order = 100  # after every other callback's after_batch, so the step includes them

    def __init__(self, steps: int, warmup: int, device: torch.device) -> None:
        self.steps, self.warmup, self.device = steps, warmup, device
        self.waits: list[float] = []
        self.busy: list[float] = []
        self.last: float | None = None

    def before_batch(self) -> None:
        now = time.perf_counter()
        if self.last is not None and len(self.busy) >= self.warmup:
            self.waits.append(now - self.last)
        self.start = now

    def after_batch(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the step's kernels count in the step, not in the next wait
        now = time.perf_counter()
        self.busy.append(now - self.start)
        self.last = now
        if len(self.busy) >= self.warmup + self.steps:
            raise CancelFitException()


def phase_row(size: int, batch: int, clock: StepClock, warmup: int, cache_s: float) -> dict[str, Any]:
    """One row of the finetune table: the phase's training rate, the share of time spent waiting for data, the
    median step and wait, and the seconds its cache took."""
    timed = clock.busy[warmup:]
    waits = clock.waits[: len(timed)]
    step_s, wait_s = float(np.sum(timed)), float(np.sum(waits))
    return {"px": size, "batch": batch, "steps": len(timed),
            "train img/s": round(batch * len(timed) / (step_s + wait_s), 1),
            "data_wait_fraction": round(wait_s / (step_s + wait_s), 4),
            "step ms (median)": round(1000 * float(np.median(timed)), 1),
            "wait ms (median)": round(1000 * float(np.median(waits)), 1) if waits else None,
            "cache s": round(cache_s, 1)}  # fmt: skip


def phases_summary(rows: list[dict[str, Any]], goal: bool | None) -> str:
    """The finetune section's one line: each phase's rate and data wait, and the goal's verdict on a GPU."""
    first = rows[0]
    summary = (
        f"{first['train img/s']} img/s at {first['px']} px, data_wait_fraction {first['data_wait_fraction']}"
        + "".join(f"; {r['train img/s']} img/s at {r['px']} px, wait {r['data_wait_fraction']}" for r in rows[1:])
    )
    if goal is not None:
        summary += f"; goal wait <= {DATA_WAIT_GOAL}: {'met' if goal else 'NOT met'}"
    return summary


def section_finetune(device: torch.device, sz: Sizes, out: Path, state: dict[str, Any]) -> dict[str, Any]:
    """The miil recipe through the file pipeline at each size of the progressive plan, timed per step."""
    from ..config import RunConfig
    from ..data.arrays import augment_of, set_augment
    from ..data.base import Split
    from ..data.highres import cache_split, file_dls
    from ..model.load import data_config, load_model
    from ..recipes import get_recipe
    from ..runtime import loader_workers, usable_cpus
    from ..train.learner import build_learner

    work = out / "finetune_data"
    start = time.perf_counter()
    paths, labels = write_kaggle_like(work / "images", sz.files, sz.items)
    written_s = time.perf_counter() - start
    classes = int(labels.max()) + 1
    split = Split(tuple(p.stem for p in paths), labels, paths=tuple(paths))
    size, batch = sz.phases[0][:2]
    run = {"dataset": "folder", "weights": "none", "arch": state["arch"], "precision": "auto", "recipe": "miil"}
    cfg = RunConfig.from_params(
        "gpu_check", img_size=size, batch_size=batch, output_dir=str(out / "finetune_run"), **run
    )
    model = load_model(cfg.arch, "none", num_classes=classes)
    rows, learn = [], None
    for size, batch, steps in sz.phases:
        t0 = time.perf_counter()
        cached = cache_split(split, size, work / "cache")
        cache_s = time.perf_counter() - t0
        dls = file_dls(
            cached, cached.subset(np.arange(min(len(cached), 2 * batch))), size, batch, data_config(model, size), device
        )
        if learn is None:
            learn = build_learner(cfg, dls, model)
            learn.remove_cbs([cb for cb in learn.cbs if type(cb).__name__ in ("ProgressCallback", "EpochLog")])
        else:
            set_augment(dls, *augment_of(learn.dls))  # the next phase keeps the recipe's policy, as fit's do
            learn.dls = dls
        clock = StepClock(steps, sz.warmup_steps, device)
        epochs = math.ceil((sz.warmup_steps + steps) / max(1, len(dls.train)))
        learn.fit(epochs, lr=get_recipe(learn.plan.recipe).lr, cbs=[clock])
        rows.append(phase_row(size, batch, clock, sz.warmup_steps, cache_s))
    state.update(model=learn.model, img_size=sz.phases[-1][0], class_names=[str(c) for c in range(classes)])
    goal = all(r["data_wait_fraction"] <= DATA_WAIT_GOAL for r in rows) if device.type == "cuda" else None
    return {
        "status": "ok",
        "summary": phases_summary(rows, goal),
        "table": rows,
        "recipe": learn.plan.recipe,
        "precision": learn.plan.precision,
        "workers": loader_workers(device),
        "usable_cpus": usable_cpus(),
        "pin_memory": device.type == "cuda",
        "files": sz.files,
        "items": sz.items,
        "file_size": list(KAGGLE_SIZE),
        "write_seconds": round(written_s, 1),
        "data_wait_goal": DATA_WAIT_GOAL,
        "goal_met": goal,
    }
