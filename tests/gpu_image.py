"""A bare CUDA image as gpu-check meets it: the distributions such a machine holds (the lent H200's image, as read
on 2026-11-17: torch 2.11, torchvision 0.26, timm and the scientific stack; no fastai family, no papermill, no
Jupyter), and a sitecustomize that makes every other module of this venv unimportable in a subprocess, so that a
test can run the check as that machine would (with the bundle's distributions standing in for gpu_bundle/)."""

from __future__ import annotations

import importlib.metadata as md
import re
import textwrap
from pathlib import Path

from tresnet_nb.bundle import NEEDED

GPU_IMAGE = set(
    """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin
jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax
llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack
multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft
nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13
nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless
optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip
pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing
pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core
scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson
six sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl
tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision
tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug
wheel wrapt xarray xxhash yarl zipp
""".split()
)


def norm(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def _requirements(dist: str) -> list[str]:
    try:
        reqs = md.requires(dist) or []
    except md.PackageNotFoundError:
        return []
    return [re.split(r"[ ;<>=!~\[(]", r, maxsplit=1)[0] for r in reqs if "extra ==" not in r]


def bundle_closure() -> set[str]:
    """The bundle's distributions and what this venv's versions of them need (fastai itself without its
    requirements: the bundle installs it --no-deps)."""
    seen: set[str] = {norm(d) for d in NEEDED.values()}
    todo = [d for d in NEEDED.values() if norm(d) != "fastai"]
    while todo:
        for req in _requirements(todo.pop()):
            if norm(req) not in seen:
                seen.add(norm(req))
                todo.append(req)
    return seen


def lacking_modules() -> list[str]:
    """Top-level modules of this venv that such a machine would not have."""
    allowed = {norm(d) for d in GPU_IMAGE} | bundle_closure() | {"tresnet-nb"}
    return sorted(
        mod
        for mod, dists in md.packages_distributions().items()
        if mod.isidentifier() and not any(norm(d) in allowed for d in dists)
    )


def write_sitecustomize(folder: Path) -> Path:
    """A ``sitecustomize.py`` in ``folder`` that refuses :func:`lacking_modules` (put ``folder`` on PYTHONPATH)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        textwrap.dedent(f"""
        import sys

        LACKING = frozenset({lacking_modules()!r})


        class _Lacking:
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in LACKING:
                    raise ModuleNotFoundError(f"No module named {{name!r}} (not on the bare CUDA image)", name=name)
                return None


        sys.meta_path.insert(0, _Lacking())
    """)
    )
    return folder
