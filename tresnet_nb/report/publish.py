"""Publishing a run in the Hugging Face / timm layout: ``config.json`` (architecture, classes, label names and the
preprocessing as trained), ``model.safetensors`` and a ``README.md`` model card, in a folder that
``timm.create_model("local-dir:DIR", pretrained=True)`` loads, or uploaded to the hub as ``hf-hub:USER/REPO``.

The config follows what timm's ``load_model_config_from_path`` reads (timm/models/_hub.py): ``architecture``,
``num_classes``, ``label_names`` and a ``pretrained_cfg`` whose input size, interpolation, crop and mean/std are the
ones the run trained with (a bilinear squish, no crop: :data:`tresnet_nb.model.load.LOADER_PREPROCESSING`), so that
``timm.data.resolve_data_config(model=...)`` rebuilds the run's own transform.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..files import atomic_write_text
from .card import model_card

HUB_PREFIX = "hf-hub:"
RUN_FILES = ("run_config.json", "metrics.json", "model.safetensors")


class PublishError(ValueError):
    """A run folder that cannot be published, or a destination that cannot be reached; the message has the fix."""


def missing_run_files(run_dir: Path) -> list[str]:
    """The files of a finished run (RUN_FILES) that ``run_dir`` lacks."""
    return [name for name in RUN_FILES if not (Path(run_dir) / name).is_file()]


def read_run(run_dir: Path | str) -> tuple[RunConfig, dict[str, Any]]:
    """The RunConfig and metrics record of the finished run in ``run_dir``; raises :class:`PublishError` naming
    every file a publishable run lacks."""
    run_dir = Path(run_dir)
    missing = missing_run_files(run_dir)
    if missing:
        raise PublishError(
            f"{str(run_dir)!r} is not a finished run folder: it lacks {missing}. Fix: give the OUTPUT_DIR of a run "
            "that ran to its end (the notebook's Artifacts cell, or `python -m tresnet_nb train`, writes them)"
        )
    return RunConfig.load(run_dir / "run_config.json"), json.loads((run_dir / "metrics.json").read_text())


def class_names(cfg: RunConfig, record: dict[str, Any]) -> list[str]:
    """The run's class names in output order: from its record, else read from its dataset."""
    if record.get("class_names"):
        return [str(n) for n in record["class_names"]]
    from ..data import get_dataset

    return [str(n) for n in get_dataset(cfg.dataset).read(cfg.data_root).class_names]


def temperature(run_dir: Path, record: dict[str, Any]) -> float | None:
    """The calibration temperature saved with the run (metrics.json, else calibration.json beside it), or None."""
    if record.get("temperature") is not None:
        return float(record["temperature"])
    calibration = run_dir / "calibration.json"
    if calibration.is_file():
        value = json.loads(calibration.read_text()).get("temperature")
        return None if value is None else float(value)
    return None


def hub_config(cfg: RunConfig, record: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The ``config.json`` of timm's hub layout for the run: what ``local-dir:`` and ``hf-hub:`` loading reads."""
    import timm

    from ..model.archs import split_arch
    from ..model.load import data_config

    name, tag = split_arch(cfg.arch)
    model = timm.create_model(f"{name}.{tag}" if tag else name, pretrained=False, num_classes=len(names))
    pre = data_config(model, cfg.img_size)  # the mean/std of the timm cfg, resized as the loaders resize
    pretrained_cfg = {
        "tag": tag,
        "num_classes": len(names),
        "input_size": list(pre["input_size"]),
        "fixed_input_size": False,
        "interpolation": pre["interpolation"],
        "crop_pct": pre["crop_pct"],
        "crop_mode": pre["crop_mode"],
        "mean": list(pre["mean"]),
        "std": list(pre["std"]),
        "first_conv": model.pretrained_cfg.get("first_conv"),
        "classifier": model.pretrained_cfg.get("classifier"),
    }
    options = record.get("options") or {}
    return {
        "architecture": name,
        "num_classes": len(names),
        "num_features": int(model.num_features),
        "label_names": names,
        "pretrained_cfg": {k: v for k, v in pretrained_cfg.items() if v is not None},
        # what timm does not read: how the run was trained (tnb.load_run and the card read it)
        "tresnet_nb": {
            "task": options.get("task") or "single-label",
            "pretrained": bool(record["pretrained"]),
            "weights": str(record.get("weights", "none")),
        },
    }


def write_folder(run_dir: Path | str, folder: Path | str) -> Path:
    """Write the run in ``run_dir`` to ``folder`` in the Hugging Face / timm layout; returns ``folder``."""
    run_dir, folder = Path(run_dir), Path(folder)
    cfg, record = read_run(run_dir)
    names = class_names(cfg, record)
    config = hub_config(cfg, record, names)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run_dir / "model.safetensors", folder / "model.safetensors")  # the run's bytes: its logits
    atomic_write_text(folder / "config.json", json.dumps(config, indent=2) + "\n")
    card = model_card(cfg, record, config, temperature(run_dir, record))
    atomic_write_text(folder / "README.md", card)
    return folder


def hub_endpoint() -> str:
    """The hub the upload goes to: HF_ENDPOINT when set, else huggingface_hub's default."""
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def upload(run_dir: Path | str, repo_id: str) -> str:
    """Write the run to a temporary folder and upload it to the hub repository ``repo_id`` (created if absent);
    fails at once, with the fix, when the hub cannot be reached."""
    from ..runtime import host_reachable

    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise PublishError(f"{HUB_PREFIX}{repo_id} is not a hub repository; write it as {HUB_PREFIX}USER/REPO")
    endpoint = hub_endpoint()
    read_run(run_dir)  # a bad run folder is said before the network is tried
    if not host_reachable(endpoint):
        raise PublishError(
            f"The Hugging Face hub at {endpoint} cannot be reached from this machine, so {repo_id} was not "
            f"uploaded. Fix: publish to a folder (python -m tresnet_nb publish {run_dir} --to DIR) and upload that "
            f"folder where the hub is reachable (hf upload {repo_id} DIR), or set HF_ENDPOINT to a reachable hub"
        )
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint)
    with tempfile.TemporaryDirectory(prefix="tresnet_nb-publish-") as tmp:
        folder = write_folder(run_dir, tmp)
        api.create_repo(repo_id, exist_ok=True)
        config = json.loads((folder / "config.json").read_text())
        how = "fine-tuned" if config["tresnet_nb"]["pretrained"] else "trained from random initialisation"
        message = f"Upload {config['architecture']} {how} with tresnet-nb"
        api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=message)
    return f"{endpoint}/{repo_id}"


def publish(run_dir: Path | str, to: str) -> str:
    """Publish the run in ``run_dir`` to ``to``: a folder, or ``hf-hub:USER/REPO``; returns where it went."""
    if to.startswith(HUB_PREFIX):
        return upload(run_dir, to[len(HUB_PREFIX) :])
    return str(write_folder(run_dir, to))


def publish_command(run_dir: str, to: str) -> int:
    """``python -m tresnet_nb publish RUN_DIR --to DIR|hf-hub:USER/REPO``: 0 when published, 2 with the error."""
    try:
        where = publish(run_dir, to)
    except (PublishError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"published {run_dir} to {where}")
    if not to.startswith(HUB_PREFIX):
        print(f'load it with timm.create_model("local-dir:{Path(where).resolve()}", pretrained=True)')
    return 0


def publish_hint(out_dir: Path | str) -> str:
    """The one command that publishes the run in ``out_dir`` (what the notebooks print at their end)."""
    return f"python -m tresnet_nb publish {out_dir} --to {Path(out_dir) / 'published'}"
