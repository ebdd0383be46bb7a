"""The wheels the GPU check needs beyond a bare CUDA image, installed offline before anything else is imported.

A CUDA machine without a package registry (a lent GPU box, an air-gapped workstation) often holds torch, timm and
the scientific stack but not fastai and its family. ``tools/gpu_bundle.sh`` downloads those wheels (pure Python, or
cp312 builds) into ``gpu_bundle/`` on a machine that can reach PyPI; carry that folder with the working tree and
``python -m tresnet_nb gpu-check`` installs from it with ``pip --no-index --no-deps --target`` into a folder beside
the wheels, which it puts on the path (the interpreter's environment is left as it was; fastai's full requirements,
spaCy included, would not fit and are not used). Only the standard library is imported here: this runs first.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

BUNDLE_ENV = "TRESNET_NB_BUNDLE"
DEFAULT_BUNDLE = Path(__file__).resolve().parent.parent / "gpu_bundle"
# import name -> distribution: what the check imports that a bare CUDA image may lack (fastai --no-deps, and
# the part of its requirements fastai.vision and tresnet_nb load: fastprogress 1.0.3, the last one that does not
# import python-fasthtml and its web stack; plum-dispatch for fasttransform, beartype for plum)
NEEDED: dict[str, str] = {
    "fastai": "fastai",
    "fastcore": "fastcore",
    "fasttransform": "fasttransform",
    "fastprogress": "fastprogress",
    "fastdownload": "fastdownload",
    "plum": "plum-dispatch",
    "beartype": "beartype",
}


def missing_modules(needed: dict[str, str] | None = None) -> dict[str, str]:
    """The entries of ``needed`` (default :data:`NEEDED`) whose module this interpreter cannot find."""
    return {mod: dist for mod, dist in (needed or NEEDED).items() if importlib.util.find_spec(mod) is None}


def bundle_dir() -> Path:
    """Where the wheels are: ``$TRESNET_NB_BUNDLE``, else ``gpu_bundle/`` at the repository root."""
    return Path(os.environ.get(BUNDLE_ENV) or DEFAULT_BUNDLE)


def site_dir(folder: Path) -> Path:
    """Where the bundle's wheels are installed (``pip --target``): beside them, per Python version, so that the
    interpreter's own environment is never changed."""
    return folder / f"site-py{sys.version_info.major}{sys.version_info.minor}"


def _use(site: Path) -> None:
    """Put ``site`` first on this process's path and on that of its subprocesses (the check's pytest run)."""
    if str(site) not in sys.path:
        sys.path.insert(0, str(site))
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(site)]
    os.environ["PYTHONPATH"] = os.pathsep.join([str(site), *paths])
    importlib.invalidate_caches()


def ensure_bundle(needed: dict[str, str] | None = None, folder: Path | None = None) -> list[str]:
    """Make whatever of ``needed`` is missing importable from the bundle: installed offline without dependencies
    into :func:`site_dir` (once) and put on the path. Return the distributions taken from the bundle (none when
    everything is there). Raise SystemExit with the fix when the bundle is absent or lacks a wheel, before any
    work is done."""
    missing = missing_modules(needed)
    if not missing:
        return []
    folder = folder or bundle_dir()
    dists = sorted(set(missing.values()))
    site = site_dir(folder)
    if site.is_dir():  # installed by an earlier run
        _use(site)
        if not missing_modules(needed):
            return dists
    fix = (
        f"On a machine that reaches PyPI run `bash tools/gpu_bundle.sh` (it writes {DEFAULT_BUNDLE.name}/, a few MiB), "
        f"carry that folder here (or set {BUNDLE_ENV}), then run the check again; or `pip install {' '.join(dists)}`."
    )
    wheels = sorted(folder.glob("*.whl")) if folder.is_dir() else []
    if not wheels:
        raise SystemExit(f"gpu-check needs {dists} (missing here) and finds no wheels in {folder}. {fix}")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-index",
        "--no-deps",
        "--find-links",
        str(folder),
        "--target",
        str(site),
        *dists,
    ]
    print(f"gpu-check: installing {', '.join(dists)} from {folder} into {site} (offline, --no-deps)", flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"gpu-check could not install {dists} from {folder}:\n{done.stderr.strip()}\n{fix}")
    _use(site)
    still = missing_modules(needed)
    if still:
        raise SystemExit(f"gpu-check installed {dists} from {folder} but still cannot import {sorted(still)}. {fix}")
    return dists
