"""Hosted notebook platforms (Colab, Kaggle): detection, the GPU hint, the notebooks' install cell, badge links.

Detection uses what the platforms set themselves, as Kaggle's own client does (kagglehub ``env.py``): Colab sets
``COLAB_RELEASE_TAG`` in the kernel's environment (and its kernel has ``google.colab`` loaded); Kaggle sets
``KAGGLE_KERNEL_RUN_TYPE`` (``Interactive`` or ``Batch``) in notebooks and scripts alike. Binder needs none of this:
its image is built from ``binder/`` with the package already installed.
"""

from __future__ import annotations

import os
import sys

import torch

REPO_URL = "https://github.com/tresnet-nb/tresnet-nb"
BRANCH = "main"  # the branch the badges open and the install cell installs from (the repository's default)
REPO_SLUG = REPO_URL.removeprefix("https://github.com/")
# What the install cell installs: the package with the ONNX extra (the quickstart exports ONNX) and the trust extra
# (notebook 09); torch, numpy and the rest are already on both platforms and satisfy the package's version ranges.
INSTALL_SPEC = f"tresnet-nb[export,trust] @ git+{REPO_URL}"

# platform -> (environment variables that mark it, modules its kernel has loaded); Kaggle first: its mark is exact
PLATFORMS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "kaggle": (("KAGGLE_KERNEL_RUN_TYPE",), ()),
    "colab": (("COLAB_RELEASE_TAG",), ("google.colab",)),
}
# platform -> (its name, the menu path that switches a GPU on)
GPU_SWITCH: dict[str, tuple[str, str]] = {
    "colab": ("Colab", "Runtime > Change runtime type > GPU (e.g. T4)"),
    "kaggle": ("Kaggle", "Settings > Accelerator > GPU"),
}

# The first code cell of every notebook. It runs before tresnet_nb can be imported, so it repeats the marks of
# PLATFORMS literally (tests/test_hosted.py checks that they agree) and must not import the package. Anywhere else
# (local JupyterLab, Binder, papermill in CI) it does nothing.
SETUP_CELL = f"""\
# On Colab or Kaggle, install tresnet-nb from its repository; anywhere else this cell does nothing.
import os
import sys

if "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ or "KAGGLE_KERNEL_RUN_TYPE" in os.environ:
    %pip install -q "{INSTALL_SPEC}"
""".rstrip("\n")


def hosted_platform() -> str | None:
    """The hosted notebook platform this kernel runs on: 'colab', 'kaggle', or None (local, Binder, CI)."""
    for platform, (variables, modules) in PLATFORMS.items():
        if any(v in os.environ for v in variables) or any(m in sys.modules for m in modules):
            return platform
    return None


def gpu_advice() -> str | None:
    """One line on how to switch a GPU on, when on Colab or Kaggle without CUDA; None otherwise (CPU runs work)."""
    platform = hosted_platform()
    if platform is None or torch.cuda.is_available():
        return None
    name, menu = GPU_SWITCH[platform]
    return (
        f"No GPU in this {name} session, so training runs on the CPU and is slow: switch one on with {menu}, "
        f"then run the notebook again from the top."
    )


def hosted_check() -> str | None:
    """Print the GPU advice when there is some (see ``gpu_advice``); return ``hosted_platform()``."""
    advice = gpu_advice()
    if advice is not None:
        print(advice)
    return hosted_platform()


def _check_notebook_path(notebook: str) -> None:
    if not notebook.endswith(".ipynb") or notebook.startswith("/"):
        raise ValueError(
            f"notebook {notebook!r} should be a path inside the repository ending in .ipynb, "
            f"e.g. 'notebooks/00_quickstart.ipynb'"
        )


def colab_url(notebook: str) -> str:
    """The link that opens ``notebook`` (a repository path, e.g. 'notebooks/00_quickstart.ipynb') in Colab."""
    _check_notebook_path(notebook)
    return f"https://colab.research.google.com/github/{REPO_SLUG}/blob/{BRANCH}/{notebook}"


def binder_url(notebook: str) -> str:
    """The link that builds the Binder image and opens ``notebook`` (a repository path) in JupyterLab."""
    _check_notebook_path(notebook)
    return f"https://mybinder.org/v2/gh/{REPO_SLUG}/{BRANCH}?urlpath=lab/tree/{notebook}"
