"""Hyper-parameter sweeps: an Optuna study over a notebook's parameters, one papermill run per trial.

``python -m tresnet_nb sweep NOTEBOOK --trials N --space 'LR=loguniform:1e-4:1e-2' --space 'EPOCHS=int:2:6' ...``
checks every key against the notebook's parameters cell before anything runs, then asks Optuna's TPE sampler for
each trial's values and runs the notebook through the batch runner into ``DIR/trials/NNN/``. The objective is the
notebook's ``metric_value`` (metrics.json), maximised or minimised as the dataset's metric says. The study lives in
``DIR/study.db`` (SQLite): a sweep started again with the same ``--out`` goes on where it stopped; a trial that was
running when the sweep was killed is recorded as FAIL (interrupted) and does not count towards N. A trial whose
notebook fails is recorded as FAIL with its error and counts; the sweep goes on.

Pruning: each trained epoch's validation metric (accuracy, or ROC-AUC; macro-F1 is computed only at the end, so
Herbarium 2020 sweeps do not prune) goes from the kernel to the trial (:mod:`tresnet_nb.report.trial`, through the
same SQLite file); Optuna's median pruner stops a trial behind the median of the earlier ones at the same epoch,
recorded as PRUNED. ``DIR/trials.csv``, ``DIR/best.json`` and Optuna's plots (``history.png``, ``importances.png``)
are written as the sweep goes.
"""

from __future__ import annotations

import ast
import csv
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from .config import DEFAULTS
from .data import DATASETS
from .report.trial import PRUNED_FILE, TRIAL_ENV
from .runner import check_run, notebook_parameters, parse_value, run_one

KINDS = ("loguniform", "uniform", "int", "choice")
DIRECTIONS = {"accuracy": "maximize", "macro_f1": "maximize", "mean_roc_auc": "maximize"}
EPOCH_METRICS = {"accuracy": "accuracy", "mean_roc_auc": "roc_auc"}  # the fastai metric recorded every epoch
PRUNER = {"n_startup_trials": 2, "n_warmup_steps": 0}
STUDY = "sweep"


def require_optuna() -> Any:
    """The optuna module, or an ImportError that says how to install it."""
    try:
        import optuna
    except ImportError:
        raise ImportError(
            "A sweep needs optuna, which is not installed. Fix: pip install 'tresnet-nb[sweep]' (or pip install optuna)"
        ) from None
    return optuna


def parse_space(text: str) -> tuple[str, Any]:
    """``'KEY=kind:args'`` -> (KEY, an Optuna distribution): loguniform:LOW:HIGH, uniform:LOW:HIGH, int:LOW:HIGH,
    choice:A,B,C (values parsed like ``-p``)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    key, _, spec = text.partition("=")
    kind, _, args = spec.partition(":")
    if not key or kind not in KINDS or not args:
        raise ValueError(
            f"--space {text!r} is not KEY=kind:args; kind is one of {KINDS}, e.g. 'LR=loguniform:1e-4:1e-2'"
            ", 'EPOCHS=int:2:6', 'RECIPE=choice:fastai,miil'"
        )
    if kind == "choice":
        return key, CategoricalDistribution([parse_value(v) for v in args.split(",")])
    try:
        low, high = (parse_value(v) for v in args.split(":"))
    except ValueError:
        raise ValueError(f"--space {text!r}: {kind} takes LOW:HIGH, e.g. {key}={kind}:1:4") from None
    if not all(isinstance(v, (int, float)) for v in (low, high)) or low > high:
        raise ValueError(f"--space {text!r}: LOW and HIGH must be numbers with LOW <= HIGH")
    if kind == "int":
        if not all(isinstance(v, int) for v in (low, high)):
            raise ValueError(f"--space {text!r}: int takes whole numbers")
        return key, IntDistribution(low, high)
    if kind == "loguniform" and low <= 0:
        raise ValueError(f"--space {text!r}: loguniform needs LOW > 0")
    return key, FloatDistribution(float(low), float(high), log=kind == "loguniform")


def sweep_metric(notebook: Path, params: dict[str, Any]) -> str:
    """The dataset metric the trials report: the DATASET given, else the notebook's default, else RunConfig's."""
    dataset = params.get("DATASET")
    if dataset is None:
        default = notebook_parameters(notebook).get("DATASET", {}).get("default")
        dataset = ast.literal_eval(default) if default else None
    dataset = dataset or DEFAULTS["dataset"]
    if dataset not in DATASETS:
        raise ValueError(f"Unknown dataset {dataset!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[dataset].metric


def check_sweep(notebook: Path, space: dict[str, Any], preset: str | None, params: dict[str, Any], trials: int) -> None:
    """Refuse, before anything runs, what the runner refuses, space keys the notebook lacks or that -p also sets."""
    if trials < 1:
        raise ValueError(f"--trials must be at least 1, not {trials}")
    check_run([notebook], preset, {**params, **dict.fromkeys(space)})
    both = sorted(set(space) & set(params))
    if both:
        raise ValueError(f"{both} are given both with --space and with -p; give each once")


def _open_study(out: Path, notebook: Path, space: dict[str, Any], direction: str) -> Any:
    optuna = require_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=STUDY,
        storage=f"sqlite:///{out.resolve() / 'study.db'}",
        direction=direction,
        load_if_exists=True,
        pruner=optuna.pruners.MedianPruner(**PRUNER),
    )
    if study.direction.name.lower() != direction:
        raise ValueError(
            f"{out} holds a study that would {study.direction.name.lower()}, this sweep {direction}s: "
            "give another --out"
        )
    # seeded by how far the study got, so a resumed sweep does not propose its first trials' values again
    study.sampler = optuna.samplers.TPESampler(seed=len(study.trials))
    described = {k: optuna.distributions.distribution_to_json(d) for k, d in space.items()}
    earlier = study.user_attrs.get("space")
    if earlier is not None and (earlier != described or study.user_attrs.get("notebook") != notebook.name):
        raise ValueError(
            f"{out} holds a sweep of {study.user_attrs.get('notebook')} over {sorted(earlier)}; this one "
            f"is of {notebook.name} over {sorted(space)}: give another --out"
        )
    study.set_user_attr("space", described)
    study.set_user_attr("notebook", notebook.name)
    for stale in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(stale.number, state=optuna.trial.TrialState.FAIL)  # its process was killed mid-trial
        print(f"trial {stale.number} was interrupted (the sweep stopped during it): recorded as FAIL", flush=True)
    return study


def counted(study: Any) -> int:
    """Trials that ran to an end: complete, pruned, or failed in the notebook (not those interrupted by a kill)."""
    from optuna.trial import TrialState

    ended = (TrialState.COMPLETE, TrialState.PRUNED)
    return sum(t.state in ended or "error" in t.user_attrs for t in study.get_trials(deepcopy=False))


def write_results(study: Any, out: Path, metric: str) -> None:
    """``trials.csv`` (a row per trial), ``best.json`` and the history and importance plots, as far as they exist."""
    trials = study.get_trials(deepcopy=False)
    keys = sorted({k for t in trials for k in t.params})
    with open(out / "trials.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["number", "state", metric, *keys, "wall_seconds", "error"])
        for t in trials:
            wall = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
            writer.writerow(
                [
                    t.number,
                    t.state.name,
                    t.value,
                    *(t.params.get(k) for k in keys),
                    None if wall is None else round(wall, 1),
                    t.user_attrs.get("error", ""),
                ]
            )
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    if not complete:
        return
    best = study.best_trial
    (out / "best.json").write_text(
        json.dumps(
            {
                "number": best.number,
                metric: best.value,
                "params": best.params,
                "direction": study.direction.name.lower(),
            },
            indent=2,
        )
        + "\n"
    )
    _plots(study, out, len(complete))


def _plots(study: Any, out: Path, complete: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
        plots = [("history.png", vis.plot_optimization_history)]
        if complete >= 2:  # importances need trials that differ
            plots.append(("importances.png", vis.plot_param_importances))
        for name, plot in plots:
            try:
                axes = plot(study)
            except (ValueError, RuntimeError) as err:  # e.g. every complete trial had the same values
                print(f"{name} not drawn: {err}", flush=True)
                continue
            axes.figure.tight_layout()
            axes.figure.savefig(out / name, dpi=110)
            plt.close(axes.figure)


def _trial_env(study: Any, trial: Any, out: Path, metric: str) -> str:
    return json.dumps(
        {
            "storage": f"sqlite:///{out.resolve() / 'study.db'}",
            "study": STUDY,
            "trial_id": trial._trial_id,
            "number": trial.number,
            "epoch_metric": EPOCH_METRICS.get(metric),
            "pruner": PRUNER,
        }
    )


def run_sweep(
    notebook: Path | str,
    space: dict[str, Any],
    trials: int,
    out: Path | str,
    preset: str | None = None,
    params: dict[str, Any] | None = None,
    kernel_name: str | None = None,
) -> Any:
    """Run (or resume) the sweep of ``notebook`` over ``space`` until ``trials`` trials have ended; returns the
    Optuna study."""
    from optuna.trial import TrialState

    notebook, out, params = Path(notebook), Path(out), dict(params or {})
    check_sweep(notebook, space, preset, params, trials)
    metric = sweep_metric(notebook, params)
    study = _open_study(out, notebook, space, DIRECTIONS[metric])
    print(
        f"sweep of {notebook.name}: {trials} trials, {DIRECTIONS[metric]} {metric}, study {out / 'study.db'}",
        flush=True,
    )
    while counted(study) < trials:
        trial = study.ask(space)
        os.environ[TRIAL_ENV] = _trial_env(study, trial, out, metric)
        try:
            outcome = run_one(
                notebook, out / "trials" / f"{trial.number:03d}", preset, {**params, **trial.params}, kernel_name
            )
        finally:
            os.environ.pop(TRIAL_ENV, None)
        shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
        if outcome.status == "ok":
            study.tell(trial, float(outcome.metrics["metric_value"]))
            said = f"{metric} {outcome.metrics['metric_value']:.4f}"
        elif (outcome.out_dir / PRUNED_FILE).is_file():
            study.tell(trial, state=TrialState.PRUNED)
            said = f"PRUNED after epoch {json.loads((outcome.out_dir / PRUNED_FILE).read_text())['epoch']}"
        else:
            trial.set_user_attr("error", outcome.error)
            study.tell(trial, state=TrialState.FAIL)
            said = f"FAILED: {outcome.error} ({outcome.out_dir / notebook.name})"
        print(f"trial {trial.number}: {shown} -> {said} ({outcome.wall_seconds:.0f}s)", flush=True)
        write_results(study, out, metric)
    write_results(study, out, metric)
    return study


def sweep_command(args: Any) -> int:
    """``python -m tresnet_nb sweep``: 0 when the trials ran, 2 (and the error) for bad input before anything runs."""
    try:
        require_optuna()
        space = dict(parse_space(s) for s in args.space)
        if len(space) < len(args.space):
            raise ValueError(f"a key is given twice in --space {args.space}")
        params = {key: parse_value(value) for key, value in args.parameter}
        out = Path(args.out or Path("runs") / "sweep" / Path(args.notebook).stem)
        study = run_sweep(args.notebook, space, args.trials, out, args.preset, params, args.kernel)
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    best = (
        f"best trial {study.best_trial.number}: {study.best_trial.params} -> {study.best_value:.4f}"
        if done
        else "no complete trial"
    )
    print(f"{best}; trials.csv, best.json and plots in {out}")
    return 0
