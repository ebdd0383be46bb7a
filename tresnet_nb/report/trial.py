"""The notebook's side of a sweep's pruning: each trained epoch's value of the objective goes to the Optuna trial
that the sweep (:mod:`tresnet_nb.sweep`) runs this notebook as, and the trial stops when the study's pruner says so.

The sweep passes the trial to the kernel in ``TRESNET_NB_TRIAL`` (JSON: the study's SQLite storage and name, the
trial's id and number, the per-epoch metric to report and the pruner's settings); the kernel reports to the same
storage, asks the pruner, and when told to stop writes ``OUTPUT_DIR/pruned.json`` and raises
:class:`TrialStopped`, which ends the notebook there. Without the variable nothing happens.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from ..files import atomic_write_text

if TYPE_CHECKING:
    from ..config import RunConfig

TRIAL_ENV = "TRESNET_NB_TRIAL"
PRUNED_FILE = "pruned.json"
_TRIALS: dict[str, Any] = {}  # the trial of this kernel, loaded once


class TrialStopped(RuntimeError):
    """The sweep's pruner stopped this trial after an epoch (recorded in OUTPUT_DIR/pruned.json)."""


def _trial(spec: dict[str, Any]) -> Any:
    key = f"{spec['storage']}#{spec['trial_id']}"
    if key not in _TRIALS:
        import optuna

        pruner = optuna.pruners.MedianPruner(**spec["pruner"])
        study = optuna.load_study(study_name=spec["study"], storage=spec["storage"], pruner=pruner)
        _TRIALS[key] = optuna.trial.Trial(study, spec["trial_id"])
    return _TRIALS[key]


def report_epoch(cfg: RunConfig, values: dict[str, float], epoch: int) -> None:
    """Report epoch ``epoch``'s value of the sweep's per-epoch metric (from ``values``) to the trial this kernel runs
    as, and stop the run when the pruner says so; nothing outside a sweep, or when the metric is not among
    ``values``."""
    raw = os.environ.get(TRIAL_ENV)
    if not raw:
        return
    spec = json.loads(raw)
    value = values.get(spec.get("epoch_metric") or "")
    if value is None:
        return
    trial = _trial(spec)
    trial.report(float(value), epoch)
    if trial.should_prune():
        atomic_write_text(cfg.out / PRUNED_FILE, json.dumps({"epoch": epoch, "value": float(value)}) + "\n")
        raise TrialStopped(
            f"trial {spec['number']} pruned after epoch {epoch}: {spec['epoch_metric']} {value:.4f} is behind the "
            "median of the earlier trials at that epoch (the sweep records it as PRUNED)"
        )
