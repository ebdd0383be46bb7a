"""Your model in use: a finished run, a published folder or a hub repository opened as a ready model with its class
names, image size, preprocessing and calibration temperature, and its predictions for image files (``tnb.load_run``,
``python -m tresnet_nb predict --run RUN_DIR IMAGES...``).

Image files are decoded and resized as the image-file loaders resize them for validation
(:func:`tresnet_nb.data.highres.decode_resized`: the whole image squished to the run's size, bilinear), arrays as the
in-memory loaders resize them (:func:`tresnet_nb.data.arrays.to_tensor_images`), then scaled to [0, 1] and normalised
with the run's mean and std; ``transform`` is the same preprocessing through timm's
``create_transform`` (what the model card gives), for anyone holding a PIL image.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import timm.data
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from ..data.arrays import to_tensor_images
from ..data.folder import IMAGE_SUFFIXES
from ..data.highres import RESAMPLE, decode_resized
from ..model.load import TEMPERATURE_ATTR, adopt_trained, data_config, load_model, trained_with_from_run_dir
from ..model.weights import TrainedWith, read_trained_with
from .publish import HUB_PREFIX, temperature

LOCAL_PREFIX = "local-dir:"
PUBLISHED_FILES = ("config.json", "model.safetensors")
MULTI_LABEL = "multi-label"


class RunOpenError(ValueError):
    """A run, folder or file that cannot be opened as a trained model; the message names it and the fix."""


@dataclass
class RunModel:
    """A trained model ready to predict: ``model`` (eval mode), the class names in output order, the task, the image
    size and preprocessing it was trained with, and the calibration temperature the probabilities are scaled by."""

    model: nn.Module
    trained: TrainedWith
    source: str
    record: dict[str, Any] | None = None  # the run's metrics.json, when opened from a run folder

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.trained.class_names

    @property
    def img_size(self) -> int:
        return self.trained.img_size

    @property
    def multi_label(self) -> bool:
        return self.trained.task == MULTI_LABEL

    @property
    def temperature(self) -> float | tuple[float, ...] | None:
        return getattr(self.model, TEMPERATURE_ATTR, None)

    @property
    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """The preprocessing as a timm/torchvision transform of a PIL image (what the model card's snippet builds)."""
        return timm.data.create_transform(**data_config(self.model), is_training=False)

    def batch(self, images: Sequence[Path | str | Image.Image | np.ndarray]) -> torch.Tensor:
        """``images`` (paths, PIL images or HxWx3 / HxW uint8 arrays) as one normalised float batch: files and PIL
        images resized as the image-file loaders resize, arrays as the in-memory loaders do."""
        x = torch.stack([_resized(image, self.img_size) for image in images]).float().div_(255)
        mean = torch.tensor(self.trained.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.trained.std).view(1, 3, 1, 1)
        return (x - mean) / std

    def probabilities(
        self, images: Sequence, tta: bool = False, batch_size: int = 32, progress: bool = False
    ) -> np.ndarray:
        """Probabilities (softmax; sigmoid for multi-label) of ``images``, the logits divided by the temperature
        first; ``tta`` averages them with those of the left-right flipped images; ``progress`` shows a bar."""
        from tqdm.auto import tqdm

        device = next(self.model.parameters()).device
        t = self.temperature
        scale = torch.as_tensor(1.0 if t is None else t, dtype=torch.float32)
        out = []
        self.model.eval()
        with torch.inference_mode():
            starts = range(0, len(images), batch_size)
            for start in tqdm(starts, desc="predict", unit="batch", disable=not progress or len(starts) < 2):
                x = self.batch(images[start : start + batch_size]).to(device)
                views = (x, x.flip(-1)) if tta else (x,)
                probs = [self._activate(self.model(v).float().cpu() / scale) for v in views]
                out.append(torch.stack(probs).mean(0))
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.class_names)), np.float32)

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.sigmoid() if self.multi_label else logits.softmax(-1)

    def predict(
        self,
        images: Sequence,
        top: int = 5,
        tta: bool = False,
        threshold: float = 0.5,
        names: Sequence[str] | None = None,
        progress: bool = False,
    ) -> pd.DataFrame:
        """One row per image: ``file``, ``label`` (top-1; multi-label: every label over ``threshold``, joined by
        '|'), ``probability`` (the top-1's), then the ``top`` labels and probabilities."""
        probs = self.probabilities(images, tta, progress=progress)
        names = [str(n) for n in names] if names is not None else [_name(im, i) for i, im in enumerate(images)]
        k = max(1, min(top, len(self.class_names)))
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        rows = []
        for name, p, idx in zip(names, probs, order, strict=True):
            if self.multi_label:
                label = "|".join(self.class_names[j] for j in np.flatnonzero(p > threshold))
            else:
                label = self.class_names[idx[0]]
            row: dict[str, Any] = {"file": name, "label": label, "probability": round(float(p[idx[0]]), 6)}
            for rank, j in enumerate(idx, start=1):
                row[f"label_{rank}"] = self.class_names[j]
                row[f"probability_{rank}"] = round(float(p[j]), 6)
            rows.append(row)
        return pd.DataFrame(rows)


def _name(image: object, i: int) -> str:
    return str(image) if isinstance(image, (str, Path)) else f"image {i}"


def _resized(image: Path | str | Image.Image | np.ndarray, size: int) -> torch.Tensor:
    """One image as a uint8 3 x size x size tensor."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(f"An image array must be uint8 HxW or HxWx3, not {image.dtype} {image.shape}")
        return to_tensor_images(image[None], size)[0]
    if isinstance(image, (str, Path)):
        img = decode_resized(Path(image), size)
    else:
        img = image.convert("RGB").resize((size, size), RESAMPLE, reducing_gap=None)
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)


def image_files(inputs: Sequence[str | Path]) -> list[Path]:
    """The image files named in ``inputs`` (files, and the images under folders, sorted), each checked to open as
    an image before anything runs; a missing path or a file that is not an image raises naming it."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not inside:
                raise RunOpenError(f"Folder {str(path)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            found += inside
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{str(path)!r} does not exist; give image files or folders of images")
    for path in found:
        try:
            with Image.open(path) as img:
                img.size  # noqa: B018  (reads the header only)
        except (UnidentifiedImageError, OSError) as err:
            raise RunOpenError(
                f"{str(path)!r} is not an image PIL can read ({type(err).__name__}); remove it or give only images"
            ) from None
    return found


def _hub_folder(repo_id: str) -> Path:
    """A local copy of the published files of the hub repository ``repo_id`` (the Hugging Face cache)."""
    from huggingface_hub import hf_hub_download

    paths = [Path(hf_hub_download(repo_id, name)) for name in PUBLISHED_FILES]
    return paths[0].parent


def _published(folder: Path) -> TrainedWith:
    """How the model in a published ``folder`` was trained, from its config.json (timm's hub layout)."""
    config = json.loads((folder / "config.json").read_text())
    pre = config.get("pretrained_cfg") or {}
    ours = config.get("tresnet_nb") or {}
    try:
        return TrainedWith.from_dict(
            {
                "arch": config["architecture"],
                "tag": pre.get("tag"),
                "img_size": pre["input_size"][-1],
                "class_names": config["label_names"],
                "task": ours.get("task", "single-label"),
                "mean": pre["mean"],
                "std": pre["std"],
                "interpolation": pre["interpolation"],
                "pretrained": ours.get("pretrained", True),
                "weights": ours.get("weights", "unknown"),
                "temperature": None,
            },
            source=str(folder / "config.json"),
        )
    except (KeyError, IndexError) as err:
        raise RunOpenError(f"{folder / 'config.json'} lacks {err}; publish the run again") from None


def _class_names_from_dataset(run_dir: Path) -> tuple[str, ...]:
    from ..config import RunConfig
    from .publish import class_names

    cfg = RunConfig.load(run_dir / "run_config.json")
    record = json.loads((run_dir / "metrics.json").read_text())
    return tuple(class_names(cfg, record))


def load_run(source: Path | str, device: torch.device | str | None = None) -> RunModel:
    """The trained model of ``source``: a run folder (OUTPUT_DIR of a notebook or the train job), a published folder,
    ``local-dir:DIR``, ``hf-hub:USER/REPO`` or a model.safetensors this library wrote; on ``device`` (default CPU).
    The run's calibration.json, when notebook 09 wrote one into the run folder, sets the temperature."""
    text = str(source)
    if text.startswith(HUB_PREFIX):
        folder = _hub_folder(text[len(HUB_PREFIX) :])
    else:
        folder = Path(text[len(LOCAL_PREFIX) :] if text.startswith(LOCAL_PREFIX) else text)
    weights = folder if folder.is_file() else folder / "model.safetensors"
    if not weights.is_file():
        raise RunOpenError(
            f"{text!r} holds no model.safetensors: give the OUTPUT_DIR of a finished run, a folder written by "
            f"`python -m tresnet_nb publish`, or that file itself"
        )
    run_dir = weights.parent
    trained = read_trained_with(weights) or trained_with_from_run_dir(weights)
    if trained is None and (run_dir / "config.json").is_file():
        trained = _published(run_dir)
    if trained is None:
        raise RunOpenError(
            f"{str(weights)!r} does not say how it was trained (no metadata, no run_config.json or config.json "
            f"beside it); load it with tnb.load_model(ARCH, {str(weights)!r}, num_classes=N) instead"
        )
    if not trained.class_names and (run_dir / "run_config.json").is_file():
        trained = replace(trained, class_names=_class_names_from_dataset(run_dir))
    model = load_model(trained.arch + (f".{trained.tag}" if trained.tag else ""), weights)
    adopt_trained(model, trained)  # also for a published folder whose file carries no metadata
    record = None
    if (run_dir / "metrics.json").is_file():
        record = json.loads((run_dir / "metrics.json").read_text())
        t = temperature(run_dir, record)  # notebook 09's calibration.json, when it was written here
        if t is not None:
            setattr(model, TEMPERATURE_ATTR, t)
    if len(trained.class_names) != model.num_classes:
        raise RunOpenError(f"{text!r}: {len(trained.class_names)} class names for {model.num_classes} outputs")
    return RunModel(model.to(device or "cpu").eval(), trained, text, record)


def predict_run_command(args: Any) -> int:
    """``python -m tresnet_nb predict --run RUN_DIR | --model DIR IMAGE_OR_FOLDER... [--top K] [--csv FILE] [--tta]
    [--threshold P]``: prints a table (and writes the CSV); 2 with the error for bad input."""
    import sys

    from ..files import atomic_write_text
    from ..runtime import device as default_device

    source = args.run or args.model or args.weights
    try:
        run = load_run(source, default_device())
        images = image_files(args.images)
    except (RunOpenError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    t = run.temperature
    print(
        f"{run.source}: {run.trained.arch}, {len(run.class_names)} classes ({run.trained.task}), "
        f"{run.img_size} px, temperature {'none' if t is None else t}; {len(images)} images",
        flush=True,
    )
    table = run.predict(images, top=args.top, tta=args.tta, threshold=args.threshold, progress=True)
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.max_colwidth", 60):
        print(table.to_string(index=False))
    if args.csv:
        atomic_write_text(Path(args.csv), table.to_csv(index=False))
        print(f"wrote {args.csv} ({len(table)} rows)")
    return 0
