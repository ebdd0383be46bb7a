"""The gpu-check sections that measure or prove one thing each: the CUDA tests, the probe, InPlace-ABN, compile
and export (the fine-tune through the file pipeline is in :mod:`.finetune`)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import torch

from .sizes import REPO_ROOT, Sizes


def section_tests(device: torch.device, sz: Sizes, out: Path, state: dict[str, Any]) -> dict[str, Any]:
    """``pytest -m cuda`` over the test files that hold CUDA tests (they import nothing a bare CUDA image lacks),
    in a subprocess, its outcomes read from a JUnit XML report."""
    tests = REPO_ROOT / "tests"
    if not tests.is_dir():
        return {"status": "skipped", "summary": f"no tests folder at {tests} (an installed package, not a checkout)"}
    files = sorted(
        str(p.relative_to(REPO_ROOT))
        for p in tests.glob("test_*.py")
        if re.search(r"pytest\.mark\.cuda\b", p.read_text())
    )
    xml = out / "cuda_tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", *files]
    try:
        done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=sz.tests_timeout_s)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "files": files, "error": f"pytest -m cuda ran past {sz.tests_timeout_s} s"}
    outcomes = junit_outcomes(xml) if xml.exists() else {}
    counts = {k: sum(v == k for v in outcomes.values()) for k in ("passed", "failed", "error", "skipped")}
    (out / "cuda_tests.log").write_text(done.stdout + done.stderr)
    bad = done.returncode not in (0, 5) or counts["failed"] or counts["error"]  # 5: nothing selected
    summary = ", ".join(f"{v} {k}" for k, v in counts.items() if v) or "no test ran"
    if device.type != "cuda":
        summary += " (no CUDA device here: the CUDA tests skip)"
    tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
    return {
        "status": "failed" if bad else "ok",
        "summary": summary,
        "files": files,
        "returncode": done.returncode,
        **counts,
        "outcomes": outcomes,
        **({"output_tail": tail} if bad else {}),
    }


def junit_outcomes(path: Path) -> dict[str, str]:
    """Each test's outcome ('passed', 'failed', 'error', 'skipped') from pytest's JUnit XML at ``path``."""
    result = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        result[test_id] = next((k for k in ("failure", "error", "skipped") if k in kinds), "passed")
        result[test_id] = {"failure": "failed"}.get(result[test_id], result[test_id])
    return result


def section_probe(device: torch.device, sz: Sizes, out: Path, state: dict[str, Any]) -> dict[str, Any]:
    """The throughput probe as the paper measures (channels_last; on CUDA at 90% of the maximal batch), in each
    precision; later precisions reuse the first one's batch per architecture, so the maximal-batch search runs
    once."""
    from ..probe import ProbeSettings, run_probe
    from ..runtime import cpu_has_native_bf16

    rows, reports, batches = [], [], {}
    precisions = [
        p for p in sz.probe_precisions if not (p == "bf16" and device.type == "cpu" and not cpu_has_native_bf16())
    ]
    skipped = [p for p in sz.probe_precisions if p not in precisions]
    runs = [(arch, sz.probe_size, p) for p in precisions for arch in sz.probe_archs]
    runs.append((sz.probe_archs[0], sz.probe_high, precisions[0]))
    for arch, size, precision in runs:
        batch = batches.get((arch, size), sz.probe_batch)
        settings = ProbeSettings(
            (arch,),
            img_size=size,
            precision=precision,
            channels_last=True,
            batch_size=batch,
            warmup=1 if device.type == "cpu" else 2,
            repeats=sz.repeats,
        )
        report = run_probe(settings, device, progress=True)
        r = report.results[0]
        batches.setdefault((arch, size), r.train.batch_size if r.train else batch)
        reports.append(report.to_dict())
        rows.append(
            {
                "model": arch,
                "px": size,
                "precision": precision,
                "batch": r.train.batch_size,
                "train img/s": round(r.train.images_per_second, 1),
                "infer img/s": round(r.infer.images_per_second, 1),
                "max train batch": r.shown_max_batch("train"),
                "train TFLOP/s": _tera(r.achieved_flops("train")),
                "infer TFLOP/s": _tera(r.achieved_flops("infer")),
                "matmul peak TFLOP/s": _tera(report.matmul_peak_flops),
            }
        )
    m = next(r for r in rows if r["model"] == sz.probe_archs[0])
    summary = f"{m['model']} {m['precision']} at {m['px']} px: train {m['train img/s']} img/s, infer {m['infer img/s']}"
    if skipped:
        summary += f"; {skipped} skipped (this CPU emulates bf16)"
    (out / "probe.json").write_text(json.dumps(reports, indent=2, default=str) + "\n")
    return {"status": "ok", "summary": summary, "table": rows, "skipped_precisions": skipped}


def _tera(flops: float | None) -> float | None:
    return None if flops is None else round(flops / 1e12, 3)


def section_iabn(device: torch.device, sz: Sizes, out: Path, state: dict[str, Any]) -> dict[str, Any]:
    """The TResNet with BatchNorm and with InPlace-ABN: the largest training batch (CUDA search; ``--quick`` and a
    CPU skip it) and the step time at a fixed batch, fp16 on CUDA (fp32 on a CPU)."""
    from ..model.archs import arch_spec
    from ..model.iabn_convert import convert_to_iabn, resolve_backend
    from ..model.load import load_model
    from ..model.steps import search_max_batch, training_step
    from ..probe.timing import time_steps

    arch = state["arch"]
    if arch_spec(arch).family != "tresnet":
        return {
            "status": "skipped",
            "summary": f"{arch} is not a TResNet: InPlace-ABN replaces TResNet's BatchNorm and activation pairs",
        }
    precision = "fp16" if device.type == "cuda" else "fp32"
    rows = []
    for kind in ("BatchNorm", "InPlace-ABN"):
        model = load_model(arch, "none", num_classes=1000).to(device)
        backend = None
        if kind == "InPlace-ABN":
            backend = resolve_backend("auto", device, precision)
            model = convert_to_iabn(model, backend=backend)
        model = model.to(device=device, memory_format=torch.channels_last)
        largest = None
        if sz.search and device.type == "cuda":
            found = search_max_batch(model, "train", sz.model_size, device, precision, channels_last=True)
            largest = found.shown
        step = training_step(model, sz.model_batch, sz.model_size, device, precision, channels_last=True)
        timing = time_steps(step, sz.model_batch, device, warmup=1, repeats=sz.repeats)
        rows.append(
            {
                "norm": kind,
                "backend": backend or "torch",
                "max train batch": largest,
                "batch": sz.model_batch,
                "step ms": round(timing.ms_per_step, 2),
                "train img/s": round(timing.images_per_second, 1),
            }
        )
        del model, step
        if device.type == "cuda":
            torch.cuda.empty_cache()
    bn, iabn = rows
    ratio = iabn["step ms"] / bn["step ms"]
    summary = f"step time InPlace-ABN / BatchNorm x{ratio:.2f} at batch {sz.model_batch}"
    if bn["max train batch"] is not None:
        summary += f"; max batch {bn['max train batch']} -> {iabn['max train batch']}"
    return {"status": "ok", "summary": summary, "table": rows, "precision": precision, "px": sz.model_size}


def section_compile(device: torch.device, sz: Sizes, out: Path, state: dict[str, Any]) -> dict[str, Any]:
    """Training images/s of the checked network (TResNet-M by default) eager and under ``torch.compile`` (the
    compile time apart)."""
    from ..model.load import load_model
    from ..model.steps import synchronize, training_step
    from ..probe.timing import time_steps

    precision = "fp16" if device.type == "cuda" else "fp32"
    rows = []
    for compiled in (False, True):
        model = load_model(state["arch"], "none", num_classes=1000).to(device=device, memory_format=torch.channels_last)
        if compiled:
            torch._dynamo.reset()
            model = torch.compile(model, **({"backend": sz.compile_backend} if sz.compile_backend else {}))
        step = training_step(model, sz.model_batch, sz.model_size, device, precision, channels_last=True)
        t0 = time.perf_counter()
        step()  # the first call compiles
        synchronize(device)
        first_s = time.perf_counter() - t0
        timing = time_steps(step, sz.model_batch, device, warmup=1, repeats=sz.repeats)
        rows.append(
            {
                "mode": f"compile ({sz.compile_backend or 'inductor'})" if compiled else "eager",
                "batch": sz.model_batch,
                "first step s": round(first_s, 1),
                "step ms": round(timing.ms_per_step, 2),
                "train img/s": round(timing.images_per_second, 1),
            }
        )
        del model, step
    eager, comp = rows
    ratio = comp["train img/s"] / eager["train img/s"]
    return {
        "status": "ok",
        "summary": f"compiled / eager training img/s x{ratio:.2f} (compile took {comp['first step s']} s)",
        "table": rows,
        "precision": precision,
        "px": sz.model_size,
    }


def export_row(fmt: str, runs_on: str, diff: float, exported: Any) -> dict[str, Any]:
    """One row of the export table: where the exported file ran, its largest difference from the eager model there
    and at export (on the CPU), and the export's seconds."""
    return {"format": fmt, "runs on": runs_on, "max abs diff on the device": diff,
            "max abs diff at export (CPU)": exported.max_abs_diff, "export s": round(exported.seconds, 1)}  # fmt: skip


def section_export(device: torch.device, sz: Sizes, out: Path, state: dict[str, Any]) -> dict[str, Any]:
    """TorchScript and ONNX files of the fine-tuned model (checked on the CPU as they are written), then run on the
    device: TorchScript loaded onto it, ONNX through onnxruntime's CUDA provider where it has one."""
    from ..model.export import export_onnx, export_torchscript
    from ..model.load import load_model

    model = state.get("model")
    source = "the finetune section's model"
    if model is None:
        arch = state["arch"]
        model, source = load_model(arch, "none", num_classes=8), f"a fresh {arch} (finetune did not finish)"
    size = state.get("img_size", sz.model_size)
    names = state.get("class_names") or [str(c) for c in range(model.get_classifier().out_features)]
    eager = model.to(device).float().eval()
    x = torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(0))
    rows = []
    ts = export_torchscript(model, out / "export" / "model.pt", size, names)
    scripted = torch.jit.load(str(ts.path), map_location=device)
    with torch.no_grad(), full_fp32():  # TF32 off: the device's eager output is the fp32 reference
        reference = eager(x.to(device)).float().cpu()
        diff = (scripted(x.to(device)).float().cpu() - reference).abs().max().item()
    rows.append(export_row("torchscript", str(device), diff, ts))
    ox = export_onnx(model, out / "export" / "model.onnx", size, names)
    import onnxruntime as ort

    wanted = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
    provider = wanted if wanted in ort.get_available_providers() else "CPUExecutionProvider"
    session = ort.InferenceSession(str(ox.path), providers=[provider])
    got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    diff_onnx = (got.float() - reference).abs().max().item()
    rows.append(export_row("onnx", provider, diff_onnx, ox))
    scale = reference.abs().max().item()
    # TorchScript runs the same kernels as the eager model; onnxruntime's CUDA provider may use TF32 (10-bit
    # mantissas) and other convolution algorithms, its CPU provider other summation orders
    tols = {
        "torchscript": 1e-4 * scale + 1e-4,
        "onnx": (1e-2 if provider == "CUDAExecutionProvider" else 1e-4) * scale + 1e-4,
    }
    for r in rows:
        r["tolerance"] = tols[r["format"]]
    bad = [r["format"] for r in rows if not r["max abs diff on the device"] <= r["tolerance"]]
    tol = max(tols.values())
    summary = (
        f"{source}: torchscript on {device} max abs diff {diff:.2g}, onnx on {provider} {diff_onnx:.2g} "
        f"(tolerance {tol:.2g})"
    )
    if provider != wanted:
        summary += f"; onnxruntime here has no {wanted}"
    return {
        "status": "failed" if bad else "ok",
        "summary": summary,
        "table": rows,
        "tolerance": tol,
        **({"error": f"{bad} differ from the eager model on {device} beyond {tol:.2g}"} if bad else {}),
    }


class full_fp32:  # noqa: N801  (a context manager used like a function)
    """TF32 off for CUDA matmuls and convolutions inside the block, restored after."""

    def __enter__(self) -> None:
        self.saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False

    def __exit__(self, *exc: Any) -> None:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved
