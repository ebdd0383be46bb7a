"""Readable predictions of an ImageNet head: top-k synsets with their lemmas and probabilities, and the hierarchical
chain of the 21K heads; the ``predict`` command. The output says plainly when the weights are random."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import timm.data
import torch
from PIL import Image
from timm.models import get_pretrained_cfg
from torch import nn

from ..data import Dataset
from ..model.hub import WeightsUnavailableError
from ..model.load import WeightsInfo, data_config, load_model, split_arch, weights_info
from ..report.display import finish, show
from ..steps.data import samples
from .hierarchy import THRESHOLD, Hierarchy, LevelPick, chain_text, hierarchy_for
from .labels import LABEL_SETS, LabelSet, label_set, label_set_for, lemma

RANDOM_WARNING = "Weights: RANDOM initialisation: these predictions are meaningless (no pretrained weights loaded)"
DEFAULT_TOP = 5


def load_labelled_model(arch: str, weights: str | Path | None = "auto", label_set_name: str | None = None) -> nn.Module:
    """``arch`` with ``weights`` and its own ImageNet head; random weights get a head of ``label_set_name`` (else
    the size the arch's tag implies, e.g. 11,221 for 'tresnet_m.miil_in21k'). Refuses pretrained heads of another
    size than ``label_set_name``'s."""
    model = load_model(arch, weights, num_classes=None)
    info = weights_info(model)
    if info.pretrained:
        labels = label_set_for(model.num_classes)
        if label_set_name is not None and labels.name != label_set_name:
            raise ValueError(
                f"The weights {info.requested!r} have a {labels.name} head ({model.num_classes} classes), not "
                f"{label_set_name}; use label_set_name={labels.name!r} or weights with a {label_set_name} head"
            )
        return model
    name, tag = split_arch(arch)
    size = LABEL_SETS[label_set_name].size if label_set_name else None
    if size is None and tag is not None:
        size = get_pretrained_cfg(f"{name}.{tag}").num_classes
    if size and size != model.num_classes:
        model.reset_classifier(size)
        model.weights_info = replace(info, num_classes=size)
    label_set_for(model.num_classes)  # a clear error for a head of unknown size
    return model


def _pil(image: Path | str | Image.Image | np.ndarray) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        return Image.fromarray(image).convert("RGB")
    path = Path(image)
    if not path.is_file():
        raise FileNotFoundError(f"Image {str(path)!r} not found")
    with Image.open(path) as f:
        return f.convert("RGB")


def image_batch(model: nn.Module, images: Sequence, img_size: int | None = None) -> torch.Tensor:
    """``images`` (paths, PIL images or uint8 arrays) preprocessed for ``model``'s ImageNet head: pretrained weights
    no one has trained further, as timm evaluates them (their pretrained cfg: EfficientNet-Lite's bicubic resize
    and 0.875 centre crop, say); any other model as :func:`data_config` records (the loaders' bilinear squish,
    timm's crop_mode 'squash' at crop_pct 1.0: no centre crop). ``img_size`` overrides the input size."""
    cfg = data_config(model, img_size)
    info = getattr(model, "weights_info", None)
    if isinstance(info, WeightsInfo) and info.pretrained and info.trained is None:
        cfg = {**timm.data.resolve_model_data_config(model), "input_size": cfg["input_size"]}
    transform = timm.data.create_transform(**cfg, is_training=False)
    return torch.stack([transform(_pil(image)) for image in images])


@dataclass(frozen=True)
class Predictions:
    """Top-k classes (and hierarchical chains) of a batch of images, with the weights' origin."""

    names: tuple[str, ...]
    top: tuple[tuple[tuple[str, str, float], ...], ...]  # per image: (synset, lemma, probability), best first
    chains: tuple[tuple[LevelPick, ...], ...] | None
    hierarchy_source: str | None
    label_set: str
    pretrained: bool

    @property
    def banner(self) -> str:
        return "" if self.pretrained else RANDOM_WARNING

    def table(self) -> pd.DataFrame:
        """One row per image and rank: synset, lemma, probability (and the image's chain)."""
        rows = []
        for i, top in enumerate(self.top):
            for rank, (synset, text, prob) in enumerate(top, start=1):
                row = {"image": self.names[i], "rank": rank, "synset": synset, "lemma": text, "probability": prob}
                if self.chains is not None:
                    row["hierarchy"] = chain_text(self.chains[i]) if rank == 1 else ""
                rows.append(row)
        return pd.DataFrame(rows)

    def text(self) -> str:
        """The predictions as the command prints them, the weights' warning first when they are random."""
        lines = [self.banner] if self.banner else []
        lines.append(f"label set: {self.label_set}" + (f"; hierarchy: {self.hierarchy_source}" if self.chains else ""))
        for i, top in enumerate(self.top):
            lines.append(self.names[i])
            lines += [f"  {prob:8.4f}  {synset}  {text}" for synset, text, prob in top]
            if self.chains is not None:
                lines.append(f"  hierarchy: {chain_text(self.chains[i], probabilities=True)}")
        return "\n".join(lines)


def predict_images(
    model: nn.Module,
    images: Sequence,
    top: int = DEFAULT_TOP,
    hierarchy: Hierarchy | bool = False,
    img_size: int | None = None,
    threshold: float = THRESHOLD,
    names: Sequence[str] | None = None,
    batch_size: int = 16,
) -> Predictions:
    """The ``top`` classes of ``model`` (an ImageNet head) for ``images``, and their hierarchical chains when
    ``hierarchy`` (True: the one :func:`hierarchy_for` finds) with a level ``threshold``."""
    labels = label_set_for(model.num_classes)
    if hierarchy is True:
        hierarchy = hierarchy_for(labels)
    model.eval()
    logits = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = image_batch(model, images[start : start + batch_size], img_size)
            logits.append(model(batch.to(next(model.parameters()).device)).float().cpu())
    logits = torch.cat(logits)
    probs, index = logits.softmax(dim=1).topk(min(top, len(labels)), dim=1)
    tops = tuple(
        tuple((labels.synsets[j], lemma(labels.synsets[j]), float(p)) for p, j in zip(ps, js, strict=True))
        for ps, js in zip(probs.tolist(), index.tolist(), strict=True)
    )
    chains = tuple(tuple(c) for c in hierarchy.decode(logits, threshold)) if hierarchy else None
    info = getattr(model, "weights_info", None)
    names = tuple(names) if names is not None else tuple(_name(image, i) for i, image in enumerate(images))
    return Predictions(
        names, tops, chains, hierarchy.source if hierarchy else None, labels.name, bool(info and info.pretrained)
    )


def _name(image: object, i: int) -> str:
    return str(image) if isinstance(image, (str, Path)) else f"image {i}"


def sample_images(ds: Dataset, split: str, n: int = 8) -> tuple[list[np.ndarray], list[str]]:
    """``n`` images of ``ds``'s ``split`` (one class after another) and a name for each: 'i: its class(es)'."""
    images, labels = samples(ds, split, n)
    names = []
    for i, label in enumerate(labels):
        if not ds[split].labelled:
            names.append(f"{i}: unlabelled")
        elif np.ndim(label):  # multi-label: the labels present
            names.append(f"{i}: " + "+".join(ds.class_names[j] for j in np.flatnonzero(label)))
        else:
            names.append(f"{i}: {ds.class_names[int(label)]}")
    return list(images), names


def plot_predictions(images: Sequence[np.ndarray], predictions: Predictions, path: Path | str | None = None) -> None:
    """The images with their true name, top class and hierarchical chain; saved to ``path``, shown in a notebook."""
    n = len(images)
    cols = min(4, n)
    fig, axes = plt.subplots(-(-n // cols), cols, figsize=(3.6 * cols, 3.4 * -(-n // cols)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, name, top, chain in zip(
        axes.flat, images, predictions.names, predictions.top, predictions.chains or [()] * n, strict=False
    ):
        ax.imshow(image, cmap="gray" if np.ndim(image) == 2 else None)
        synset, text, prob = top[0]
        wrapped = "\n> ".join(p.name for p in chain[-3:]) if chain else ""
        ax.set_title(f"{name}\n{text.split(', ')[0]} {prob:.2f}" + (f"\n{wrapped}" if wrapped else ""), fontsize=8)
    if predictions.banner:
        fig.suptitle("RANDOM weights: meaningless predictions", color="red")
    finish(fig, path)


def show_predictions(predictions: Predictions) -> pd.DataFrame:
    """Print the weights' warning (when random) and the hierarchy used, and show the table."""
    if predictions.banner:
        print(predictions.banner)
    if predictions.hierarchy_source:
        print(f"Hierarchy: {predictions.hierarchy_source}")
    table = predictions.table()
    show(table)
    return table


def predict_command(args: argparse.Namespace) -> int:
    """Run ``predict`` (arguments in tresnet_nb.__main__): print each image's top classes (and chain); exit 2 on a
    bad argument."""
    try:
        model = load_labelled_model(args.arch, args.weights, args.label_set)
        hierarchy: Hierarchy | bool = False
        if args.hierarchy:
            hierarchy = hierarchy_for(_labels(model), args.tree)
        predictions = predict_images(model, args.images, args.top, hierarchy, args.img_size, args.threshold)
    except (ValueError, OSError, KeyError, WeightsUnavailableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(predictions.text())
    return 0


def _labels(model: nn.Module) -> LabelSet:
    labels = label_set_for(model.num_classes)
    if not labels.has_hierarchy:
        raise ValueError(
            f"--hierarchy needs a 21K head; this one has {model.num_classes} classes ({labels.name}). Use e.g. "
            f"--arch tresnet_m.miil_in21k"
        )
    return label_set(labels.name)
