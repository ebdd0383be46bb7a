"""tresnet-nb: transfer learning with TResNet image classifiers, on fastai and timm.

The notebooks call these names; each lives in the module of its concern.
"""

import warnings

# fastai decorates a few layers with torch.jit.script at import, which torch 2.10+ flags as deprecated; the
# warning is about fastai's source, not about anything a user of this package can change.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
# fastai.tabular sets a pandas option that pandas 3 deprecates; likewise nothing for a user to act on.
warnings.filterwarnings("ignore", message=r"The 'mode\.chained_assignment' option is deprecated")

from .callbacks import EMA, Autocast, ChannelsLast
from .checkpoints import UnsafeCheckpointError, read_state_dict, to_miil_layout, write_miil_checkpoint
from .config import PRESETS, RunConfig
from .datasets import DATASETS, DatasetSpec, get_dataset
from .datasets.arrays import ArraySplits, array_dls, load_splits
from .distributed import DistInfo, distribute, init_distributed
from .export import ExportMismatchError, export_onnx, export_torchscript, load_preprocessing
from .fitting import FitResult, Phase, fit, history, parse_phases
from .hosted import hosted_check, hosted_platform
from .iabn import convert_from_iabn, convert_to_iabn
from .job import train_job
from .metrics import ClassificationReport, classify_report, topk_accuracy
from .models import (
    ARCHS,
    WeightsInfo,
    WeightsUnavailableError,
    check_img_size,
    count_parameters,
    data_config,
    describe_model,
    load_model,
    weights_info,
)
from .probe import PAPER_V100, ProbeReport, ProbeSettings, run_probe
from .report import build_metrics, device, environment, run_record, save_weights, summary_line, write_metrics
from .train import (
    RECIPES,
    TRAIN_OPTIONS,
    LrFinding,
    Recipe,
    build_learner,
    check_train_options,
    learner_options,
    lr_find,
    predict,
    seed_everything,
)
from .views import (
    ConfigPicker,
    config_table,
    plot_class_counts,
    plot_confusion,
    plot_lr_find,
    plot_memory,
    plot_predictions,
    plot_roc_curves,
    plot_samples,
    plot_throughput,
    plot_training,
    prediction_browser,
    show,
    use_widgets,
    weights_banner,
)
from .workbook import (
    Data,
    Evaluation,
    evaluate,
    kaggle_submission,
    open_data,
    paper_table,
    run_metrics,
    samples,
    show_evaluation,
    split_counts,
)

__version__ = "0.1.0"

__all__ = [
    "ARCHS", "DATASETS", "convert_to_iabn", "convert_from_iabn", "PAPER_V100", "ProbeReport", "ProbeSettings", "run_probe", "plot_memory", "plot_throughput", "EMA", "ConfigPicker", "prediction_browser", "use_widgets", "Data", "Evaluation", "evaluate", "kaggle_submission", "open_data", "paper_table", "run_metrics", "samples", "show_evaluation", "split_counts", "plot_roc_curves", "TRAIN_OPTIONS", "DistInfo", "check_train_options", "distribute", "init_distributed", "learner_options", "train_job", "ExportMismatchError", "export_onnx", "export_torchscript", "load_preprocessing", "LrFinding", "Phase", "lr_find", "parse_phases", "plot_lr_find", "PRESETS", "RECIPES", "Recipe", "ArraySplits", "Autocast", "ChannelsLast", "ClassificationReport",
    "DatasetSpec", "FitResult", "RunConfig", "UnsafeCheckpointError", "WeightsInfo", "WeightsUnavailableError",
    "array_dls", "build_learner", "build_metrics", "check_img_size", "classify_report", "config_table", "count_parameters",
    "data_config", "describe_model", "device", "environment", "history", "hosted_check", "hosted_platform", "fit", "get_dataset", "load_model",
    "load_splits", "plot_class_counts", "plot_confusion", "plot_predictions", "plot_samples", "plot_training",
    "predict", "read_state_dict", "run_record", "save_weights", "seed_everything", "show", "summary_line", "to_miil_layout", "topk_accuracy",
    "weights_banner", "weights_info", "write_metrics", "write_miil_checkpoint",
]  # fmt: skip
