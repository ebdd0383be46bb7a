"""Head transplant: a target dataset's classifier built from the rows of the ImageNet-21K head.

Each class matched to a 21K class (or to its nearest ancestor, see :mod:`.matching`) gets a copy of that row's
weights and bias; the others keep the fresh initialisation of timm's ``reset_classifier``. With pretrained 21K
weights the transplanted model is a zero-shot classifier before any training (its logits are the 21K logits of
those rows) and a warm start for fine-tuning.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import pandas as pd
import torch
from torch import nn

from .labels import label_set, label_set_for
from .matching import HeadMatch, match_classes, parse_overrides


@dataclass(frozen=True)
class ClassNames:
    """A dataset's class names as the matcher takes them: names, superclass of each, and context words."""

    names: tuple[str, ...]
    superclasses: Mapping[str, str] | None = None
    context: tuple[str, ...] = ()


def _cifar10() -> ClassNames:
    from ..data.cifar import CIFAR10_NAMES

    return ClassNames(CIFAR10_NAMES)


def _cifar100() -> ClassNames:
    from ..data.cifar import CIFAR100_SUPERCLASSES

    superclass = {c: s for s, members in CIFAR100_SUPERCLASSES.items() for c in members}
    return ClassNames(tuple(sorted(superclass)), superclass)  # the files list the fine names in alphabetical order


def _flowers102() -> ClassNames:
    from ..data.flowers102 import CLASS_NAMES

    return ClassNames(CLASS_NAMES)


def _plant_pathology() -> ClassNames:
    from ..data.plant_pathology import LABEL_COLUMNS

    return ClassNames(LABEL_COLUMNS, context=("plant_disease",))  # see heads21k.kinds.KINDS


def _fashion_mnist() -> ClassNames:
    from ..data.fashion_mnist import CLASS_NAMES

    return ClassNames(CLASS_NAMES)


# The datasets whose class names are known without reading them (the readers' own lists).
DATASET_CLASSES: dict[str, Callable[[], ClassNames]] = {
    "cifar10": _cifar10,
    "cifar100": _cifar100,
    "flowers102": _flowers102,
    "plant_pathology": _plant_pathology,
    "fashion_mnist": _fashion_mnist,
}


def dataset_classes(dataset: str) -> ClassNames:
    """The class names (and CIFAR-100's superclasses) of ``dataset``, one of ``DATASET_CLASSES``."""
    if dataset not in DATASET_CLASSES:
        raise ValueError(
            f"No built-in class list for {dataset!r}; choose one of {sorted(DATASET_CLASSES)}, or pass the names "
            f"read from your data (ds.class_names) to match_classes"
        )
    return DATASET_CLASSES[dataset]()


def match_dataset(
    dataset: str, label_set_name: str = "fall11", overrides: Mapping[str, str | None] | None = None
) -> HeadMatch:
    """:func:`match_classes` for the built-in class list of ``dataset`` against ``label_set_name``."""
    names = dataset_classes(dataset)
    return match_classes(names.names, label_set(label_set_name), names.superclasses, names.context, overrides)


def match_names(
    names: Sequence[str],
    label_set_name: str,
    dataset: str | None = None,
    overrides: Mapping[str, str | None] | str | None = None,
) -> HeadMatch:
    """:func:`match_classes` for ``names`` read from the data (e.g. your folder names), with the superclasses of
    ``dataset`` when its built-in class list is those names; ``overrides`` as a dict or 'name=synset, ...'."""
    known = DATASET_CLASSES[dataset]() if dataset in DATASET_CLASSES else None
    if known is None or tuple(known.names) != tuple(names):
        known = ClassNames(tuple(names))
    return match_classes(
        known.names, label_set(label_set_name), known.superclasses, known.context, parse_overrides(overrides)
    )


def coverage_table(
    datasets: Sequence[str] = ("cifar10", "cifar100", "flowers102", "plant_pathology"),
    label_sets: Sequence[str] = ("fall11", "winter21"),
    extra: Mapping[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """Classes matched, via an ancestor, and random for each of ``datasets`` (and ``extra``: name -> class names,
    e.g. your folder names, matched as :func:`match_names` does) against each of ``label_sets``."""
    rows = []
    for name in label_sets:
        matches = {d: match_dataset(d, name) for d in datasets}
        matches.update({d: match_names(names, name, d) for d, names in (extra or {}).items()})
        rows += [{"dataset": d, "label set": name, **m.coverage()} for d, m in matches.items()]
    return pd.DataFrame(rows)


def transplant_head(model: nn.Module, match: HeadMatch) -> nn.Module:
    """A copy of the 21K ``model`` whose classifier has one row per class of ``match``: the matched 21K row's weights
    and bias where there is one, timm's fresh initialisation elsewhere."""
    labels = label_set_for(model.num_classes)
    if labels.name != match.label_set:
        raise ValueError(
            f"The model's head has {model.num_classes} classes ({labels.name}), but the classes were matched to "
            f"{match.label_set}; match them to {labels.name} (match_classes(names, label_set({labels.name!r})))"
        )
    source = model.get_classifier()
    target = _copy_without_classifier(model)
    target.reset_classifier(len(match.matches))
    fc = target.get_classifier()
    rows = [(i, m.row) for i, m in enumerate(match.matches) if m.row is not None]
    if rows:
        new, old = torch.tensor([i for i, _ in rows]), torch.tensor([r for _, r in rows])
        with torch.no_grad():
            fc.weight[new] = source.weight[old].to(fc.weight.dtype)
            fc.bias[new] = source.bias[old].to(fc.bias.dtype)
    cover = match.coverage()
    info = getattr(model, "weights_info", None)
    if info is not None:
        note = (
            f"head transplanted from the {labels.name} head: {cover['matched']} classes matched, "
            f"{cover['via ancestor']} via an ancestor, {cover['random']} random"
        )
        target.weights_info = replace(
            info, head="transplanted", num_classes=len(match.matches), note="; ".join(filter(None, [info.note, note]))
        )
    return target


def new_head(model: nn.Module, num_classes: int) -> nn.Module:
    """A copy of ``model`` with a freshly initialised head of ``num_classes`` (the usual transfer start)."""
    target = _copy_without_classifier(model)
    target.reset_classifier(num_classes)
    info = getattr(model, "weights_info", None)
    if info is not None:
        target.weights_info = replace(info, head="new", num_classes=num_classes)
    return target


def _copy_without_classifier(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with an empty classifier: the 21K one (23M parameters for TResNet-M) is not copied."""
    name = model.pretrained_cfg.get("classifier", "head.fc")
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name)
    classifier = getattr(parent, attr)
    setattr(parent, attr, nn.Identity())
    try:
        return copy.deepcopy(model)
    finally:
        setattr(parent, attr, classifier)
