"""After training: calibration, label errors, duplicates and leakage, Grad-CAM (notebook 09)."""

from __future__ import annotations

import importlib
from types import ModuleType

# module -> the distribution that provides it; all three come with the extra `pip install 'tresnet-nb[trust]'`
TRUST_MODULES = {"cleanlab": "cleanlab", "faiss": "faiss-cpu", "pytorch_grad_cam": "grad-cam"}


def need(module: str, why: str) -> ModuleType:
    """Import ``module`` (one of TRUST_MODULES) for ``why``, or fail with the command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        dist = TRUST_MODULES.get(module.split(".")[0], module)
        raise ImportError(
            f"{why} needs {dist}, which is not installed here; install it with `pip install 'tresnet-nb[trust]'` "
            f"(or `pip install {dist}`, or `pip install -r requirements.txt`)"
        ) from err
