"""Hierarchical (semantic) decoding of ImageNet-21K logits, as the authors of ImageNet-21K-P do it.

Ridnik et al., "ImageNet-21K Pretraining for the Masses" (NeurIPS 2021), semantic softmax: every class sits at a
depth of the WordNet hierarchy restricted to the label set (the number of its ancestors that are classes too);
the classes of one depth form a level; the logits of each level get their own softmax, and a level's top class is
reported when its probability exceeds 0.5, giving a chain such as animal > dog > Samoyed.

The tree comes from the authors' file ``imagenet21k_miil_tree.pth`` (``class_list``: synsets in output order;
``class_description``: synset -> name; ``class_tree_list``: per class its own index, then its ancestors' indices,
leaf first), read with ``torch.load(weights_only=True)``, or from the WordNet 3.0 tree this package ships.
As in the authors' ``semantics.py``, a level needs more than one class, and the deepest depth is left out (11
levels for fall11); ``deepest=True`` keeps it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from ..files import cache_dir
from .labels import LabelSet, label_set_for, lemma
from .wordnet import ancestors

TREE_KEYS = ("class_list", "class_description", "class_tree_list")
TREE_FILE_NAME = "imagenet21k_miil_tree.pth"
TREE_URL = (
    "https://miil-public-eu.oss-eu-central-1.aliyuncs.com/model-zoo/ImageNet_21K_P/resources/fall11/"
    "imagenet21k_miil_tree.pth"
)  # where the authors' README points (Alibaba-MIIL/ImageNet21K, visualize_detector.py)
THRESHOLD = 0.5
WORDNET_SOURCE = "WordNet 3.0 hypernyms (first listed), shipped with tresnet_nb"


@dataclass(frozen=True)
class LevelPick:
    """A level's top class for one image."""

    level: int
    index: int  # output index in the head
    synset: str
    name: str
    probability: float


@dataclass(frozen=True)
class Hierarchy:
    """A label set's classes with their ancestors (indices, leaf first) and where that tree came from."""

    class_list: tuple[str, ...]
    names: tuple[str, ...]
    class_tree: tuple[tuple[int, ...], ...]
    source: str

    @cached_property
    def depth(self) -> np.ndarray:
        """Per class, the number of its ancestors among the classes."""
        return np.array([len(t) - 1 for t in self.class_tree])

    def levels(self, deepest: bool = False) -> list[np.ndarray]:
        """Output indices of each level (top level first): the depths holding more than one class; the deepest
        depth only if ``deepest``, as the authors leave it out."""
        counts = Counter(self.depth.tolist())
        last = max(counts) + (1 if deepest else 0)
        return [np.flatnonzero(self.depth == d) for d in range(last) if counts.get(d, 0) > 1]

    def decode(
        self, logits: torch.Tensor, threshold: float = THRESHOLD, deepest: bool = False
    ) -> list[list[LevelPick]]:
        """Per image of ``logits`` (batch, classes), the top class of each level whose softmax probability is
        above ``threshold``, top level first."""
        if logits.ndim != 2 or logits.shape[1] != len(self.class_list):
            raise ValueError(
                f"logits of shape {tuple(logits.shape)} do not fit this hierarchy of {len(self.class_list)} classes; "
                f"pass the (batch, {len(self.class_list)}) output of the 21K head"
            )
        chains: list[list[LevelPick]] = [[] for _ in range(len(logits))]
        for level, indices in enumerate(self.levels(deepest)):
            probs = logits[:, torch.as_tensor(indices)].float().softmax(dim=1)
            top, where = probs.max(dim=1)
            for b in np.flatnonzero((top > threshold).numpy()):
                i = int(indices[int(where[b])])
                chains[b].append(LevelPick(level, i, self.class_list[i], self.names[i], float(top[b])))
        return chains


def wordnet_hierarchy(labels: LabelSet) -> Hierarchy:
    """The hierarchy of ``labels`` (fall11 or winter21) from the WordNet 3.0 tree shipped with the package."""
    if not labels.has_hierarchy:
        raise ValueError(f"The {labels.name} label set has no 21K hierarchy; hierarchical decoding needs a 21K head")
    index = labels.index
    tree = tuple((i, *(index[a] for a in ancestors(s)[1:] if a in index)) for i, s in enumerate(labels.synsets))
    names = tuple(lemma(s).split(", ")[0] for s in labels.synsets)
    return Hierarchy(labels.synsets, names, tree, f"{WORDNET_SOURCE} ({labels.name})")


def _plain(value: object) -> object:
    """Tensors, numpy values and containers of them as plain Python ints, strings, lists and dicts."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _numpy_globals() -> list:
    """What a pickle of numpy arrays and scalars names, allowed on top of weights_only's tensors and containers."""
    from numpy import dtypes

    reconstruct, scalar = np.ndarray.__reduce__(np.zeros(0))[0], np.int64(0).__reduce__()[0]
    kinds = [getattr(dtypes, n) for n in ("Int64DType", "Int32DType", "Float32DType", "Float64DType", "StrDType")]
    return [reconstruct, scalar, np.ndarray, np.dtype, *kinds]


def read_tree_file(path: Path | str) -> dict:
    """The authors' tree file at ``path`` as plain lists and dicts, read with ``torch.load(weights_only=True)``
    (tensors, containers and, if the file holds them, numpy arrays: never arbitrary objects)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Tree file {str(path)!r} not found; the authors' file is at {TREE_URL}")
    with torch.serialization.safe_globals(_numpy_globals()):
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or any(k not in obj for k in TREE_KEYS):
        keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{str(path)!r} is not an ImageNet-21K tree file: it holds {keys}, expected {TREE_KEYS}")
    return {k: _plain(obj[k]) for k in TREE_KEYS}


def tree_file_hierarchy(path: Path | str, labels: LabelSet | None = None) -> Hierarchy:
    """The hierarchy in the authors' tree file at ``path``, checked against ``labels`` when given."""
    tree = read_tree_file(path)
    classes, tree_list = [str(c) for c in tree["class_list"]], tree["class_tree_list"]
    if len(tree_list) != len(classes):
        raise ValueError(f"{str(path)!r}: {len(classes)} classes but {len(tree_list)} class_tree_list entries")
    bad = [i for i, t in enumerate(tree_list) if not t or t[0] != i or any(not 0 <= a < len(classes) for a in t)]
    if bad:
        raise ValueError(
            f"{str(path)!r}: class_tree_list[{bad[0]}] = {tree_list[bad[0]]} does not start with its own index "
            f"{bad[0]} followed by ancestor indices in 0..{len(classes) - 1} ({len(bad)} such entries)"
        )
    if labels is not None and tuple(classes) != labels.synsets:
        differ = sum(a != b for a, b in zip(classes, labels.synsets, strict=False))
        raise ValueError(
            f"{str(path)!r} lists {len(classes)} classes, {differ} of them unlike the head's {labels.name} label set "
            f"({len(labels)} classes); use the tree file of that label set"
        )
    names = tuple(str(tree["class_description"].get(c, c)) for c in classes)
    return Hierarchy(tuple(classes), names, tuple(tuple(int(a) for a in t) for t in tree_list), f"tree file {path}")


def default_tree_file() -> Path:
    """Where :func:`hierarchy_for` looks for the authors' tree file when none is given."""
    return cache_dir() / TREE_FILE_NAME


def hierarchy_for(labels: LabelSet | int, tree_file: Path | str | None = None) -> Hierarchy:
    """The hierarchy of ``labels`` (a label set or a head size): the authors' ``tree_file`` if given (else the one
    in the cache folder, if there), otherwise the shipped WordNet tree; ``.source`` says which."""
    labels = label_set_for(labels) if isinstance(labels, int) else labels
    if tree_file is None and labels.name == "fall11" and default_tree_file().is_file():
        tree_file = default_tree_file()  # the authors' file is for fall11
    if tree_file is not None:
        return tree_file_hierarchy(tree_file, labels)
    return wordnet_hierarchy(labels)


def chain_text(chain: Sequence[LevelPick], probabilities: bool = False) -> str:
    """A decoded chain as 'animal > dog > Samoyed' (with probabilities if asked)."""
    if not chain:
        return "(no level above the threshold)"
    return " > ".join(f"{p.name} ({p.probability:.2f})" if probabilities else p.name for p in chain)
