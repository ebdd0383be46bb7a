"""``python -m tresnet_nb gpu-check``: one command that proves the GPU path on a real device and measures it.

Sections, in order (the keys of ``gpu_check.json``; ``gpu_check.md`` says the same for people), each written to
both files as soon as it ends, so that a run cut short still reports what it did:

- ``tests``: ``pytest -m cuda`` over the test files that hold CUDA tests, each test's outcome;
- ``probe``: the paper's table on the device (TResNet-M/L/XL and ResNet50 at 224, M at 448; fp16 and bf16,
  channels_last, 90% of the maximal batch), the matmul peak and the FLOP/s each model reaches;
- ``finetune``: the ``miil`` recipe (AutoAugment + random erasing) through the real file pipeline: JPEGs written at
  Kaggle-like sizes, resized once into the cache, fastai loaders with workers and pinned memory; images/s and
  ``data_wait_fraction`` (the share of each step spent waiting for its batch: loading, transfer and the per-image
  policy) at 224 px and then at 448 px, as a progressive 224 -> 448 plan would run them;
- ``iabn``: InPlace-ABN against BatchNorm: the largest training batch and the step time;
- ``compile``: training images/s with and without ``torch.compile``;
- ``export``: TorchScript and ONNX export of the fine-tuned model, the files run on the device and compared with
  the eager model there.

``--quick`` shrinks every section (fixed batches instead of searches, fewer steps); ``--device cpu --quick`` runs
them all at toy sizes on a CPU, which is how the test suite proves the command end to end.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .finetune import section_finetune
from .sections import junit_outcomes, section_compile, section_export, section_iabn, section_probe, section_tests
from .sizes import SECTIONS, Sizes, sizes_for

__all__ = ["SECTIONS", "CheckReport", "gpu_check_command", "junit_outcomes", "run_gpu_check", "sizes_for"]


@dataclass
class CheckReport:
    """What the check found so far; :meth:`write` saves ``gpu_check.json`` and ``gpu_check.md`` in ``out``."""

    out: Path
    device: str
    quick: bool
    environment: dict[str, Any]
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "quick": self.quick,
            "environment": self.environment,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.started)),
            "seconds": round(time.time() - self.started, 1),
            "sections": self.sections,
        }

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        for name, text in (
            ("gpu_check.json", json.dumps(self.to_dict(), indent=2, default=str) + "\n"),
            ("gpu_check.md", self.markdown()),
        ):
            tmp = self.out / f".{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, self.out / name)

    @property
    def ok(self) -> bool:
        return all(s.get("status") != "failed" for s in self.sections.values())

    def markdown(self) -> str:
        env = self.environment
        lines = [
            f"# gpu-check on {self.device}{' (--quick)' if self.quick else ''}",
            "",
            f"torch {env.get('torch')}, timm {env.get('timm')}, fastai {env.get('fastai')}, Python "
            f"{env.get('python')}; {env.get('cpus')} usable CPUs; {round(time.time() - self.started)} s so far.",
            "",
            "| section | status | seconds | summary |",
            "| --- | --- | --- | --- |",
        ]
        for name in SECTIONS:
            s = self.sections.get(name)
            if s is None:
                lines.append(f"| {name} | not run | | |")
            else:
                summary = str(s.get("summary", s.get("error", ""))).replace("|", "/").replace("\n", " ")
                lines.append(f"| {name} | {s['status']} | {s.get('seconds', '')} | {summary} |")
        for name in SECTIONS:
            table = self.sections.get(name, {}).get("table")
            if table:
                lines += ["", f"## {name}", "", *markdown_table(table)]
        return "\n".join(lines) + "\n"


def markdown_table(rows: list[dict[str, Any]]) -> list[str]:
    """``rows`` (dicts with the same keys) as Markdown table lines."""
    keys = list(rows[0])
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))  # noqa: E731
    return [
        "| " + " | ".join(keys) + " |",
        "|" + " --- |" * len(keys),
        *("| " + " | ".join(fmt(r.get(k)) for k in keys) + " |" for r in rows),
    ]


RUNNERS: dict[str, Callable[[torch.device, Sizes, Path, dict[str, Any]], dict[str, Any]]] = {
    "tests": section_tests,
    "probe": section_probe,
    "finetune": section_finetune,
    "iabn": section_iabn,
    "compile": section_compile,
    "export": section_export,
}


def check_environment(device: torch.device) -> dict[str, Any]:
    import importlib.metadata as md
    import platform

    from ..runtime import device_name, usable_cpus

    def version(dist: str) -> str | None:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return None

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device_name": device_name(device),
        "cpus": usable_cpus(),
    }
    env.update({d: version(d) for d in ("timm", "fastai", "fastcore", "torchvision", "onnxruntime", "onnx")})
    return env


def run_gpu_check(
    device: torch.device, quick: bool, out: Path, sections: tuple[str, ...] = SECTIONS, arch: str | None = None
) -> CheckReport:
    """Run ``sections`` on ``device`` and write the report after each; a failing section is recorded (with its
    traceback's end) and the next one runs. ``arch`` (any timm CNN) replaces TResNet-M in every section and the
    paper's set in the probe; the iabn section is TResNet's and skips another network, saying why."""
    from ..model.archs import split_arch
    from ..runtime import device_name

    sz = sizes_for(device, quick)
    if arch is not None:
        arch = split_arch(arch)[0]  # the check trains from random initialisation: a tag would change nothing
        sz = replace(sz, probe_archs=(arch,))
    checked = arch or "tresnet_m"
    report = CheckReport(Path(out).resolve(), device_name(device), quick, check_environment(device))
    report.environment["arch"] = checked
    report.write()
    state: dict[str, Any] = {"arch": checked}  # every section's network; the probe's are sz.probe_archs
    for name in sections:
        print(f"== gpu-check: {name}", flush=True)
        report.sections[name] = {"status": "running"}
        report.write()
        t0 = time.perf_counter()
        try:
            result = RUNNERS[name](device, sz, report.out, state)
        except Exception as err:  # noqa: BLE001  (a section's failure is a finding; the next section still runs)
            result = {
                "status": "failed",
                "error": f"{type(err).__name__}: {err}",
                "traceback": traceback.format_exc().strip().splitlines()[-12:],
            }
        result["seconds"] = round(time.perf_counter() - t0, 1)
        report.sections[name] = result
        report.write()
        print(
            f"   {result['status']}: {result.get('summary', result.get('error', ''))} ({result['seconds']} s)",
            flush=True,
        )
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return report


def gpu_check_command(args: Any) -> int:
    """The ``gpu-check`` command: exit 0 when every section passed or was skipped, 1 when one failed, 2 for bad
    arguments."""
    wanted = args.device or ("cuda" if torch.cuda.is_available() else None)
    if wanted is None:
        print(
            "error: torch sees no CUDA device here. Run the check on a GPU machine, or --device cpu for the toy-size "
            "run that proves the code paths",
            file=sys.stderr,
        )
        return 2
    device = torch.device(wanted)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            f"error: --device {wanted}: torch {torch.__version__} sees no CUDA device (built for CUDA "
            f"{torch.version.cuda}); check nvidia-smi and the driver, or use --device cpu",
            file=sys.stderr,
        )
        return 2
    sections = tuple(args.sections) if args.sections else SECTIONS
    try:
        report = run_gpu_check(device, args.quick, Path(args.out), sections, arch=args.arch)
    except ValueError as err:  # an unknown --arch or a network that takes one input size only
        print(f"error: --arch {args.arch}: {err}", file=sys.stderr)
        return 2
    print(
        f"gpu-check: {'all sections passed' if report.ok else 'a section FAILED'}; report in "
        f"{Path(args.out) / 'gpu_check.md'} and gpu_check.json ({report.to_dict()['seconds']} s)"
    )
    return 0 if report.ok else 1
