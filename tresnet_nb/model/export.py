"""Deployment exports of a fine-tuned model (TorchScript, ONNX), each checked against the eager model.

Every export writes ``<path>.json`` beside the file: the preprocessing the network expects (it takes normalised
NCHW RGB float32; resizing, cropping and normalisation stay outside the graph), the class names, the weights'
origin, versions and the largest difference measured between the reloaded export and the eager model.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from ..files import atomic_write_text, file_mode
from .load import TEMPERATURE_ATTR, WeightsInfo, check_img_size, data_config

RTOL = 1e-4  # allowed difference, relative to the largest |logit| of the eager model (fp32 reorderings give ~1e-6)
ATOL = 1e-6  # floor, so that all-zero logits (a zero-initialised head) do not demand exact equality
PROBE_BATCHES = (2, 1, 3)  # traced/exported at the first; the others show the batch dimension is not baked in
PROBE_SEED = 0
INPUT_NAME, OUTPUT_NAME = "input", "logits"
# keys of the sidecar that timm.data.create_transform takes, so a deployment can rebuild the eval transform
TRANSFORM_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
ONNX_PACKAGES = ("onnx", "onnxruntime")  # import and pip names agree
DYNAMO_PACKAGES = ("onnxscript",)  # torch.onnx.export(dynamo=True) translates through onnxscript


class ExportMismatchError(RuntimeError):
    """An exported model's outputs differ from the eager model's by more than the tolerance."""


@dataclass(frozen=True)
class ExportResult:
    """One checked export: its file, its preprocessing sidecar, format, measured difference and time taken."""

    path: Path
    sidecar: Path
    format: str  # 'torchscript' or 'onnx'
    max_abs_diff: float
    seconds: float


def sidecar_path(path: Path | str) -> Path:
    """The preprocessing file written beside the export at ``path`` (``<path>.json``)."""
    return Path(f"{path}.json")


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """Silence the deprecation notices of the export APIs used here, for this block only."""
    with warnings.catch_warnings():
        # torch.jit.trace/save/load warn FutureWarning from torch 2.10 on, but remain supported, and TorchScript is
        # still what C++ (libtorch) deployments load; the warning would repeat on every export.
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", FutureWarning)
        # torch 2.9 made the dynamo exporter the default and deprecated the TorchScript-based one; export_onnx picks
        # the latter on purpose (dynamo=False): with torch 2.14.1 it gives the same logits for TResNet, needs no
        # onnxscript, and takes ~1.5 s where dynamo takes ~9 s (tresnet_m, 64 px, 2 CPU cores).
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX export", DeprecationWarning)
        warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning)
        # strided slices (TResNet's anti-aliasing) are left unfolded; harmless, and the outputs are checked below
        warnings.filterwarnings("ignore", "Constant folding - Only steps=1", UserWarning)
        yield


def _uncompiled(model: nn.Module) -> nn.Module:
    """The module that ``model``, if it is an ``OptimizedModule`` (``torch.compile(model)``, wrapped once or more),
    wraps; else ``model``. Nothing is changed."""
    from torch._dynamo.eval_frame import OptimizedModule

    while isinstance(model, OptimizedModule):
        model = model._orig_mod
    return model


def _export_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` to export: eval mode, CPU, float32, contiguous NCHW, so the caller's model is untouched,
    and without torch.compile (a copy of a compiled module would run the compiled call: CUDA code, on CUDA tensors,
    and graphs that torch.jit.trace and the ONNX exporter cannot trace)."""
    from torch._dynamo.eval_frame import OptimizedModule

    # channels_last weights or half precision left by training would be baked into the graph; a copy keeps the
    # caller's training flag, memory format and dtype as they were
    clone = copy.deepcopy(_uncompiled(model))
    for module in list(clone.modules()):
        # nn.Module.compile() (build_learner's compile=True) keeps the compiled call in _compiled_call_impl
        module.__dict__.pop("_compiled_call_impl", None)
        for name, child in list(module.named_children()):
            if isinstance(child, OptimizedModule):  # a submodule compiled on its own
                setattr(module, name, _uncompiled(child))
    clone = clone.cpu().float().to(memory_format=torch.contiguous_format)
    return clone.eval().requires_grad_(False)


def _probe_inputs(img_size: int) -> list[torch.Tensor]:
    """Random [0, 1] float32 NCHW batches of ``img_size`` pixels, one per size in PROBE_BATCHES (seeded locally)."""
    gen = torch.Generator().manual_seed(PROBE_SEED)
    return [torch.rand(n, 3, img_size, img_size, generator=gen) for n in PROBE_BATCHES]


def _compare(
    eager: nn.Module, run: Callable[[torch.Tensor], torch.Tensor], inputs: list[torch.Tensor], fmt: str
) -> tuple[float, float]:
    """Largest |eager - run| over ``inputs`` and its tolerance; raise ExportMismatchError (naming ``fmt``) if over."""
    diffs, scale = [], 0.0
    for x in inputs:
        reference = eager(x)
        out = torch.as_tensor(run(x))
        if out.shape != reference.shape:
            shapes = f"{tuple(out.shape)} for input {tuple(x.shape)}, the eager model {tuple(reference.shape)}"
            raise ExportMismatchError(f"{fmt} export gives shape {shapes}; the file was not written")
        diffs.append((out.float() - reference).abs().max().item())
        scale = max(scale, reference.abs().max().item())
    diff, tol = torch.tensor(diffs).max().item(), RTOL * scale + ATOL  # torch's max keeps a NaN, Python's may not
    if not diff <= tol:  # written so that NaN fails too
        raise ExportMismatchError(
            f"{fmt} export differs from the eager model: max abs difference {diff:.3g} exceeds the tolerance "
            f"{tol:.3g} ({RTOL:g} x max |logit| {scale:.3g} + {ATOL:g}) over batches {list(PROBE_BATCHES)}; the "
            f"file was not written. Look for ops the exporter translates differently; for ONNX try the other "
            f"exporter (dynamo=True/False) or another opset"
        )
    return diff, tol


def _arch(model: nn.Module) -> str:
    """Architecture name of ``model``: from its weights_info, else timm's pretrained cfg, else its class."""
    info = getattr(model, "weights_info", None)
    if isinstance(info, WeightsInfo):
        return info.arch
    return getattr(model, "pretrained_cfg", {}).get("architecture") or type(model).__name__


def _check_class_names(model: nn.Module, class_names: Sequence[str] | None) -> list[str] | None:
    """``class_names`` as a list of str if there is one per output of ``model`` (or None), else raise."""
    if class_names is None:
        return None
    names = [str(name) for name in class_names]
    if len(names) != model.num_classes:
        raise ValueError(
            f"Got {len(names)} class names for a model with {model.num_classes} outputs; pass one name per output, "
            f"in head order, or class_names=None"
        )
    return names


def _sidecar_record(
    model: nn.Module, img_size: int, class_names: list[str] | None, fmt: str, versions: dict[str, str], **extra: Any
) -> dict[str, Any]:
    """Preprocessing and provenance of a ``fmt`` export of ``model`` at ``img_size`` with ``class_names``, plus the
    exporting libraries' ``versions``; ``extra`` adds the exporter and the measured difference."""
    cfg = data_config(model, img_size)
    info = getattr(model, "weights_info", None)
    return {
        "format": fmt,
        "arch": _arch(model),
        "img_size": img_size,
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", 3, img_size, img_size],
            "layout": "NCHW",
            "channels": "RGB",
            "dtype": "float32",
            "range": "[0, 1] before normalisation: (x - mean) / std per channel, done outside the graph",
        },
        "output": {"name": OUTPUT_NAME, "shape": ["batch", model.num_classes], "kind": "logits (no softmax)"},
        **{key: list(cfg[key]) if isinstance(cfg[key], tuple) else cfg[key] for key in TRANSFORM_KEYS},
        "num_classes": model.num_classes,
        "class_names": class_names,
        # divide the logits by it before softmax/sigmoid (one value, or one per label); None: not calibrated
        "temperature": getattr(model, TEMPERATURE_ATTR, None),
        "weights": info.to_dict() if isinstance(info, WeightsInfo) else None,
        "versions": {"torch": torch.__version__, "timm": timm.__version__, **versions},
        **extra,
    }


def _checked_export(
    model: nn.Module,
    path: Path | str,
    img_size: int,
    class_names: Sequence[str] | None,
    fmt: str,
    write: Callable[[nn.Module, torch.Tensor, Path], dict[str, Any]],
    reload: Callable[[Path], Callable[[torch.Tensor], torch.Tensor]],
    versions: dict[str, str] | None = None,
) -> ExportResult:
    """Export a copy of ``model`` (``img_size``, ``class_names``) as ``fmt`` with ``write`` to a temporary file, check
    the ``reload``-ed outputs against it, then move the file to ``path`` and write the sidecar (``versions`` added)."""
    check_img_size(img_size)
    names = _check_class_names(model, class_names)
    start = time.perf_counter()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    eager = _export_copy(model)
    inputs = _probe_inputs(img_size)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        # a caller's CPU autocast would trace bf16 casts into the graph (the copy is on the CPU, so CUDA's is moot)
        with _quiet_export(), torch.no_grad(), torch.autocast("cpu", enabled=False):
            extra = write(eager, inputs[0], tmp)
            diff, tol = _compare(eager, reload(tmp), inputs, fmt)
        sidecar = sidecar_path(path)
        sidecar.unlink(missing_ok=True)  # a stale sidecar must never describe the new file
        os.chmod(tmp, file_mode())  # as the umask gives new files, not mkstemp's 0o600
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    record = _sidecar_record(
        eager,
        img_size,
        names,
        fmt,
        versions or {},
        **extra,
        max_abs_diff=diff,
        tolerance=tol,
        checked_batches=list(PROBE_BATCHES),
    )
    atomic_write_text(sidecar, json.dumps(record, indent=2) + "\n")
    return ExportResult(path=path, sidecar=sidecar, format=fmt, max_abs_diff=diff, seconds=seconds)


def _trace_and_save(eager: nn.Module, example: torch.Tensor, tmp: Path) -> dict[str, Any]:
    # check_trace re-runs the trace against the module; the reload check after saving covers it, so skip the rerun
    traced = torch.jit.trace(eager, (example,), check_trace=False)
    torch.jit.save(traced, str(tmp))
    return {"exporter": "torch.jit.trace"}


def export_torchscript(
    model: nn.Module, path: Path | str, img_size: int, class_names: Sequence[str] | None = None
) -> ExportResult:
    """Trace ``model`` at ``img_size`` to TorchScript at ``path`` (with ``class_names``) and check the reloaded file."""
    return _checked_export(
        model, path, img_size, class_names, "torchscript", _trace_and_save, lambda tmp: torch.jit.load(str(tmp))
    )


def _require(packages: Sequence[str], why: str) -> dict[str, str]:
    """Import ``packages`` and return their versions, or say what to install for ``why``."""
    versions, missing = {}, []
    for name in packages:
        try:
            versions[name] = importlib.import_module(name).__version__
        except ImportError:
            missing.append(name)
    if missing:
        raise ImportError(
            f"{why} needs {missing}, which are not installed; install them with `pip install 'tresnet-nb[export]'` "
            f"or `pip install -r requirements.txt`"
        )
    return versions


def _onnx_writer(opset: int | None, dynamo: bool) -> Callable[[nn.Module, torch.Tensor, Path], dict[str, Any]]:
    """A writer for :func:`_checked_export` that exports to ONNX ``opset`` with the ``dynamo`` or legacy exporter."""

    def write(eager: nn.Module, example: torch.Tensor, tmp: Path) -> dict[str, Any]:
        if dynamo:
            batch = {"dynamic_shapes": ({0: torch.export.Dim("batch")},)}
        else:
            batch = {"dynamic_axes": {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}}
        torch.onnx.export(
            eager,
            (example,),
            str(tmp),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamo=dynamo,
            external_data=False,
            verbose=False,
            **batch,
        )
        import onnx

        proto = onnx.load(str(tmp))
        onnx.checker.check_model(proto)
        used = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
        exporter = "torch.onnx.export(dynamo=True)" if dynamo else "torch.onnx.export(dynamo=False)"
        return {"exporter": exporter, "opset": used}

    return write


def _onnx_session(tmp: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function running the ONNX file ``tmp`` with onnxruntime on the CPU."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])


def export_onnx(
    model: nn.Module,
    path: Path | str,
    img_size: int,
    class_names: Sequence[str] | None = None,
    opset: int | None = None,
    dynamo: bool = False,
) -> ExportResult:
    """Export ``model`` at ``img_size`` to ONNX at ``path`` (dynamic batch; ``class_names``, ``opset``, exporter
    ``dynamo``) and check the file with onnxruntime on CPU."""
    versions = _require(ONNX_PACKAGES + (DYNAMO_PACKAGES if dynamo else ()), f"export_onnx(dynamo={dynamo})")
    writer = _onnx_writer(opset, dynamo)
    return _checked_export(model, path, img_size, class_names, "onnx", writer, _onnx_session, versions)


def load_preprocessing(path: Path | str) -> dict[str, Any]:
    """The sidecar record of the export at ``path`` (or of the sidecar ``path`` itself); its TRANSFORM_KEYS feed
    ``timm.data.create_transform``."""
    path = Path(path)
    sidecar = path if path.suffix == ".json" else sidecar_path(path)
    if not sidecar.is_file():
        raise FileNotFoundError(
            f"No preprocessing file {str(sidecar)!r}; export_torchscript/export_onnx write it beside the export, "
            f"so re-export, or copy it along with {path.name!r}"
        )
    return json.loads(sidecar.read_text())
