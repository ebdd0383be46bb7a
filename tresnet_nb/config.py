"""Run configuration: the notebook parameters as a frozen, validated dataclass (its training switches one typed
:class:`TrainOptions`), presets, and JSON round-trip.

A RunConfig is checked against the tables of the layer below (the dataset names of :mod:`tresnet_nb.data`, the
architectures and image sizes of :mod:`tresnet_nb.model.archs`), which import no torch, so a config can be built and
checked before anything heavy loads. The readers and the model loader never see a RunConfig."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .data import DATASETS
from .hints import did_you_mean, unknown_names
from .model.archs import check_img_size, split_arch
from .options import OPTION_NAMES, TrainOptions, split_extra
from .paper import transfer

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Values a notebook uses when neither the call nor the preset sets them.
DEFAULTS: dict[str, Any] = {
    "arch": "tresnet_m",
    "weights": "auto",
    "dataset": "fashion_mnist",
    "data_root": None,
    "img_size": 224,
    "batch_size": 32,
    "epochs": 5,
    "lr": None,
    "max_items": None,
    "seed": 42,
    "precision": "auto",
    "output_dir": None,
    "tracking": None,
    "keep_checkpoint": False,
}
# Where a run is written and logged and what it keeps, not what it computes: left out of its key and of its
# checkpoint's fingerprint, so that the same configuration resumes and keeps its folder whatever store tracks it.
LOCATION_FIELDS = ("output_dir", "tracking", "keep_checkpoint")
# A preset fills what the call did not set; an explicit parameter always wins (DESIGN.md).
PRESETS: dict[str, dict[str, Any]] = {
    # CI: a few dozen items, 64 px, one epoch, random weights (no download): seconds on any machine.
    "smoke": {"weights": "none", "img_size": 64, "batch_size": 16, "epochs": 1, "max_items": 64},
    # A real but small run on a laptop CPU (the quickstart: about 6 minutes of training on 2 cores with native bf16,
    # about 14 in fp32 on an AVX2-only CPU).
    "cpu": {"img_size": 64, "batch_size": 32, "epochs": 3},
    # The paper's setting, for a GPU: 224 px, or the dataset's paper architecture and resolution (e.g. TResNet-L at
    # 368 px for Stanford Cars) unless ARCH / IMG_SIZE are given.
    "paper": {"img_size": 224, "batch_size": 64, "epochs": 20},
}
INT_FIELDS = ("img_size", "batch_size", "epochs", "seed", "max_items")
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def default_output_dir(notebook: str, key: str | None = None) -> Path:
    """``runs/<notebook>`` in the project checkout (wherever the notebook runs from), else under the cwd; with
    ``key`` (a configuration's :func:`config_key`), its folder ``runs/<notebook>/<key>``."""
    root = PROJECT_ROOT if (PROJECT_ROOT / "notebooks").is_dir() else Path.cwd()
    return root / "runs" / notebook / key if key else root / "runs" / notebook


def config_key(config: dict[str, Any]) -> str:
    """A short hash of a configuration (``RunConfig.to_dict()``) less OUTPUT_DIR and TRACKING: the "config" part
    of what :func:`tresnet_nb.train.fit.fingerprint` requires of a checkpoint, serialised the same way."""
    rest = {k: v for k, v in config.items() if k not in LOCATION_FIELDS}
    return hashlib.sha1(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()[:8]


def smoke_fixture(dataset: str) -> Path:
    """The folder ``read`` takes of a generated ``dataset`` fixture (official format) in the temporary folder,
    written once and shared by later runs, so that their configurations (and run folders) stay the same."""
    import os
    import shutil
    import tempfile

    from .data.fixtures import fixture_root, mark_fixture

    target = Path(tempfile.gettempdir()) / "tresnet_nb-fixtures" / dataset
    root = fixture_root(target)
    if root is not None:
        return root
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{dataset}."))
    written = DATASETS[dataset].write_fixture(work / "data")
    mark_fixture(work, dataset, written.relative_to(work))
    try:  # another kernel may have written it meanwhile: keep the first
        os.rename(work, target)
    except OSError:
        shutil.rmtree(work, ignore_errors=True)
    root = fixture_root(target)
    if root is None:
        raise RuntimeError(f"{target} exists but holds no complete fixture; delete it and run again")
    return root


def own_folder(cfg: RunConfig) -> Path:
    """The folder of ``cfg`` when OUTPUT_DIR is not given: ``runs/<notebook>/<key>``, or the automatic folder of an
    earlier run of the same configuration whose name is an older key (run_config.json written before the training
    options became :class:`TrainOptions` hashes differently), so that such a run still resumes where it is."""
    folder = default_output_dir(cfg.notebook, cfg.key)
    parent = folder.parent
    if folder.is_dir() or not parent.is_dir():
        return folder
    for written in sorted(parent.glob("*/run_config.json")):
        if not re.fullmatch(r"[0-9a-f]{8}", written.parent.name):
            continue
        try:
            earlier = RunConfig.load(written)
        except (ValueError, TypeError, OSError):
            continue
        if earlier.notebook == cfg.notebook and earlier.key == cfg.key:
            return written.parent
    return folder


@dataclass(frozen=True)
class RunConfig:
    """Everything a run depends on; built by :meth:`from_params`, validated on creation, saved as run_config.json."""

    notebook: str
    preset: str
    arch: str
    weights: str
    dataset: str
    data_root: str | None
    img_size: int
    batch_size: int
    epochs: int
    lr: float | None
    max_items: int | None
    seed: int
    precision: str
    output_dir: str
    tracking: str | None = None  # an MLflow store (folder or server URL); None: MLFLOW_TRACKING_URI, if set
    # a finished run keeps its resumable checkpoint.pth (optimizer state, EMA: about 3x the weights) only when True
    keep_checkpoint: bool = False
    options: TrainOptions = field(default_factory=TrainOptions)  # the training switches
    # a notebook's own parameters beyond these (notebook 07's LABEL_SET, SENSES, ...): saved and part of the
    # configuration's key, so that changing one starts another run folder; the library reads none of them
    notebook_params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"Unknown preset {self.preset!r}; choose one of {sorted(PRESETS)}")
        split_arch(self.arch)
        if self.dataset not in DATASETS:
            raise ValueError(
                f"Unknown dataset {self.dataset!r}{did_you_mean(self.dataset, DATASETS)}; choose one of {sorted(DATASETS)}"
            )
        for name in INT_FIELDS:
            value = getattr(self, name)
            if value is None and name == "max_items":
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name.upper()} must be an integer, not {value!r} ({type(value).__name__})")
        check_img_size(self.img_size, self.arch)
        for name, low in (("batch_size", 1), ("epochs", 1), ("max_items", 1)):
            value = getattr(self, name)
            if value is not None and value < low:
                raise ValueError(f"{name.upper()} must be at least {low}, not {value!r}")
        if self.lr is not None and (isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or self.lr <= 0):
            raise ValueError(f"LR must be a positive number or None (the recipe's default), not {self.lr!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"Unknown precision {self.precision!r}; choose one of {PRECISIONS}")
        if self.tracking is not None and (not isinstance(self.tracking, str) or not self.tracking.strip()):
            raise ValueError(
                f"TRACKING must be None or an MLflow store (a folder or a server URL), not {self.tracking!r}"
            )
        if self.tracking is not None and re.search(r"//[^/@\s]*:[^/@\s]*@", self.tracking):
            raise ValueError(
                "TRACKING holds a password in its URL, which would be saved in run_config.json; give the URL without "
                "it and set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in the environment instead"
            )
        if not isinstance(self.weights, str) or not self.weights:
            raise ValueError(
                f"WEIGHTS must be a string: 'auto', 'none' (random init), a timm tag or a file path, not {self.weights!r}"
            )
        if not isinstance(self.keep_checkpoint, bool):
            raise ValueError(f"KEEP_CHECKPOINT must be True or False, not {self.keep_checkpoint!r}")
        if isinstance(self.options, dict):  # from JSON
            object.__setattr__(self, "options", TrainOptions(**self.options))
        if not isinstance(self.options, TrainOptions):
            raise ValueError(f"options must be a TrainOptions, not {type(self.options).__name__}")
        if not isinstance(self.notebook_params, dict):
            raise ValueError(f"notebook_params must be a dict, not {type(self.notebook_params).__name__}")

    @classmethod
    def from_params(
        cls,
        notebook: str,
        preset: str = "cpu",
        options: TrainOptions | None = None,
        notebook_params: dict[str, Any] | None = None,
        **params: Any,
    ) -> RunConfig:
        """Build the config of ``notebook`` from its parameters (None means 'not set'), the ``preset`` and defaults.

        ``params`` are RunConfig fields and training options alike, in upper or lower case (``TTA=True`` is
        ``options.tta``); ``options`` gives the training options as one object instead. ``notebook_params``: the
        notebook's own parameters, saved with the config and part of its key."""
        if preset not in PRESETS:
            raise ValueError(
                f"Unknown preset {preset!r}{did_you_mean(preset, PRESETS)}; choose one of {sorted(PRESETS)}"
            )
        params = {k.lower(): v for k, v in params.items()}
        unknown = sorted(set(params) - set(DEFAULTS) - set(OPTION_NAMES))
        if unknown:
            fields, switches = sorted(k.upper() for k in DEFAULTS), sorted(n.upper() for n in OPTION_NAMES)
            raise ValueError(
                f"Unknown parameters {unknown_names([k.upper() for k in unknown], [*fields, *switches])}; RunConfig "
                f"takes {fields} and the training options {switches}"
            )
        switches = {k: params.pop(k) for k in list(params) if k in OPTION_NAMES}
        if options is not None and any(v is not None for v in switches.values()):
            raise ValueError(
                f"Give the training options either as options= or as parameters {sorted(switches)}, not both"
            )
        opts = options if options is not None else TrainOptions.from_params(**switches)
        given = {k: v for k, v in params.items() if v is not None}
        values = {**DEFAULTS, **PRESETS[preset], **given}
        if preset == "paper":  # the dataset's paper architecture and resolution
            result = transfer(values["dataset"])
            for key, paper in (("arch", result.arch), ("img_size", result.img_size)):
                if key not in given and paper is not None:
                    values[key] = paper
        if preset == "smoke" and values["data_root"] is None and values["dataset"] in DATASETS:
            if DATASETS[values["dataset"]].needs_root:  # the smoke preset runs anywhere: on a generated fixture
                values["data_root"] = str(smoke_fixture(values["dataset"]))
                print(
                    f"DATA_ROOT is not set: PRESET 'smoke' runs on a generated {values['dataset']} fixture (tiny, "
                    f"official format) at {values['data_root']}; its results say nothing about the real data."
                )
        if isinstance(values["lr"], int) and not isinstance(values["lr"], bool):
            values["lr"] = float(values["lr"])
        own = dict(notebook_params or {})
        if values["output_dir"] is not None:
            return cls(notebook=notebook, preset=preset, options=opts, notebook_params=own, **values)
        # no OUTPUT_DIR: a folder of this configuration's own, so that a changed parameter starts a new run there
        # instead of meeting another configuration's checkpoint, and an unchanged one resumes (train.fit)
        cfg = cls(notebook=notebook, preset=preset, options=opts, notebook_params=own, **{**values, "output_dir": ""})
        return replace(cfg, output_dir=str(own_folder(cfg)))

    @classmethod
    def from_notebook(cls, notebook: str, namespace: dict[str, Any], own: tuple[str, ...] = ()) -> RunConfig:
        """The config of ``notebook`` from its parameters cell: the upper-case names of ``namespace`` (the
        notebook's ``globals()``, where papermill injects ``-p`` values) that are RunConfig fields, training options
        or PRESET, and the notebook's ``own`` parameters (kept in ``notebook_params``); other names are left alone."""
        names = [k.upper() for k in DEFAULTS] + [n.upper() for n in OPTION_NAMES]
        params = {name: namespace[name] for name in names if name in namespace}
        missing = [name for name in own if name not in namespace]
        if missing:
            raise ValueError(f"The notebook's parameters {missing} are not defined; run its parameters cell first")
        preset = namespace.get("PRESET") or "cpu"
        mine = {name.lower(): namespace[name] for name in own}
        return cls.from_params(notebook, preset=preset, notebook_params=mine, **params)

    @property
    def pretrained_requested(self) -> bool:
        """True unless the weights ask for random initialisation."""
        return self.weights.lower() not in ("none", "random")

    @property
    def key(self) -> str:
        """The short hash of this configuration less OUTPUT_DIR (:func:`config_key`)."""
        return config_key(self.to_dict())

    @property
    def default_dir(self) -> bool:
        """True when OUTPUT_DIR is this configuration's own folder (none was given)."""
        return self.output_dir == str(own_folder(self))

    @property
    def out(self) -> Path:
        """The output folder, created on first use."""
        path = Path(self.output_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: Path | str | None = None) -> Path:
        """Write the config as JSON to ``path`` (default: OUTPUT_DIR/run_config.json, saying in one line which run
        folder a configuration without OUTPUT_DIR has, and whether it holds an earlier run of it)."""
        if path is None and self.default_dir:
            earlier = (self.out / "run_config.json").is_file()
            print(
                f"OUTPUT_DIR not set: this configuration's run folder is {self.out}"
                + (
                    " (it holds an earlier run of it: training resumes, or shows the results when complete)"
                    if earlier
                    else " (new: each configuration has its own)"
                )
            )
        path = Path(path) if path is not None else self.out / "run_config.json"
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, path: Path | str) -> RunConfig:
        """Read a config written by :meth:`save`."""
        data = json.loads(Path(path).read_text())
        if "extra" in data and "options" not in data:  # written before TrainOptions: one dict held both
            data["options"], data["notebook_params"] = split_extra(data.pop("extra"))
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{str(path)!r} has unknown fields {unknown}; a run_config.json has {sorted(names)}")
        return cls(**data)

    def with_changes(self, **changes: Any) -> RunConfig:
        """A copy with ``changes`` applied (validated again): RunConfig fields, or training options by their names
        (``cfg.with_changes(tta=True)``); without OUTPUT_DIR given, the copy has its own folder."""
        switches = {k: changes.pop(k) for k in list(changes) if k in OPTION_NAMES}
        if switches:
            changes["options"] = replace(changes.get("options", self.options), **switches)
        changed = replace(self, **changes)
        if "output_dir" in changes or not self.default_dir:
            return changed
        return replace(changed, output_dir=str(own_folder(changed)))
