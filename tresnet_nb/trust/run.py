"""The run notebook 09 analyses: a finished run folder of any dataset notebook (or of the ``train`` job), opened
again as it was trained (its configuration, data, fine-tuned weights and training options), or one trained first
with the notebook's own parameters when no RUN_DIR is given."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from fastai.learner import Learner
from torch import nn

from ..config import RunConfig
from ..data import get_dataset
from ..evaluation.scores import Evaluation
from ..report.inference import load_run
from ..report.publish import missing_run_files
from ..runtime import device as default_device
from ..steps.data import Data, open_data
from ..steps.job import train_job
from ..steps.results import evaluate
from ..train.distributed import cleanup
from ..train.learner import build_learner

TRAINED_HERE = "run"  # without RUN_DIR: the run trained first, in OUTPUT_DIR/run


@dataclass
class AnalysedRun:
    """A finished run opened for analysis: ``cfg`` is its configuration with OUTPUT_DIR set to the analysis'
    folder (fold checkpoints and screening logs go there, never into the analysed run's folder)."""

    run_dir: Path
    cfg: RunConfig
    record: dict[str, Any]
    data: Data
    model: nn.Module
    learn: Learner
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each analysis step, for metrics.json
    _evaluation: Evaluation | None = None

    @property
    def evaluation(self) -> Evaluation:
        """The run's predictions on its evaluation split, scored: computed when a step first asks for them."""
        if self._evaluation is None:
            self._evaluation = evaluate(self.learn, self.data)
        return self._evaluation

    @property
    def multi_label(self) -> bool:
        return self.data.task == "multi-label"

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        """Add the wall time of the block to ``seconds[step]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[step] = round(self.seconds.get(step, 0.0) + time.perf_counter() - start, 2)


def check_run_dir(run_dir: Path | str) -> Path:
    """``run_dir`` if it holds a finished run (run_config.json, metrics.json, model.safetensors); else a
    ValueError naming what is missing and how to make one."""
    run_dir = Path(run_dir)
    missing = missing_run_files(run_dir)
    if missing:
        raise ValueError(
            f"RUN_DIR {str(run_dir)!r} lacks {missing}: point it at the OUTPUT_DIR of a finished run of a dataset "
            "notebook (or of python -m tresnet_nb train), or set RUN_DIR = None to train one here first"
        )
    return run_dir


def open_run(run_dir: Path | str, out: Path | str, device: torch.device | None = None) -> AnalysedRun:
    """Open the finished run in ``run_dir`` as it was trained (its model as :func:`tresnet_nb.load_run` opens it,
    with its data and training options), its analysis writing to ``out``; the evaluation split is scored when a
    step first needs it."""
    run_dir = check_run_dir(run_dir)
    cfg = RunConfig.load(run_dir / "run_config.json").with_changes(output_dir=str(out))
    ds = get_dataset(cfg.dataset).read(cfg.data_root)
    opened = load_run(run_dir)
    if opened.class_names != tuple(ds.class_names):
        raise ValueError(
            f"The run in {str(run_dir)!r} was trained on the classes {list(opened.class_names)[:10]}, but its dataset "
            f"now reads {list(ds.class_names)[:10]}; point DATA_ROOT at the data it was trained on"
        )
    data = open_data(cfg, opened.model, device or default_device(), ds)
    learn = build_learner(cfg, data.dls, opened.model, task=data.task)
    return AnalysedRun(run_dir, cfg, opened.record or {}, data, opened.model, learn)


def run_to_analyse(cfg: RunConfig, run_dir: Path | str | None) -> Path:
    """``run_dir`` when given; else the run of ``cfg`` trained first (resumably) in OUTPUT_DIR/run."""
    if run_dir is not None:
        return check_run_dir(run_dir)
    target = cfg.out / TRAINED_HERE
    if not missing_run_files(target):
        print(f"RUN_DIR not set: analysing the run trained here earlier, {target}")
        return target
    print(f"RUN_DIR not set: training one with these parameters first, in {target}")
    try:
        train_job(cfg.with_changes(output_dir=str(target)))
    finally:
        cleanup()
    return target
