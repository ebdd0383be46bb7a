"""What this process runs on: the device, the library versions, its rank in a data-parallel job, whether a host can
be reached (fail fast, with a fix in the message, on machines without internet), and the marker that relays a
kernel's per-epoch lines to the batch runner. torch and the other heavy libraries are imported only when asked for.
"""

from __future__ import annotations

import os
import pickle
import platform
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

if TYPE_CHECKING:
    import torch

ECHO_ENV = "TRESNET_NB_ECHO"  # set by the batch runner: kernels then print a line per epoch that it relays
ECHO_PREFIX = "[tresnet-nb] "

T = TypeVar("T")

REACH_BUDGET_S = 1.5  # a TCP connect to the host must succeed this fast, or callers treat it as offline


def progress(items: Iterable[T], show: bool, total: int | None = None, **bar: Any) -> Iterable[T]:
    """``items`` behind fastprogress's bar when ``show`` (``total`` and ``bar`` passed to it), else as they are:
    fastprogress's own ``display=False`` still writes a block character and a carriage return to the console.
    Where the output is neither a notebook nor a terminal (a log file, a pipe), a line at every tenth instead:
    fastprogress redraws its console bar there with carriage returns, one copy per update, all on one line."""
    if not show:
        return items
    from fastprogress.fastprogress import IN_NOTEBOOK, progress_bar

    if IN_NOTEBOOK or _is_terminal(sys.stdout):
        return progress_bar(items, total=total, **bar)
    return _progress_lines(items, total if total is not None else _length(items))


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _length(items: Iterable[Any]) -> int | None:
    try:
        return len(items)  # type: ignore[arg-type]
    except TypeError:
        return None


def _progress_lines(items: Iterable[T], total: int | None) -> Iterator[T]:
    """``items``, printing ``done/total (pct), seconds`` each time another tenth is done (and once at the end when
    the total is unknown)."""
    start, done, shown = time.perf_counter(), 0, 0
    for item in items:
        yield item
        done += 1
        if total and done * 10 // total > shown:
            shown = done * 10 // total
            print(f"  {done}/{total} ({done / total:.0%}), {time.perf_counter() - start:.0f} s", flush=True)
    if not total:
        print(f"  {done} done, {time.perf_counter() - start:.0f} s", flush=True)


def first_hop(url: str) -> tuple[str, int]:
    """Host and port that a request for ``url`` connects to first: the proxy ``urllib.request.urlopen`` would use
    (HTTP_PROXY/HTTPS_PROXY less NO_PROXY, read with ``urllib.request.getproxies``), else ``url``'s own host."""
    from urllib.request import getproxies, proxy_bypass  # 80 ms of imports (http.client, ssl): only when asked

    parsed = urlparse(url)
    proxy = getproxies().get(parsed.scheme)
    if proxy and not proxy_bypass(parsed.hostname or ""):
        hop = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        return hop.hostname or "", hop.port or (443 if hop.scheme == "https" else 80)
    return parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80)


def host_reachable(url: str, budget_s: float = REACH_BUDGET_S) -> bool:
    """True if a TCP connection to ``url``'s first hop (its proxy when one is set, see :func:`first_hop`)
    opens within ``budget_s`` (DNS included; in a daemon thread, so a hanging resolver cannot hold the caller)."""
    host, port = first_hop(url)
    result: list[bool] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=budget_s).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(budget_s)
    return bool(result and result[0])


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, which taskset, cpusets and Slurm set), else the
    machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def worker_count() -> int:
    """Worker processes for work that decodes images: this process's share of the usable CPUs, which the processes
    of a job on this machine (torchrun's and accelerate's ``LOCAL_WORLD_SIZE``) split evenly; at least 1."""
    try:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE") or 1))
    except ValueError:
        local = 1
    return max(1, usable_cpus() // local)


def loader_workers(dev: torch.device) -> int:
    """DataLoader worker processes for training on ``dev``: on CUDA all of this process's share of the CPUs but one
    (the training process itself mostly waits for the GPU); on a CPU at most 2, whose decoding would otherwise take
    the cores from the training threads."""
    share = worker_count()
    return max(1, share - 1) if dev.type == "cuda" else min(2, share)


def device() -> torch.device:
    """The device runs use: the first CUDA device when there is one, else the CPU."""
    import torch

    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


# x86 CPUs that compute bfloat16 natively: AVX512-BF16 (Intel Cooper Lake and later, AMD Zen 4 and later) or AMX tiles
# (Intel Sapphire Rapids and later). Without them oneDNN emulates bf16 and CPU autocast slows training down instead:
# on an AVX2-only AMD EPYC, tresnet_m at 64 px trained at 1.8 img/s in bf16 against 21.1 in fp32
# (benchmarks/bench_precision.py), while an AVX512-BF16 EPYC trained 1.85x faster in bf16 (docs/benchmarks.md).
X86_BF16_CHECKS = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (x86: AVX512-BF16 or AMX; elsewhere, e.g. arm64 with its BF16
    extension: oneDNN's own check), so that bf16 autocast is faster than fp32 rather than emulated."""
    import torch

    if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in X86_BF16_CHECKS)
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def cpu_precision() -> str:
    """The precision that trains fastest on this CPU: 'bf16' where it computes bfloat16 natively, else 'fp32'."""
    return "bf16" if cpu_has_native_bf16() else "fp32"


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


def barrier_kwargs(backend: str) -> dict[str, Any]:
    """The arguments of ``torch.distributed.barrier`` under ``backend``: NCCL's names this process's GPU (LOCAL_RANK
    from the launcher, which ``init_distributed`` made the current device; else the current device). Unnamed,
    NCCL guesses one (rank mod device count), warns, and can hang or crowd GPU 0 (torch's ``barrier`` notes)."""
    if backend != "nccl":
        return {}
    import torch

    local = os.environ.get("LOCAL_RANK")
    return {"device_ids": [int(local) if local is not None else torch.cuda.current_device()]}


def barrier() -> None:
    """Wait for every process (nothing to wait for when alone)."""
    dist = _dist()
    if dist is not None:
        dist.barrier(**barrier_kwargs(dist.get_backend()))


@contextmanager
def main_first() -> Iterator[None]:
    """Run the body in rank 0 first, then in the others (e.g. a download they then only read). The others wait at
    a barrier, under the process group's timeout: keep the body short next to it, and share work that grows with
    the dataset with :func:`every_rank` instead. The body must hold no collective (the ranks would mismatch)."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def _portable(err: Exception) -> Exception:
    """``err`` if it survives pickling (to travel to the other ranks), else a RuntimeError that names it."""
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:  # any failure to pickle or unpickle: send its text instead
        return RuntimeError(f"{type(err).__name__}: {err}")


def every_rank(work: Callable[[int, int], T]) -> list[T]:
    """``work(rank, world_size)`` run by every process at once, and every rank's result (in rank order) returned
    to each; ``[work(0, 1)]`` alone. For work that grows with the data: each rank does its share and the only wait
    is the one at the end, for the slowest share, rather than every rank but 0 waiting at a barrier for all of it
    (``main_first``). If any rank's ``work`` raises, every rank raises (that rank's exception), so none is left
    waiting for a collective the others never reach."""
    dist = _dist()
    if dist is None:
        return [work(0, 1)]
    me, world = dist.get_rank(), dist.get_world_size()
    own: Exception | None = None
    try:
        outcome: tuple[bool, Any] = (True, work(me, world))
    except Exception as err:  # every exception: the other ranks must hear of it, or they wait until the timeout
        own, outcome = err, (False, _portable(err))
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, outcome)
    if own is not None:
        raise own
    failed = [(r, value) for r, (ok, value) in enumerate(gathered) if not ok]
    if failed:
        r, err = failed[0]
        err.add_note(f"(raised in rank {r} of {world}, in work every rank shared; this is rank {me})")
        raise err
    return [value for _, value in gathered]


def machine_share() -> tuple[int, int]:
    """This process's index among the processes of the job on this machine (by host name), and their number:
    how processes split work on a folder of this machine, such as the image cache; ``(0, 1)`` alone."""
    hosts = every_rank(lambda rank, world: socket.gethostname())
    mine = [r for r, host in enumerate(hosts) if host == hosts[rank()]]
    return mine.index(rank()), len(mine)
