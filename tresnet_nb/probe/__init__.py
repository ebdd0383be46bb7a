"""The throughput and memory probe: the paper's speed table (training and inference img/s, maximal training batch)
measured on this machine, beside the paper's V100 numbers.

``settings`` says what to measure (:class:`ProbeSettings`, :func:`plan`), ``timing`` times a step, ``measure`` runs
the probe (:func:`run_probe`, :func:`probe_model`; the steps and the batch search are
:mod:`tresnet_nb.model.steps`'), ``results`` holds and reads what it found (:class:`ProbeReport`,
:func:`relative_table`, :func:`verdict`, :func:`metrics_record`) and ``memory`` compares TResNet's activation memory
across BatchNorm, InPlace-ABN and gradient checkpointing (:func:`memory_comparison`). The command line's
``python -m tresnet_nb probe`` is :func:`tresnet_nb.commands.probe_command`.
"""

from __future__ import annotations

from ..model.steps import NUM_CLASSES, PRECISIONS, inference_step, search_max_batch, training_step
from ..paper import PAPER_V100, PaperSpeed
from .measure import (
    estimate_max_batch,
    flops_per_image,
    matmul_peak,
    probe_model,
    resident_training_bytes,
    run_probe,
    saved_bytes_slope,
)
from .memory import memory_comparison
from .results import ArchResult, ProbeReport, metrics_record, relative_table, verdict
from .settings import (
    CPU_BATCH,
    MODES,
    PAPER_FRACTION,
    TABLE_COLUMNS,
    V100_GIB,
    ProbeSettings,
    batch_arg,
    high_res_settings,
    paper_batch,
    parse_archs,
    plan,
    unused_parameters,
)
from .timing import Timing, time_steps

__all__ = [
    "ArchResult",
    "CPU_BATCH",
    "MODES",
    "NUM_CLASSES",
    "PAPER_FRACTION",
    "PAPER_V100",
    "PRECISIONS",
    "PaperSpeed",
    "ProbeReport",
    "ProbeSettings",
    "TABLE_COLUMNS",
    "Timing",
    "V100_GIB",
    "batch_arg",
    "estimate_max_batch",
    "flops_per_image",
    "high_res_settings",
    "inference_step",
    "matmul_peak",
    "memory_comparison",
    "metrics_record",
    "paper_batch",
    "parse_archs",
    "plan",
    "probe_model",
    "relative_table",
    "resident_training_bytes",
    "run_probe",
    "saved_bytes_slope",
    "search_max_batch",
    "time_steps",
    "training_step",
    "unused_parameters",
    "verdict",
]
