"""The run record: metrics.json (the contract in DESIGN.md) that every notebook and the train job write, and its
summary line. Imports no torch: the batch runner reads records too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..files import atomic_write, atomic_write_text
from ..paper import transfer
from ..runtime import environment

if TYPE_CHECKING:
    from torch import nn

    from ..config import RunConfig
    from ..model.load import WeightsInfo

REQUIRED_KEYS = (
    "notebook",
    "dataset",
    "arch",
    "weights",
    "pretrained",
    "img_size",
    "epochs",
    "metric_name",
    "metric_value",
    "paper_target",
    "train_seconds",
    "device",
    "versions",
)


def build_metrics(
    cfg: RunConfig,
    weights: WeightsInfo,
    metric_name: str,
    metric_value: float,
    train_seconds: float,
    paper_target: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The metrics.json record of a run of ``cfg`` with ``weights``; ``extra`` adds notebook-specific entries.
    ``fixture_data`` says whether DATA_ROOT is a generated fixture (the smoke preset without DATA_ROOT)."""
    from ..data.fixtures import is_fixture

    env = environment()
    record = {
        "notebook": cfg.notebook,
        "preset": cfg.preset,
        "dataset": cfg.dataset,
        "arch": cfg.arch,
        "weights": weights.requested or "none",
        "weights_source": weights.source,
        "pretrained": bool(weights.pretrained),
        "img_size": cfg.img_size,
        "epochs": cfg.epochs,
        "metric_name": metric_name,
        "metric_value": float(metric_value),
        "paper_target": paper_target,
        "fixture_data": is_fixture(cfg.data_root),
        "train_seconds": round(float(train_seconds), 2),
        "device": env["device"],
        "versions": env["versions"],
        **extra,
    }
    return record


PREDICTIONS = "predictions.npz"  # beside metrics.json: the evaluation's probs and targets the metric came from


def write_metrics(record: dict[str, Any], path: Path | str, evaluation: Any = None) -> Path:
    """Check ``record`` has every contract key and write it to ``path`` as JSON (atomically); with ``evaluation``
    (an :class:`~tresnet_nb.evaluation.scores.Evaluation`), its ``probs`` and ``targets`` go to predictions.npz
    beside it, so that the metric can be recomputed from what the run predicted."""
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"metrics record lacks {missing}; metrics.json must hold {list(REQUIRED_KEYS)}")
    if not isinstance(record["pretrained"], bool):
        raise ValueError(f"'pretrained' must be a bool, not {record['pretrained']!r}")
    path = Path(path)
    if evaluation is not None:
        import numpy as np

        arrays = {"probs": evaluation.probs.numpy(), "targets": evaluation.targets.numpy()}

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file, not a name: np.savez would append .npz to the temporary name
                np.savez(f, **arrays)

        atomic_write(path.with_name(PREDICTIONS), save)
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return path


def summary_line(record: dict[str, Any], wall_seconds: float | None = None) -> str:
    """One line of what the run did: arch, weights (pretrained or not), dataset, size, epochs, precision, metric,
    training time and device, all from its record."""
    pretrained = "pretrained" if record["pretrained"] else "NOT pretrained: random init"
    value = record["metric_value"]
    wall = f", wall {wall_seconds:.0f}s" if wall_seconds is not None else ""
    epochs = f" x{record['epochs']} ep" if record.get("epochs") is not None else ""  # a probe trains no epochs
    dataset = f"{record['dataset']} (FIXTURE data)" if record.get("fixture_data") else record["dataset"]
    precision = f" {record['precision']}" if record.get("precision") else ""  # what the run computed in
    return (
        f"{record['notebook']}: {record['arch']}, weights={record['weights']} ({pretrained}), {dataset} "
        f"@{record['img_size']}px{epochs}{precision}: {record['metric_name']}={value:.4f} "
        f"(train {record['train_seconds']:.0f}s{wall} on {record.get('device', 'this machine')})"
    )


def run_record(
    cfg: RunConfig, model: nn.Module, evaluation: Any, result: Any, learn: Any, **extra: Any
) -> dict[str, Any]:
    """The metrics.json record of a notebook or job run: ``evaluation`` (an :class:`~tresnet_nb.evaluation.scores.
    Evaluation`) gives the dataset's metric and the secondary numbers, ``result`` (a FitResult) the training facts,
    ``learn`` (from :func:`tresnet_nb.build_learner`) its plan's precision and settings; ``extra`` adds entries."""
    from ..model.load import weights_info

    plan = learn.plan
    return build_metrics(
        cfg,
        weights_info(model),
        evaluation.metric_name,
        evaluation.metric_value,
        result.seconds,
        paper_target=transfer(cfg.dataset).target,
        **evaluation.extras(),
        recipe=result.recipe,
        lr=result.lr,
        precision=plan.precision,
        resumed_from=result.resumed_from,
        train_images_per_second=round(result.images_per_second, 1),
        epochs=result.epochs,
        options=plan.settings(),
        max_items=cfg.max_items,
        **extra,
    )
