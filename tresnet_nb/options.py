"""The training options: the switches beside a run's parameters (recipe, augmentation, MixUp/CutMix, clipping,
accumulation, checkpointing, compile, progressive resizing, TTA, balanced sampling, the multi-label loss) as one
frozen, validated :class:`TrainOptions`, a field of :class:`tresnet_nb.RunConfig`. No torch: a configuration is
checked before anything heavy loads."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .data.policy import check_augment
from .recipes import Phase, get_recipe, parse_phases


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


MULTI_LABEL_LOSSES = ("bce", "asl")


@dataclass(frozen=True, kw_only=True)
class TrainOptions:
    """The training switches beside the RunConfig parameters (notebook parameters and ``train -p`` keys, upper case
    there), validated on creation: what :func:`tresnet_nb.build_learner`, :func:`tresnet_nb.fit` and the evaluation
    read from ``cfg.options``. None means "the recipe's"."""

    recipe: str | None = None  # a RECIPES name; None: 'fine_tune_head' for pretrained weights, 'scratch' otherwise
    augment: str | None = None  # a policy of AUGMENTS, or 'as_built' to keep the loaders' own
    erasing: float | None = None  # random-erasing probability
    mixup: float = 0.0  # Beta alpha (0: off)
    cutmix: float = 0.0  # Beta alpha (0: off)
    clip_grad: float | None = None  # clip the global gradient norm to this
    accumulate: int = 1  # step every this many batches (an effective batch of accumulate x BATCH_SIZE)
    grad_checkpointing: bool = False  # recompute block activations in backward (timm's set_grad_checkpointing)
    compile: bool | str = False  # torch.compile the model in place (True, or a backend name)
    progressive: tuple[Phase, ...] | None = None  # progressive resizing: (size, epochs, batch_size) phases
    tta: bool = False  # evaluate with the left-right flip averaged in
    balanced: bool = False  # class-balanced sampling of image-file training sets (long tails, e.g. Herbarium 2020)
    multi_label_loss: str = "bce"  # multi-label runs: 'bce' or 'asl' (the paper's asymmetric loss)

    def __post_init__(self) -> None:
        object.__setattr__(self, "progressive", parse_phases(self.progressive))  # text, lists or dicts: Phases
        if self.recipe is not None:
            get_recipe(self.recipe)
        if self.augment is not None and self.augment != "as_built":
            check_augment(self.augment, 0.0 if self.erasing is None else self.erasing)
        if self.erasing is not None:
            check_augment("flip", self.erasing)
            if self.augment == "as_built" and self.erasing:
                raise ValueError(
                    "ERASING needs a tresnet_nb augmentation policy; with AUGMENT 'as_built' leave it None"
                )
        checks = [
            ("mixup", _is_number(self.mixup) and self.mixup >= 0, "a Beta alpha >= 0 (0: off)"),
            ("cutmix", _is_number(self.cutmix) and self.cutmix >= 0, "a Beta alpha >= 0 (0: off)"),
            (
                "clip_grad",
                self.clip_grad is None or (_is_number(self.clip_grad) and self.clip_grad > 0),
                "a positive gradient norm or None",
            ),
            (
                "accumulate",
                isinstance(self.accumulate, int) and not isinstance(self.accumulate, bool) and self.accumulate >= 1,
                "a whole number of batches >= 1",
            ),
            ("grad_checkpointing", isinstance(self.grad_checkpointing, bool), "True or False"),
            ("compile", isinstance(self.compile, (bool, str)), "True, False or a torch.compile backend name"),
            ("tta", isinstance(self.tta, bool), "True or False"),
            ("balanced", isinstance(self.balanced, bool), "True or False"),
            ("multi_label_loss", self.multi_label_loss in MULTI_LABEL_LOSSES, f"one of {MULTI_LABEL_LOSSES}"),
        ]
        for name, ok, wanted in checks:
            if not ok:
                raise ValueError(f"{name.upper()} must be {wanted}, not {getattr(self, name)!r}")
        if self.grad_checkpointing and self.compile:
            raise ValueError(
                "GRAD_CHECKPOINTING and COMPILE cannot be combined: with torch 2.14 the recomputed BatchNorm counters "
                "of a compiled, checkpointed TResNet fail autograd's in-place check. Choose one (checkpointing saves "
                "memory, compile saves time)."
            )

    @classmethod
    def from_params(cls, **params: Any) -> TrainOptions:
        """The options of notebook parameters (upper or lower case); None means "not set" (the default)."""
        names = {f.name for f in fields(cls)}
        given = {k.lower(): v for k, v in params.items()}
        unknown = sorted(set(given) - names)
        if unknown:
            raise ValueError(f"Unknown training options {unknown}; choose from {sorted(n.upper() for n in names)}")
        return cls(**{k: v for k, v in given.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the progressive phases as ``{size, epochs, batch_size}`` dicts."""
        return asdict(self)


OPTION_NAMES = tuple(f.name for f in fields(TrainOptions))


def split_extra(extra: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``extra`` dict of a run_config.json written before :class:`TrainOptions` as (the options as
    ``TrainOptions.to_dict`` writes them, the notebook's own parameters)."""
    lowered = {k.lower(): v for k, v in extra.items()}
    switches = {k: v for k, v in lowered.items() if k in OPTION_NAMES}
    return TrainOptions.from_params(**switches).to_dict(), {k: v for k, v in lowered.items() if k not in OPTION_NAMES}
