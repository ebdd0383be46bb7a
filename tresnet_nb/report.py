"""Run artifacts: environment and versions, metrics.json (the contract in DESIGN.md), weights, summary line."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import RunConfig
from .models import WeightsInfo

REQUIRED_KEYS = (
    "notebook", "dataset", "arch", "weights", "pretrained", "img_size", "epochs", "metric_name", "metric_value",
    "paper_target", "train_seconds", "device", "versions",
)  # fmt: skip


def device() -> torch.device:
    """The device runs use: the first CUDA device when there is one, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """Device, library versions and CPU threads, recorded with every run."""
    import fastai
    import timm

    dev = device()
    name = torch.cuda.get_device_name(0) if dev.type == "cuda" else cpu_name()
    return {
        "device": f"{dev.type}: {name}",
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "versions": {"torch": torch.__version__, "timm": timm.__version__, "fastai": fastai.__version__},
    }


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def build_metrics(
    cfg: RunConfig,
    weights: WeightsInfo,
    metric_name: str,
    metric_value: float,
    train_seconds: float,
    paper_target: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The metrics.json record of a run of ``cfg`` with ``weights``; ``extra`` adds notebook-specific entries."""
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
        "train_seconds": round(float(train_seconds), 2),
        "device": env["device"],
        "versions": env["versions"],
        **extra,
    }
    return record


def write_metrics(record: dict[str, Any], path: Path | str) -> Path:
    """Check ``record`` has every contract key and write it to ``path`` as JSON (atomically)."""
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"metrics record lacks {missing}; metrics.json must hold {list(REQUIRED_KEYS)}")
    if not isinstance(record["pretrained"], bool):
        raise ValueError(f"'pretrained' must be a bool, not {record['pretrained']!r}")
    path = Path(path)
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return path


def save_weights(model: nn.Module, path: Path | str) -> Path:
    """Save ``model``'s state dict as safetensors (timm layout, loadable by ``load_model(arch, weights=path)``)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(state, str(tmp))
    os.replace(tmp, path)
    return path


def summary_line(record: dict[str, Any], wall_seconds: float | None = None) -> str:
    """One line: arch, weights (pretrained or not), dataset, metric and wall time."""
    pretrained = "pretrained" if record["pretrained"] else "NOT pretrained: random init"
    value = record["metric_value"]
    wall = f", wall {wall_seconds:.0f}s" if wall_seconds is not None else ""
    epochs = f" x{record['epochs']} ep" if record.get("epochs") is not None else ""  # a probe trains no epochs
    return (
        f"{record['notebook']}: {record['arch']}, weights={record['weights']} ({pretrained}), {record['dataset']} "
        f"@{record['img_size']}px{epochs}: {record['metric_name']}={value:.4f} "
        f"(train {record['train_seconds']:.0f}s{wall})"
    )


def run_record(cfg: RunConfig, model: nn.Module, report: Any, result: Any, learn: Any) -> dict[str, Any]:
    """metrics.json record of a single-label run: top-1 as the metric, plus top-5, macro-F1 and training facts."""
    from .datasets import get_dataset
    from .models import weights_info

    return build_metrics(
        cfg, weights_info(model), "accuracy", report.top1, result.seconds,
        paper_target=get_dataset(cfg.dataset).paper_target, top5=report.top5, macro_f1=report.macro_f1,
        n_eval=report.n_items, recipe=result.recipe, lr=result.lr, precision=getattr(learn, "precision", None),
        train_images_per_second=round(result.images_per_second, 1), epochs=result.epochs,
        options=getattr(learn, "options", None),
    )  # fmt: skip
