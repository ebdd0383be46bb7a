"""tresnet-nb: transfer learning with TResNet image classifiers, on fastai and timm.

``import tresnet_nb as tnb`` is cheap: it loads neither torch nor fastai. Each public name below is resolved on first
use (PEP 562 ``__getattr__``) from the module of its concern, which then pays for its own imports; subpackages
(``tnb.data``, ``tnb.model``, ``tnb.probe``, ...) load the same way. The table is grouped by layer, bottom first
(docs/architecture.md).
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from .hints import install as _install_warnings

# fastai decorates a few layers with torch.jit.script at import, which torch 2.10+ flags as deprecated; the
# warning is about fastai's source, not about anything a user of this package can change.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
# fastai.tabular sets a pandas option that pandas 3 deprecates; likewise nothing for a user to act on.
warnings.filterwarnings("ignore", message=r"The 'mode\.chained_assignment' option is deprecated")

_install_warnings()  # this package's own warnings: once each, one line (tresnet_nb.hints)

__version__ = "0.1.0"

# module (relative to this package) -> the public names it provides, one a line, sorted within each module
_EXPORTS: dict[str, tuple[str, ...]] = {
    # bottom: the paper's numbers, the process's device and environment
    ".paper": ("PAPER_V100",),
    ".runtime": (
        "device",
        "environment",
    ),
    # data/: readers, the DATASETS table, loaders
    ".data": (
        "DATASETS",
        "DatasetSpec",
        "get_dataset",
    ),
    ".data.arrays": (
        "ArraySplits",
        "array_dls",
        "load_splits",
    ),
    # model/: architectures and weights, InPlace-ABN, export
    ".model.archs": (
        "ARCHS",
        "check_img_size",
    ),
    ".model.export": (
        "ExportMismatchError",
        "export_onnx",
        "export_torchscript",
        "load_preprocessing",
    ),
    ".model.hub": ("WeightsUnavailableError",),
    ".model.iabn_convert": (
        "convert_from_iabn",
        "convert_to_iabn",
    ),
    ".model.describe": (
        "count_parameters",
        "describe_model",
    ),
    ".model.load": (
        "WeightsInfo",
        "data_config",
        "load_model",
        "save_weights",
        "trained_with",
        "weights_info",
    ),
    ".model.weights": (
        "TrainedWith",
        "UnsafeCheckpointError",
        "read_state_dict",
        "to_miil_layout",
        "write_miil_checkpoint",
    ),
    # config: the notebook parameters
    ".config": (
        "PRESETS",
        "RunConfig",
    ),
    ".options": ("TrainOptions",),
    # evaluation/: metrics and scores
    ".evaluation.metrics": (
        "ClassificationReport",
        "classify_report",
        "topk_accuracy",
    ),
    ".evaluation.scores": (
        "Evaluation",
        "score",
    ),
    # probe/: throughput and memory
    ".probe": (
        "ProbeReport",
        "ProbeSettings",
        "run_probe",
    ),
    # train/: recipes, learner, staged fit, callbacks, DDP
    ".train.callbacks": (
        "Autocast",
        "ChannelsLast",
        "EMA",
    ),
    ".train.checkpoint": (
        "drop_checkpoint",
        "history",
    ),
    ".train.distributed": (
        "DistInfo",
        "distribute",
        "init_distributed",
    ),
    ".train.fit": (
        "FitResult",
        "fit",
    ),
    ".train.learner": (
        "LrFinding",
        "PlannedLearner",
        "TrainingPlan",
        "build_learner",
        "lr_find",
        "predict",
        "seed_everything",
        "set_temperature",
    ),
    ".recipes": (
        "Phase",
        "RECIPES",
        "Recipe",
        "parse_phases",
    ),
    # report/: the run record, plots, widgets
    ".report.display": (
        "show",
        "weights_banner",
    ),
    ".report.plots": (
        "plot_class_counts",
        "plot_confusion",
        "plot_lr_find",
        "plot_memory",
        "plot_predictions",
        "plot_roc_curves",
        "plot_samples",
        "plot_throughput",
        "plot_training",
    ),
    ".report.inference": (
        "RunModel",
        "load_run",
    ),
    ".report.publish": ("publish",),
    ".report.record": (
        "build_metrics",
        "run_record",
        "summary_line",
        "write_metrics",
    ),
    ".report.tracking": (
        "Tracker",
        "track",
    ),
    ".report.widgets": (
        "ConfigPicker",
        "config_table",
        "prediction_browser",
        "use_widgets",
    ),
    # top: the notebook steps, the headless job, hosted platforms
    ".hosted": (
        "hosted_check",
        "hosted_platform",
    ),
    ".steps.data": (
        "Data",
        "open_data",
        "samples",
        "split_counts",
    ),
    ".steps.job": ("train_job",),
    ".steps.results": (
        "evaluate",
        "kaggle_submission",
        "paper_table",
        "show_evaluation",
    ),
    # trust/: after training (notebook 09)
    ".trust.calibration": (
        "Calibration",
        "calibrate",
    ),
    ".trust.duplicates": (
        "Duplicates",
        "duplicate_step",
    ),
    ".trust.gradcam": ("gradcam_maps",),
    ".trust.label_issues": ("find_label_issues",),
    ".trust.run": (
        "AnalysedRun",
        "open_run",
        "run_to_analyse",
    ),
    ".trust.steps": (
        "analysis_record",
        "calibration_step",
        "gradcam_step",
        "label_issue_step",
        "suspect_browser",
    ),
    # compare/: which backbone for my data (notebook 10)
    ".compare": (
        "Comparison",
        "compare_backbones",
        "finish_comparison",
        "parse_candidates",
        "plan_comparison",
        "plan_from_notebook",
        "plot_comparison",
    ),
}
# earlier names kept working: the dataset notebooks called the run record run_metrics
_ALIASES: dict[str, tuple[str, str]] = {
    "run_metrics": (".report.record", "run_record"),
}
_SUBPACKAGES = (
    "bundle",
    "cli",
    "commands",
    "compare",
    "config",
    "data",
    "evaluation",
    "files",
    "gpucheck",
    "heads21k",
    "hints",
    "hosted",
    "model",
    "options",
    "paper",
    "probe",
    "recipes",
    "report",
    "runner",
    "runtime",
    "steps",
    "sweep",
    "train",
    "trust",
)
_WHERE: dict[str, tuple[str, str]] = {
    name: (module, name) for module, names in _EXPORTS.items() for name in names
} | _ALIASES

__all__ = [name for names in _EXPORTS.values() for name in names]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        module, attr = _WHERE[name]
        value = getattr(importlib.import_module(module, __name__), attr)
        globals()[name] = value  # later lookups skip this function
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'tresnet_nb' has no attribute {name!r}; its public names are in tresnet_nb.__all__")


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE, *_SUBPACKAGES})
