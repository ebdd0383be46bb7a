"""What this process runs on: the device, the library versions, its rank in a data-parallel job, whether a host can
be reached (fail fast, with a fix in the message, on machines without internet), and the marker that relays a
kernel's per-epoch lines to the batch runner. torch and the other heavy libraries are imported only when asked for.
"""

from __future__ import annotations

import os
import platform
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

if TYPE_CHECKING:
    import torch

ECHO_ENV = "TRESNET_NB_ECHO"  # set by the batch runner: kernels then print a line per epoch that it relays
ECHO_PREFIX = "[tresnet-nb] "

REACH_BUDGET_S = 1.5  # a TCP connect to the host must succeed this fast, or callers treat it as offline


def host_reachable(url: str, budget_s: float = REACH_BUDGET_S) -> bool:
    """True if a TCP connection to ``url``'s host opens within ``budget_s`` (DNS included; in a daemon thread, so a
    hanging resolver cannot hold the caller longer)."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    result: list[bool] = []

    def attempt() -> None:
        try:
            socket.create_connection((parsed.hostname, port), timeout=budget_s).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(budget_s)
    return bool(result and result[0])


def device() -> torch.device:
    """The device runs use: the first CUDA device when there is one, else the CPU."""
    import torch

    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(dev: torch.device) -> str:
    """'cuda: <GPU name>' or 'cpu: <CPU name>'."""
    import torch

    if dev.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(dev)}"
    return f"cpu: {cpu_name()}" if dev.type == "cpu" else dev.type


def environment() -> dict[str, Any]:
    """Device, library versions and CPU threads, recorded with every run."""
    import fastai
    import timm
    import torch

    return {
        "device": device_name(device()),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "versions": {"torch": torch.__version__, "timm": timm.__version__, "fastai": fastai.__version__},
    }


def _dist() -> Any:
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def rank() -> int:
    """This process's rank: from the process group, else RANK from the launcher, else 0."""
    dist = _dist()
    return dist.get_rank() if dist is not None else int(os.environ.get("RANK", 0))


def world_size() -> int:
    """Number of processes in the job (1 when alone)."""
    dist = _dist()
    return dist.get_world_size() if dist is not None else int(os.environ.get("WORLD_SIZE", 1))


def is_main() -> bool:
    """True in the process that writes files and prints (rank 0)."""
    return rank() == 0


def barrier() -> None:
    """Wait for every process (nothing to wait for when alone)."""
    dist = _dist()
    if dist is not None:
        dist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """Run the body in rank 0 first, then in the others (e.g. a download or a cache they then only read)."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()
