"""The label sets of ImageNet heads: synsets in output order, with their WordNet lemmas and definitions.

fall11 (11,221 classes) is the ImageNet-21K-P set of the released ``*.miil_in21k`` weights, which timm names
'imagenet-21k-miil'; winter21 (10,450) is the same processing of the winter 2021 ImageNet release, whose synset
list timm ships (``timm/data/_info/imagenet21k_miil_w21_synsets.txt``) without a subset name. ImageNet-1K is here
for readable predictions of the 1K heads. Lemmas and definitions come from timm's ``ImageNetInfo``.
"""

from __future__ import annotations

import pkgutil
from dataclasses import dataclass
from functools import cache, cached_property, lru_cache

from timm.data import ImageNetInfo


@dataclass(frozen=True)
class LabelSetSpec:
    """One label set: its size, where timm keeps its synsets, and whether it has a 21K hierarchy."""

    size: int
    timm_subset: str | None  # an ImageNetInfo subset name, or None when timm only ships the file
    synset_file: str  # in timm/data/_info
    description: str
    hierarchy: bool


LABEL_SETS: dict[str, LabelSetSpec] = {
    "fall11": LabelSetSpec(
        11221,
        "imagenet-21k-miil",
        "imagenet21k_miil_synsets.txt",
        "ImageNet-21K-P fall11 (the released *.miil_in21k heads)",
        True,
    ),
    "winter21": LabelSetSpec(10450, None, "imagenet21k_miil_w21_synsets.txt", "ImageNet-21K-P winter21", True),
    "imagenet1k": LabelSetSpec(1000, "imagenet-1k", "imagenet_synsets.txt", "ImageNet-1K", False),
}


@lru_cache(maxsize=1)
def _info() -> ImageNetInfo:
    # any subset reads the same lemma and definition files, which cover all 21,843 ImageNet synsets
    return ImageNetInfo("imagenet-1k")


def lemma(synset: str) -> str:
    """WordNet lemmas of ``synset`` ('n02111889' -> 'Samoyed, Samoyede'): timm's, else the shipped tree's for the
    ancestors outside ImageNet, else the id itself."""
    try:
        return _info().label_name_to_description(synset)
    except KeyError:
        from .wordnet import extra_lemmas

        return extra_lemmas(synset) or synset


def definition(synset: str) -> str:
    """WordNet definition (gloss) of ``synset``: timm's, else the shipped tree's; '' when neither has one."""
    try:
        detailed = _info().label_name_to_description(synset, detailed=True)
    except KeyError:
        from .wordnet import gloss

        return gloss(synset) or ""
    return detailed[len(lemma(synset)) + 2 :]  # timm writes f"{lemmas}: {definition}"


def has_lemma(synset: str) -> bool:
    """Whether timm knows the lemmas of ``synset``."""
    try:
        _info().label_name_to_description(synset)
    except KeyError:
        return False
    return True


@dataclass(frozen=True)
class LabelSet:
    """The classes of a head, in output order: ``synsets[i]`` is output ``i``."""

    name: str
    synsets: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.synsets)

    @cached_property
    def index(self) -> dict[str, int]:
        """Synset -> output index."""
        return {s: i for i, s in enumerate(self.synsets)}

    @property
    def lemmas(self) -> tuple[str, ...]:
        return tuple(lemma(s) for s in self.synsets)

    @property
    def definitions(self) -> tuple[str, ...]:
        return tuple(definition(s) for s in self.synsets)

    @property
    def has_hierarchy(self) -> bool:
        return LABEL_SETS[self.name].hierarchy


@cache
def label_set(name: str) -> LabelSet:
    """The label set called ``name`` (one of ``LABEL_SETS``)."""
    if name not in LABEL_SETS:
        raise ValueError(f"Unknown label set {name!r}; choose one of {sorted(LABEL_SETS)}")
    spec = LABEL_SETS[name]
    if spec.timm_subset is not None:
        synsets = ImageNetInfo(spec.timm_subset).label_names()
    else:
        synsets = pkgutil.get_data("timm.data", f"_info/{spec.synset_file}").decode().split()
    if len(synsets) != spec.size:
        raise RuntimeError(f"timm's {spec.synset_file} lists {len(synsets)} synsets, expected {spec.size}")
    return LabelSet(name, tuple(synsets))


def label_set_for(num_classes: int) -> LabelSet:
    """The label set of a head with ``num_classes`` outputs; ValueError naming the sizes known."""
    for name, spec in LABEL_SETS.items():
        if spec.size == num_classes:
            return label_set(name)
    sizes = ", ".join(f"{spec.size} ({name})" for name, spec in LABEL_SETS.items())
    raise ValueError(
        f"A head of {num_classes} classes has no known ImageNet label set; known sizes: {sizes}. Fix: load the "
        f"ImageNet-21K weights with their own head, e.g. load_model('tresnet_m.miil_in21k', num_classes=None)."
    )
