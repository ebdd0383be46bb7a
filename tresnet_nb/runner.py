"""Batch execution of notebooks with papermill: parameters checked up front, one folder per notebook, a summary."""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client.manager import KernelManager
from tqdm.auto import tqdm
from traitlets import Unicode, default

from .config import PRESETS
from .hints import did_you_mean, unknown_names
from .report.record import summary_line
from .runtime import ECHO_ENV, ECHO_PREFIX

SUMMARY_COLUMNS = (
    "notebook",
    "status",
    "metric_name",
    "metric_value",
    "paper_target",
    "pretrained",
    "fixture_data",
    "wall_seconds",
    "error",
)


class IPCKernelManager(KernelManager):
    """Kernels talk over local IPC sockets instead of unencrypted TCP ports on 127.0.0.1, each kernel's sockets in a
    private folder of its own: jupyter_client's default prefix, ``kernel-ipc`` in the working folder, is shared by
    kernels started at the same moment from the same folder (two runs, two test workers), whose messages then cross
    ("Invalid Signature")."""

    transport = Unicode("ipc")

    @default("ip")
    def _private_ipc_prefix(self) -> str:
        self._ipc_folder = tempfile.mkdtemp(prefix="tresnet_nb-kernel-")  # mode 0700
        return os.path.join(self._ipc_folder, "ipc")

    def cleanup_ipc_files(self) -> None:
        super().cleanup_ipc_files()
        folder = getattr(self, "_ipc_folder", None)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


class EchoProgress:
    """A file-like sink for the kernel's stdout that relays only the per-epoch lines of :class:`EpochLog`."""

    def __init__(self) -> None:
        self.pending = ""  # stream messages are not aligned to lines

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            if line.startswith(ECHO_PREFIX):
                tqdm.write("  " + line[len(ECHO_PREFIX) :])
        return len(text)

    def flush(self) -> None:
        pass


def parse_value(text: str) -> Any:
    """Parse a ``-p KEY VALUE`` value as papermill's command line does: True, False, None, int, float, else text."""
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def notebook_parameters(path: Path) -> dict[str, Any]:
    """The parameters (name -> default text) of the notebook at ``path``, from its cell tagged ``parameters``."""
    import papermill

    params = papermill.inspect_notebook(str(path))
    if not params:
        raise ValueError(
            f"{str(path)!r} has no cell tagged 'parameters'; tag the cell of literals that papermill fills"
        )
    return params


def check_run(paths: list[Path], preset: str | None, params: dict[str, Any]) -> None:
    """Refuse, before anything runs, missing notebooks, an unknown preset and parameters a notebook lacks."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}{did_you_mean(preset, PRESETS)}; choose one of {sorted(PRESETS)}")
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"Notebook {str(path)!r} does not exist")
        known = notebook_parameters(path)
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ValueError(
                f"{path.name} has no parameters {unknown_names(unknown, known)}; its parameters are {sorted(known)}"
            )


@dataclass
class Outcome:
    """The result of executing one notebook."""

    notebook: str
    status: str  # 'ok' or 'failed'
    out_dir: Path
    wall_seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    def row(self) -> dict[str, Any]:
        m = self.metrics
        return {
            "notebook": self.notebook,
            "status": self.status,
            "metric_name": m.get("metric_name"),
            "metric_value": m.get("metric_value"),
            "paper_target": m.get("paper_target"),
            "pretrained": m.get("pretrained"),
            "fixture_data": m.get("fixture_data"),
            "wall_seconds": round(self.wall_seconds, 1),
            "error": self.error,
        }


def run_one(path: Path, out: Path, preset: str | None, params: dict[str, Any], kernel_name: str | None) -> Outcome:
    """Execute the notebook at ``path`` into ``out/<stem>/``; a failure is kept (notebook with its error), not raised."""
    import papermill

    run_dir = (out / path.stem).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    parameters = {**params, "OUTPUT_DIR": str(run_dir)}
    if preset is not None:
        parameters["PRESET"] = preset
    start = time.perf_counter()
    status, error = "ok", ""
    os.environ[ECHO_ENV] = "1"  # the kernel inherits it and prints a line per epoch, relayed by EchoProgress
    try:
        papermill.execute_notebook(
            str(path),
            str(run_dir / path.name),
            parameters=parameters,
            kernel_name=kernel_name,
            cwd=str(path.parent),
            progress_bar=True,
            stdout_file=EchoProgress(),
            kernel_manager_class=IPCKernelManager,
        )
    except Exception as err:  # papermill raises for any failed cell; the executed notebook holds the traceback
        last_line = str(err).strip().splitlines()[-1] if str(err).strip() else ""
        status, error = "failed", f"{type(err).__name__}: {last_line}"
    finally:
        os.environ.pop(ECHO_ENV, None)
    wall = time.perf_counter() - start
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if status == "ok" and metrics_path.is_file() else {}
    if status == "ok" and not metrics:
        status, error = "failed", f"the notebook ran but wrote no {metrics_path}"
    return Outcome(path.stem, status, run_dir, wall, metrics, error)


def write_summary(outcomes: list[Outcome], out: Path) -> tuple[Path, Path]:
    """Write ``out/summary.csv`` and ``out/summary.md``, one row per notebook."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [o.row() for o in outcomes]
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(SUMMARY_COLUMNS) + " |", "|" + " --- |" * len(SUMMARY_COLUMNS)]
    lines += [
        "| " + " | ".join("" if r[c] is None else str(r[c]).replace("|", "/") for c in SUMMARY_COLUMNS) + " |"
        for r in rows
    ]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return out / "summary.csv", out / "summary.md"


def run_notebooks(
    paths: list[Path | str],
    out: Path | str = "runs",
    preset: str | None = None,
    params: dict[str, Any] | None = None,
    kernel_name: str | None = None,
) -> list[Outcome]:
    """Execute ``paths`` with papermill into ``out``, going on after failures; print a line per notebook."""
    paths, out, params = [Path(p) for p in paths], Path(out), dict(params or {})
    check_run(paths, preset, params)
    outcomes = []
    for path in paths:
        outcome = run_one(path, out, preset, params, kernel_name)
        outcomes.append(outcome)
        if outcome.status == "ok":
            print(summary_line(outcome.metrics, outcome.wall_seconds), flush=True)
        else:
            print(
                f"{outcome.notebook}: FAILED after {outcome.wall_seconds:.0f}s: {outcome.error} "
                f"(executed notebook with the traceback: {outcome.out_dir / path.name})",
                flush=True,
            )
    write_summary(outcomes, out)
    return outcomes
