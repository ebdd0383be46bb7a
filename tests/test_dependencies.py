"""The declared dependencies tell the truth: every distribution the package imports is declared (at run time, or in
the extra whose feature imports it), every requirement has a floor that `make test-floors` installs, and the pinned
sets this project tests with (requirements.txt, Colab's image) fall inside the declared ranges."""

from __future__ import annotations

import importlib.metadata as metadata
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import venvcheck  # noqa: E402

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
RUNTIME = {canonicalize_name(Requirement(r).name): Requirement(r) for r in PROJECT["dependencies"]}
EXTRAS = {
    extra: {canonicalize_name(Requirement(r).name): Requirement(r) for r in requirements}
    for extra, requirements in PROJECT["optional-dependencies"].items()
}
NOT_INSTALLED_HERE = {"inplace_abn": "inplace-abn"}  # builds only with a CUDA toolchain
# modules imported only inside the feature an extra names (lazily, in a function), and that extra
OPTIONAL = {
    "inplace_abn": "iabn",
    "ipywidgets": "widgets",
    "onnx": "export",
    "onnxruntime": "export",
    "mlflow": "tracking",
    "optuna": "sweep",
    "cleanlab": "trust",
    "faiss": "trust",
    "pytorch_grad_cam": "trust",
}


def _distribution(module: str) -> str:
    names = metadata.packages_distributions().get(module) or [NOT_INSTALLED_HERE.get(module, "")]
    assert names[0], f"module {module} belongs to no installed distribution; add it to NOT_INSTALLED_HERE"
    # a module several distributions install (mlflow: mlflow, mlflow-skinny, mlflow-tracing) is the one named like it
    named = [n for n in names if canonicalize_name(n) == canonicalize_name(module)]
    return canonicalize_name((named or names)[0])


def test_every_imported_distribution_is_declared():
    imported = venvcheck.imported_distributions()
    assert {"torch", "fastai", "fastcore", "scipy", "jupyter_client", "IPython"} <= set(imported)  # the scan works
    undeclared = {}
    for module, files in imported.items():
        dist = _distribution(module)
        declared = RUNTIME if module not in OPTIONAL else EXTRAS[OPTIONAL[module]]
        if dist not in declared:
            undeclared[dist] = sorted(files)
    assert undeclared == {}, f"imported but not declared in pyproject.toml: {undeclared}"


def test_optional_modules_are_imported_only_inside_functions():
    import ast

    top_level = set()
    for path in (ROOT / "tresnet_nb").rglob("*.py"):
        for node in ast.parse(path.read_text()).body:  # module-level statements only
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                top_level |= {(n or "").split(".")[0] for n in names}
    assert top_level & set(OPTIONAL) == set()


def test_every_requirement_has_the_floor_the_floors_job_installs():
    pins = dict(p.split("==") for p in venvcheck.floor_pins())
    for requirement in {**RUNTIME, **EXTRAS["export"]}.values():
        floors = [s.version for s in requirement.specifier if s.operator == ">="]
        assert len(floors) == 1, requirement
        assert pins[requirement.name] == floors[0]
    assert Version(pins["torch"]) <= Version("2.11")  # the GPU images' torch is inside the range
    assert Version(pins["huggingface_hub"]) < Version("1")  # the requests-based hub client is inside it too
    assert venvcheck.python_floor() == "3.11"


def test_a_requirement_without_a_floor_is_refused():
    project = {"project": {"dependencies": ["torch"], "optional-dependencies": {"export": [], "dev": []}}}
    with pytest.raises(ValueError, match="'torch' in pyproject.toml has no single '>=' floor"):
        venvcheck.floor_pins(project)


def _pinned(path: Path) -> dict[str, Version]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = Version(version)
    return pins


@pytest.mark.parametrize("pinned", ["requirements.txt", "constraints/colab-gpu.txt"])
def test_the_tested_version_sets_fall_inside_the_declared_ranges(pinned):
    pins = _pinned(ROOT / pinned)
    declared = {**RUNTIME, **EXTRAS["export"]}
    checked = {name: version for name, version in pins.items() if name in declared}
    assert len(checked) >= 5, checked
    outside = {name: str(v) for name, v in checked.items() if not declared[name].specifier.contains(v)}
    assert outside == {}


def test_this_environment_satisfies_the_declared_ranges():
    outside = {}
    for name, requirement in RUNTIME.items():
        installed = Version(metadata.version(name))
        if not requirement.specifier.contains(installed, prereleases=True):
            outside[name] = str(installed)
    assert outside == {}


def test_the_hosted_check_installs_what_the_notebooks_install_cell_installs():
    spec = venvcheck.install_cell_spec("file:///checkout")
    assert spec == "tresnet-nb[export,trust] @ git+file:///checkout"
    assert canonicalize_name(Requirement(spec).name) == canonicalize_name(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"]
    )
