"""Resume state: the callback that writes, after every trained epoch, what resuming needs (weights, EMA, optimizer,
RNG states, history, position in the plan) atomically, and the helpers that read the history and RNG states back.
Every entry is a tensor or a plain container, so the checkpoint loads with ``torch.load(weights_only=True)``.

A finished run's record: ``finished.json`` (the run's fingerprint, history and fit summary), written when the last
epoch is done. Once the run's final weights are saved (``model.safetensors``), :func:`drop_checkpoint` removes the
checkpoint, which is about three times their size (optimizer moments, the EMA); a rerun then finds the record and
the weights and trains nothing."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastai.callback.core import Callback
from fastai.learner import Learner

from ..config import LOCATION_FIELDS, RunConfig
from ..files import atomic_write, atomic_write_text
from ..options import split_extra
from ..runtime import is_main
from .callbacks import EMA


def rng_state(learn: Learner) -> dict[str, Any]:
    """Every RNG a training epoch draws from, as tensors and lists (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "loader": [list(x) if isinstance(x, tuple) else x for x in learn.dls.train.rng.getstate()],
    }
    device = _cuda_device(learn)
    if device is not None:  # the flips, erasing noise and MixUp draws made on the GPU come from its own generator
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _cuda_device(learn: Learner) -> torch.device | None:
    device = getattr(learn.dls, "device", None)
    return device if device is not None and torch.device(device).type == "cuda" else None


def set_rng_state(learn: Learner, state: dict[str, Any], loader: bool = True) -> None:
    """Restore what :func:`rng_state` saved (the training loader's generator too, if ``loader``)."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))
    if loader:
        learn.dls.train.rng.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["loader"]))
    device = _cuda_device(learn)
    if device is not None and "cuda" in state:  # a checkpoint from before CUDA states were kept has none
        torch.cuda.set_rng_state(state["cuda"], device)


def join_history(earlier: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """The history of earlier fits followed by ``later`` (a stage, or the epochs of one so far)."""
    return {
        "train_losses": earlier["train_losses"] + later["train_losses"],
        "epochs": earlier["epochs"] + later["epochs"],
        "metric_names": later["metric_names"],
    }


def history(learn: Learner) -> dict[str, Any]:
    """Training losses and per-epoch validation values fastai recorded in the last fit (get_preds resets them)."""
    rec = learn.recorder
    return {
        "train_losses": [float(v) for v in rec.losses],
        "metric_names": list(rec.metric_names[1:-1]),
        # epochs skipped on resume leave empty rows
        "epochs": [[float(v) if v is not None else None for v in row] for row in rec.values if len(row)],
    }


def plain(obj: object) -> object:
    """``obj`` with fastcore's L and other sequences turned into lists and dict values likewise, so that the
    checkpoint loads with ``torch.load(weights_only=True)``."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) or type(obj).__name__ == "L":
        return [plain(v) for v in obj]
    if isinstance(obj, np.generic):  # numpy scalars (schedulers compute hyper-parameters with numpy)
        return obj.item()
    if isinstance(obj, torch.Tensor) and type(obj) is not torch.Tensor:  # fastai's TensorBase and friends
        return obj.as_subclass(torch.Tensor)
    return obj


class Checkpoint(Callback):
    """After every trained epoch, save what resuming needs (weights, EMA, optimizer, RNG states, history, position
    in the plan) to ``path`` atomically; :func:`tresnet_nb.train.fit.fit` reads it back to resume."""

    order = 70  # last: after the Recorder has the epoch's values and the EMA its update

    def __init__(self, path: os.PathLike, fingerprint: str) -> None:
        self.path, self.fingerprint = path, fingerprint
        self.stage, self.prefix = 0, {"train_losses": [], "epochs": [], "metric_names": []}
        self.trained = False
        self.smooth_loss: tuple[int, torch.Tensor] | None = None  # to restore on resume, after Recorder resets it
        self.scaler_state: dict | None = (
            None  # fp16 loss-scaler state to restore on resume, after MixedPrecision makes one
        )

    def before_fit(self) -> None:
        if self.smooth_loss is not None:  # the train_loss column is a running average over all batches so far
            self.learn.recorder.smooth_loss.count, self.learn.recorder.smooth_loss.val = self.smooth_loss
            self.smooth_loss = None
        if self.scaler_state is not None and getattr(self.learn, "scaler", None) is not None:
            self.learn.scaler.load_state_dict(
                self.scaler_state
            )  # fastai's MixedPrecision made a fresh one in its before_fit
            self.scaler_state = None

    def before_epoch(self) -> None:
        self.trained = False

    def before_train(self) -> None:
        self.trained = True  # validation-only epochs (get_preds) are not checkpointed

    def after_epoch(self) -> None:
        if not self.trained or not is_main():  # data-parallel: rank 0 writes; every rank reads it to resume
            return
        ema = next((cb for cb in self.learn.cbs if isinstance(cb, EMA)), None)
        current = history(self.learn)
        state = {
            "fingerprint": self.fingerprint,
            "stage": self.stage,
            "epoch": self.epoch,
            "stage_epochs": self.n_epoch,
            "model": self.learn.model.state_dict(),
            "opt": plain(self.learn.opt.state_dict()),
            "ema": ema.state_dict() if ema is not None else None,
            "scaler": self.learn.scaler.state_dict() if getattr(self.learn, "scaler", None) is not None else None,
            "rng": rng_state(self.learn),
            "smooth_loss": [self.learn.recorder.smooth_loss.count, self.learn.recorder.smooth_loss.val],
            "history": join_history(self.prefix, current),
        }
        atomic_write(self.path, lambda tmp: torch.save(plain(state), tmp))


def same_run(stored: str, expected: str) -> bool:
    """Whether a checkpoint's fingerprint ``stored`` is the run ``expected`` describes: equal, or written before
    the training options became :class:`TrainOptions` (its config held them as an ``extra`` dict) and the same
    once read as they are now."""
    if stored == expected:
        return True
    try:
        old, new = json.loads(stored), json.loads(expected)
        config = dict(old["config"])
        if "extra" not in config:
            return False
        config["options"], config["notebook_params"] = split_extra(config.pop("extra"))
        upgraded = RunConfig(**config, output_dir="", tracking=None).to_dict()
    except (ValueError, TypeError, KeyError):
        return False
    old["config"] = json.loads(json.dumps({k: v for k, v in upgraded.items() if k not in LOCATION_FIELDS}, default=str))
    return json.dumps(old, sort_keys=True, default=str) == json.dumps(new, sort_keys=True, default=str)


def load_checkpoint(path: Path, expected: str) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (None when there is none), refused when it is of another run than ``expected``."""
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not same_run(state.get("fingerprint") or "", expected):
        raise ValueError(
            f"{path} holds a checkpoint of a different configuration or plan, so it cannot be resumed. Fix: use "
            f"another OUTPUT_DIR for this run, or delete {path} to start this one afresh."
        )
    return state


FINISHED = "finished.json"  # a finished run's record, beside checkpoint.pth and model.safetensors
WEIGHTS = "model.safetensors"  # the run's final weights, as the notebooks and the train command save them


def write_finished(folder: Path, fingerprint: str, summary: dict[str, Any]) -> Path:
    """Record in ``folder`` that the run of ``fingerprint`` finished, with its fit ``summary`` (recipe, lr, epochs,
    seconds, images per second, history): what a rerun returns without training."""
    record = {"fingerprint": fingerprint, **plain(summary)}
    return atomic_write_text(folder / FINISHED, json.dumps(record, indent=1, default=float) + "\n")


def read_finished(folder: Path) -> dict[str, Any] | None:
    """The finished-run record in ``folder``, or None."""
    path = folder / FINISHED
    return json.loads(path.read_text()) if path.is_file() else None


def drop_checkpoint(folder: Path | str, keep: bool = False) -> str:
    """Remove ``folder``'s checkpoint once the run finished and its final weights are saved (unless ``keep``);
    returns what was done, for the notebook to print. Rank 0 only; a run that has not finished keeps it."""
    folder = Path(folder)
    checkpoint = folder / "checkpoint.pth"
    if not checkpoint.is_file():
        return "no checkpoint to remove"
    if keep:
        return f"kept {checkpoint} (KEEP_CHECKPOINT): it resumes or extends the finished run with its optimizer state"
    if read_finished(folder) is None or not (folder / WEIGHTS).is_file():
        return f"kept {checkpoint}: the run has not finished, or its final weights ({WEIGHTS}) are not saved yet"
    size = checkpoint.stat().st_size
    if is_main():
        checkpoint.unlink()
    return (
        f"removed {checkpoint.name} ({size / 2**20:.0f} MiB): the run finished; {WEIGHTS} holds its final weights and "
        f"{FINISHED} its record, so a rerun trains nothing (KEEP_CHECKPOINT=True keeps the checkpoint)"
    )


def load_finished(model: torch.nn.Module, folder: Path, expected: str) -> dict[str, Any] | None:
    """A run in ``folder`` that finished and dropped its checkpoint: its final weights put into ``model`` and its
    record returned (with ``path``, the record's file); None when ``folder`` holds no finished run."""
    record = read_finished(folder)
    if record is None:
        return None
    if not same_run(record["fingerprint"], expected):
        raise ValueError(
            f"{folder / FINISHED} records a finished run of a different configuration or plan. Fix: use another "
            f"OUTPUT_DIR for this run, or delete {folder} to start this one afresh."
        )
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(
            f"{folder / FINISHED} records a finished run, but its final weights {weights} are missing and its "
            f"checkpoint was removed, so there is nothing to resume or evaluate. Fix: restore {WEIGHTS}, or delete "
            f"{folder / FINISHED} to train this run again."
        )
    from ..model.weights import read_state_dict

    model.load_state_dict(read_state_dict(weights))
    print(f"Training already complete in {folder / FINISHED}; the final weights come from {weights}")
    return {**record, "path": str(folder / FINISHED)}
