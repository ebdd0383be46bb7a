"""The candidates of a backbone comparison and its plan: which architectures with which weights, each one's run
folder and its training budget (epochs, or minutes on this device turned into epochs before training starts).

Every candidate is checked when the plan is made (its architecture and tag against timm, its weights file, its
configuration), so that a typo in the fourth candidate stops the comparison at once instead of after three trainings.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import DEFAULTS, PRESETS, RunConfig
from ..hints import did_you_mean
from ..options import OPTION_NAMES

NOTEBOOK = "10_choose_backbone"
OWN_PARAMS = ("CANDIDATES", "MINUTES")  # the comparison's parameters beside RunConfig's
# The paper's comparison set (Table 1 of the TResNet paper: TResNet-M against ResNet50, ResNet50-D, ResNeXt50,
# EfficientNet-B1, SE-ResNeXt50 and MixNet-L), timm names. All have timm weights; "paper" in CANDIDATES stands for
# the first DEFAULT_COUNT: TResNet-M, the reference ResNet50, ResNet50-D (the closest to TResNet-M in the paper's
# speed) and EfficientNet-B1 (the FLOP-lean family).
PAPER_SET = (
    "tresnet_m",
    "resnet50",
    "resnet50d",
    "efficientnet_b1",
    "resnext50_32x4d",
    "seresnext50_32x4d",
    "mixnet_l",
)
DEFAULT_COUNT = 4
PAPER_TOKEN = "paper"
ONE_POINT = 0.01  # "within one point": one percentage point of the metric's 0..1 scale


@dataclass(frozen=True)
class Candidate:
    """One entry of CANDIDATES: a timm architecture (optionally ``name.tag``) and its weights, as the WEIGHTS
    parameter takes them ('auto', 'none', a tag or a file); ``weights=None``: the run's WEIGHTS."""

    arch: str
    weights: str | None = None

    @property
    def label(self) -> str:
        """The entry as the user wrote it (a file by its name only)."""
        if self.weights is None:
            return self.arch
        return f"{self.arch}={Path(self.weights).name if _is_path(self.weights) else self.weights}"

    def folder_name(self, weights: str) -> str:
        """The run folder's name for these weights: architecture and weights, readable and safe on any file system."""
        shown = Path(weights).stem if _is_path(weights) else weights
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{self.arch}-{shown}")


def _is_path(weights: str) -> bool:
    return "/" in weights or "\\" in weights or weights.endswith((".pth", ".pt", ".bin", ".safetensors"))


def _entries(value: Any) -> list[str]:
    """CANDIDATES as a list of strings: a list or tuple, a JSON list, or a comma-separated string."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(f"CANDIDATES {value!r} starts like a JSON list but is not one ({err.msg})") from None
        else:
            value = text.split(",")
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(
            f"CANDIDATES must be a list of strings or a comma-separated string, not {value!r}; e.g. "
            "['tresnet_m', 'resnet50', 'tf_efficientnet_lite0=/path/w.pth'] or 'tresnet_m,resnet50'"
        )
    return [v.strip() for v in value]


def parse_candidates(value: Any = None) -> tuple[Candidate, ...]:
    """The candidates of CANDIDATES: None means the paper's comparison set (its first four, see
    :data:`PAPER_SET`); each entry is ``ARCH``, ``ARCH.tag`` or ``ARCH=WEIGHTS``, and ``"paper"`` among them stands
    for that set, so ``"paper,tf_efficientnet_lite0=w.pth"`` adds one of yours. Architectures and tags are checked
    against timm; a weights file must exist."""
    from ..model.archs import split_arch

    entries = [PAPER_TOKEN] if value is None else _entries(value)
    out: list[Candidate] = []
    for entry in entries:
        if not entry:
            raise ValueError(f"CANDIDATES {value!r} has an empty entry; separate the candidates with single commas")
        if entry == PAPER_TOKEN:
            out += [Candidate(arch) for arch in PAPER_SET[:DEFAULT_COUNT]]
            continue
        arch, sep, weights = (part.strip() for part in entry.partition("="))
        if sep and not weights:
            raise ValueError(f"Candidate {entry!r} has '=' but no weights; write ARCH=WEIGHTS or ARCH alone")
        try:
            split_arch(arch)
        except ValueError as err:
            raise ValueError(f"Candidate {entry!r}: {err}") from None
        if sep and _is_path(weights) and not Path(weights).expanduser().is_file():
            raise ValueError(f"Candidate {entry!r}: no weights file {weights!r}; give an existing .pth/.safetensors")
        out.append(Candidate(arch, str(Path(weights).expanduser()) if sep and _is_path(weights) else weights or None))
    seen: set[tuple[str, str | None]] = set()
    for c in out:
        if (c.arch, c.weights) in seen:
            raise ValueError(f"Candidate {c.label!r} is given twice in CANDIDATES {value!r}; give each once")
        seen.add((c.arch, c.weights))
    return tuple(out)


@dataclass(frozen=True)
class Budget:
    """A candidate's training budget: ``epochs``, or ``minutes`` of training on this device, turned into epochs
    from the probe's img/s once (recorded in the comparison's budget.json, so a rerun trains the same)."""

    epochs: int | None = None
    minutes: float | None = None

    def __post_init__(self) -> None:
        if (self.epochs is None) == (self.minutes is None):
            raise ValueError("A comparison's budget is EPOCHS or MINUTES per candidate: give exactly one")
        if self.minutes is not None and (
            isinstance(self.minutes, bool) or not isinstance(self.minutes, (int, float)) or self.minutes <= 0
        ):
            raise ValueError(f"MINUTES must be a positive number of minutes per candidate, not {self.minutes!r}")

    def text(self) -> str:
        if self.minutes is None:
            return f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}"
        return f"{self.minutes:g} minute{'s' if self.minutes != 1 else ''}"


def budget_from(epochs: int | None, minutes: float | None, preset_epochs: int) -> Budget:
    """The budget of a notebook's EPOCHS and MINUTES (None: not set): MINUTES when given (EPOCHS too is refused),
    else EPOCHS, else the preset's epochs."""
    if epochs is not None and minutes is not None:
        raise ValueError(
            f"EPOCHS {epochs!r} and MINUTES {minutes!r} are both set; a candidate's budget is one of them: leave the "
            "other None"
        )
    return Budget(minutes=minutes) if minutes is not None else Budget(epochs=epochs or preset_epochs)


def epochs_for(minutes: float, n_train: int, n_eval: int, train_img_s: float, infer_img_s: float) -> tuple[int, float]:
    """Epochs that fit ``minutes`` of training at the probe's speeds (an epoch: ``n_train`` images trained and
    ``n_eval`` evaluated), at least one, and the estimated seconds of one epoch. The probe times the model on
    tensors already in memory, so the real epoch is somewhat longer (decoding, augmentation): the run records both."""
    epoch_s = n_train / train_img_s + n_eval / infer_img_s
    return max(1, math.floor(minutes * 60 / epoch_s)), epoch_s


@dataclass(frozen=True)
class ComparisonPlan:
    """What a comparison runs: the base configuration (data, size, batch, seed, precision, OUTPUT_DIR), the
    candidates and the budget."""

    cfg: RunConfig
    candidates: tuple[Candidate, ...]
    budget: Budget

    def weights_of(self, candidate: Candidate) -> str:
        return candidate.weights if candidate.weights is not None else self.cfg.weights

    def run_dir(self, candidate: Candidate) -> Path:
        return self.cfg.out / "candidates" / candidate.folder_name(self.weights_of(candidate))

    def candidate_config(self, candidate: Candidate, epochs: int) -> RunConfig:
        """The RunConfig of ``candidate``'s own run: the base one with its architecture, weights, epochs and folder."""
        return self.cfg.with_changes(
            arch=candidate.arch,
            weights=self.weights_of(candidate),
            epochs=epochs,
            output_dir=str(self.run_dir(candidate)),
        )

    def rows(self) -> list[dict[str, Any]]:
        """The plan as a table: each candidate, its weights and budget, and its run folder."""
        return [
            {
                "candidate": c.label,
                "arch": c.arch,
                "weights": self.weights_of(c),
                "budget": self.budget.text(),
                "run_dir": str(self.run_dir(c)),
            }
            for c in self.candidates
        ]

    def config_table(self) -> Any:
        """The settings every candidate shares (parameter, value): the base configuration less what differs per
        candidate (ARCH, WEIGHTS, EPOCHS, OUTPUT_DIR), with the budget."""
        import pandas as pd

        per_candidate = {"arch", "weights", "epochs", "output_dir", "notebook_params"}
        rows = [(k.upper(), repr(v)) for k, v in self.cfg.to_dict().items() if k not in per_candidate]
        rows += [("BUDGET", self.budget.text() + " per candidate"), ("OUTPUT_DIR", repr(str(self.cfg.out)))]
        return pd.DataFrame(rows, columns=["parameter", "value"])

    def table(self) -> Any:
        """:meth:`rows` as a pandas DataFrame indexed by candidate (the notebook shows it)."""
        import pandas as pd

        return pd.DataFrame(self.rows()).set_index("candidate")


def plan_comparison(
    cfg: RunConfig, candidates: Any = None, epochs: int | None = None, minutes: float | None = None
) -> ComparisonPlan:
    """The plan of a comparison of ``candidates`` (CANDIDATES as :func:`parse_candidates` takes it) on ``cfg``'s
    data, with EPOCHS or MINUTES per candidate (``epochs``/``minutes`` as the notebook's parameters give them: None
    is 'not set'). Every candidate's configuration is built now, so a bad one (an image size an architecture
    refuses) stops the comparison before anything trains."""
    return _checked(ComparisonPlan(cfg, parse_candidates(candidates), budget_from(epochs, minutes, cfg.epochs)))


def _checked(plan: ComparisonPlan) -> ComparisonPlan:
    """``plan``, once every candidate's configuration could be built."""
    for c in plan.candidates:
        try:
            plan.candidate_config(c, plan.budget.epochs or 1)
        except ValueError as err:
            raise ValueError(f"Candidate {c.label!r}: {err}") from None
    return plan


def comparison_plan(params: dict[str, Any], preset: str | None = None) -> ComparisonPlan:
    """The plan of notebook 10 and of ``python -m tresnet_nb compare`` from their parameters (upper or lower case;
    None is 'not set'): RunConfig's less ARCH, the training options, CANDIDATES and MINUTES, over ``preset``
    (default 'cpu'). The shared configuration is the first candidate's architecture with the rest; each
    candidate's run changes its architecture, weights, epochs and folder."""
    preset = "cpu" if preset is None else preset
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}{did_you_mean(preset, PRESETS)}; choose one of {sorted(PRESETS)}")
    upper = {key.upper(): value for key, value in params.items()}
    if len(upper) < len(params):
        raise ValueError(f"A parameter is given twice in {sorted(params)} (keys are case-insensitive); give it once")
    if upper.pop("ARCH", None) is not None:
        raise ValueError("ARCH is per candidate in a comparison: name the architectures in CANDIDATES instead")
    upper.pop("PRESET", None)
    candidates = parse_candidates(upper.pop("CANDIDATES", None))
    minutes = upper.pop("MINUTES", None)
    cfg = RunConfig.from_params(
        NOTEBOOK, preset=preset, notebook_params={"minutes": minutes}, arch=candidates[0].arch, **upper
    )
    return _checked(ComparisonPlan(cfg, candidates, budget_from(upper.get("EPOCHS"), minutes, cfg.epochs)))


def plan_from_notebook(namespace: dict[str, Any]) -> ComparisonPlan:
    """:func:`comparison_plan` from notebook 10's parameters cell (its ``globals()``, where papermill injects ``-p``
    values): PRESET, the RunConfig fields and training options it defines, CANDIDATES and MINUTES."""
    names = [k.upper() for k in DEFAULTS] + [n.upper() for n in OPTION_NAMES] + list(OWN_PARAMS)
    return comparison_plan({n: namespace[n] for n in names if n in namespace}, namespace.get("PRESET"))
