"""Binder, Colab and Kaggle: binder/ in step with requirements.txt, the badges, platform detection, the setup cell."""

from __future__ import annotations

import ast
import importlib.metadata as md
import os
import re
import stat
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import nbformat
import pytest
import torch
from conftest import NOTEBOOKS, ROOT
from IPython.core.inputtransformer2 import TransformerManager
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from tresnet_nb import hosted
from tresnet_nb.hosted import REPO_URL, SETUP_CELL, binder_url, colab_url, gpu_advice, hosted_check, hosted_platform

BINDER = ROOT / "binder"
# Top-level requirements that binder/requirements.txt leaves out, each with its reason.
BINDER_EXCLUDED = {
    "pytest": "the test runner: a Binder session runs the notebooks, not the test suite",
    "pytest-xdist": "runs the test suite's files in parallel processes: the test suite's",
    "ruff": "the linter and formatter: development only",
    "playwright": "drives Chromium in the browser test: the test suite's, not a Binder session's",
    "mkdocs": "builds the documentation site from docs/: development only",
}
# Binder installs the CPU builds of these (local version label +cpu) of the very versions requirements.txt pins.
CPU_BUILDS = {"torch", "torchvision"}
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# pyproject extras that binder/requirements.txt need not cover (postBuild installs with --no-deps), with reasons.
EXTRAS_NOT_ON_BINDER = {
    "iabn": "InPlace-ABN compiles against CUDA; Binder has neither a GPU nor its toolchain",
    "dev": "test tools, left out as BINDER_EXCLUDED says",
    "docs": "the documentation site's builder, left out as BINDER_EXCLUDED says",
}
# Modules tresnet_nb imports only when an optional feature is asked for, and which Binder does not install.
OPTIONAL_IMPORTS = {"inplace_abn": "the iabn extra (see EXTRAS_NOT_ON_BINDER), imported only by that conversion"}


def read_requirements(path: Path) -> tuple[dict[str, Requirement], list[str]]:
    """The requirements in ``path`` by canonical name, and its option lines (``--extra-index-url ...``)."""
    reqs, options = {}, []
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            options.append(line)
            continue
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name not in reqs, f"{path.name} lists {name} twice"
        reqs[name] = req
    return reqs, options


TOP, _ = read_requirements(ROOT / "requirements.txt")
BINDER_REQS, BINDER_OPTIONS = read_requirements(BINDER / "requirements.txt")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


# --- binder/ -------------------------------------------------------------------------------------------------------


def test_binder_requirements_are_the_top_level_ones_less_the_documented_exclusions():
    assert set(BINDER_EXCLUDED) <= set(TOP), "an exclusion that requirements.txt does not list is stale"
    assert set(BINDER_REQS) == set(TOP) - set(BINDER_EXCLUDED)


@pytest.mark.parametrize("name", sorted(BINDER_REQS))
def test_binder_versions_are_the_top_level_ones(name):
    top, binder = TOP[name].specifier, BINDER_REQS[name].specifier
    if name in CPU_BUILDS:
        # the top-level pin '==V' becomes '==V+cpu': the same release, the CPU build
        (pin,) = top
        assert pin.operator == "==" and "+" not in pin.version, f"requirements.txt should pin {name} exactly"
        assert str(binder) == f"=={pin.version}+cpu", (
            f"binder/requirements.txt: {name}{binder}; expected =={pin.version}+cpu"
        )
    else:
        assert binder == top, f"binder/requirements.txt has {name}{binder}, requirements.txt {name}{top}"
    assert BINDER_REQS[name].extras == TOP[name].extras and BINDER_REQS[name].marker == TOP[name].marker


def test_binder_takes_cpu_wheels_from_pytorch_cpu_index():
    # '+cpu' wheels exist only there; an extra index (not --index-url) keeps PyPI for everything else
    assert f"--extra-index-url {CPU_INDEX}" in BINDER_OPTIONS, BINDER_OPTIONS
    assert not any(o.startswith(("--index-url", "-i ")) for o in BINDER_OPTIONS), BINDER_OPTIONS


def test_binder_covers_the_package_dependencies():
    # postBuild installs tresnet_nb with --no-deps, so requirements.txt here must name what pyproject asks for
    wanted = [Requirement(r) for r in PYPROJECT["dependencies"]]
    assert set(EXTRAS_NOT_ON_BINDER) <= set(PYPROJECT["optional-dependencies"])
    for extra, reqs in PYPROJECT["optional-dependencies"].items():
        if extra not in EXTRAS_NOT_ON_BINDER:
            wanted += [Requirement(r) for r in reqs]
    missing = sorted({canonicalize_name(r.name) for r in wanted} - set(BINDER_REQS))
    assert not missing, f"binder/requirements.txt lacks {missing}, which pyproject.toml requires"


def imported_modules(source: str) -> set[str]:
    """Top-level names of the modules that ``source`` imports (absolute imports only)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def dependency_closure(names: set[str]) -> set[str]:
    """``names`` and everything they require (as installed here), as canonical distribution names."""
    seen, todo = set(), list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue  # not for this platform
        for text in requires:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def test_binder_installs_everything_the_package_and_notebooks_import():
    sources = [p.read_text() for p in (ROOT / "tresnet_nb").rglob("*.py")]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        sources += [TransformerManager().transform_cell(c.source) for c in nb.cells if c.cell_type == "code"]
    modules = set().union(*map(imported_modules, sources)) - set(sys.stdlib_module_names) - {"tresnet_nb"}
    installed = dependency_closure(set(BINDER_REQS))
    providers = md.packages_distributions()
    missing = {}
    for module in sorted(modules - set(OPTIONAL_IMPORTS)):
        dists = {canonicalize_name(d) for d in providers.get(module, [])}
        if not dists & installed:
            missing[module] = sorted(dists) or "not installed here either"
    assert not missing, f"imported but not installed by binder/requirements.txt (module: distributions): {missing}"


def test_postbuild_is_an_executable_script_that_installs_the_package(tmp_path):
    script = BINDER / "postBuild"
    assert script.stat().st_mode & stat.S_IXUSR, "chmod +x binder/postBuild: repo2docker runs it as a program"
    text = script.read_text()
    assert text.startswith("#!/bin/bash\n") and "set -e" in text  # repo2docker does not stop on errors otherwise
    # run it with a stand-in python that records its arguments and working directory
    log = tmp_path / "calls"
    fake = tmp_path / "bin" / "python"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/bash\necho "$PWD|$*" >> {log}\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run([str(script)], cwd=tmp_path, env=env, check=True, timeout=60)
    calls = log.read_text().splitlines()
    installs = [c for c in calls if re.fullmatch(r"[^|]*\|-m pip install (--\S+ )*--no-deps (--\S+ )*-e \.", c)]
    assert installs == [f"{ROOT}|-m pip install --no-cache-dir --no-deps -e ."], calls


def test_runtime_is_python_311():
    assert (BINDER / "runtime.txt").read_text().strip() == "python-3.11"
    assert SpecifierSet(PYPROJECT["requires-python"]).contains("3.11")


# --- README badges ----------------------------------------------------------------------------------------------

README = (ROOT / "README.md").read_text()
# a badge: [![alt](image)](link); its link, where it goes to Colab or Binder
BADGE_LINK = re.compile(r"\[!\[[^]]*\]\([^)]*\)\]\((https://(?:colab\.research\.google\.com|mybinder\.org)/[^)\s]+)\)")


def notebook_table() -> dict[str, dict[str, str]]:
    """The README's Notebooks table: notebook stem -> {column: cell}."""
    section = README.split("\n## Notebooks\n\n", 1)[1]
    lines = section[: section.index("\n\n")].splitlines()  # the table: the section's first paragraph
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
        rows[cells["notebook"].strip("`")] = cells
    return rows


def badge_notebook(url: str) -> str:
    """The repository path of the notebook a badge link opens; the link must be the one hosted.py builds."""
    match = re.fullmatch(r".*/blob/main/(\S+)|.*\?urlpath=lab/tree/(\S+)", url)
    assert match, f"badge link {url} names no notebook"
    path = match.group(1) or match.group(2)
    expected = colab_url(path) if "colab" in url else binder_url(path)
    assert url == expected, f"badge link {url}; {REPO_URL} gives {expected}"
    return path


def test_every_badge_opens_a_notebook_that_exists_or_is_planned():
    rows = notebook_table()
    links = BADGE_LINK.findall(README)
    assert links
    for url in links:
        path = badge_notebook(url)
        if (ROOT / path).is_file():
            continue
        stem = Path(path).stem
        assert stem in rows and rows[stem]["status"] == "planned", (
            f"{url} opens {path}, which does not exist; add the notebook or mark its row in README's table 'planned'"
        )


def test_binder_badge_opens_the_quickstart_near_the_top():
    top = README.split("\n## ", 1)[0]
    assert f"]({binder_url('notebooks/00_quickstart.ipynb')})" in top


def test_every_notebook_has_a_row_with_its_colab_badge():
    rows = notebook_table()
    for stem, row in rows.items():
        assert f"]({colab_url(f'notebooks/{stem}.ipynb')})" in row["open"], f"README row {stem}: {row['open']!r}"
    for path in NOTEBOOKS:
        assert path.stem in rows, f"{path.name} has no row in README's Notebooks table"


# --- platform detection and the setup cell ----------------------------------------------------------------------

ENV_MARKS = [v for variables, _ in hosted.PLATFORMS.values() for v in variables]
MODULE_MARKS = [m for _, modules in hosted.PLATFORMS.values() for m in modules]


@pytest.fixture
def not_hosted(monkeypatch):
    """No platform's environment variables or modules; returns the monkeypatch to add one."""
    for variable in ENV_MARKS:
        monkeypatch.delenv(variable, raising=False)
    for module in MODULE_MARKS:
        monkeypatch.delitem(sys.modules, module, raising=False)
    return monkeypatch


def mark(monkeypatch, marker: str) -> None:
    if marker in ENV_MARKS:
        monkeypatch.setenv(marker, "Interactive")
    else:
        monkeypatch.setitem(sys.modules, marker, types.ModuleType(marker))


PLATFORM_OF = {m: p for p, (variables, modules) in hosted.PLATFORMS.items() for m in (*variables, *modules)}


def test_platform_marks_are_what_the_platforms_set():
    assert PLATFORM_OF == {"KAGGLE_KERNEL_RUN_TYPE": "kaggle", "COLAB_RELEASE_TAG": "colab", "google.colab": "colab"}


@pytest.mark.parametrize("marker", sorted(PLATFORM_OF))
def test_hosted_platform(not_hosted, marker):
    assert hosted_platform() is None
    mark(not_hosted, marker)
    assert hosted_platform() == PLATFORM_OF[marker]


@pytest.mark.parametrize(
    "platform, menu", [("colab", "Runtime > Change runtime type > GPU"), ("kaggle", "Settings > Accelerator > GPU")]
)
def test_gpu_advice_on_a_hosted_platform_without_gpu(not_hosted, capsys, platform, menu):
    not_hosted.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_advice() is None and hosted_check() is None  # a local CPU run is supported: no advice
    assert capsys.readouterr().out == ""
    mark(not_hosted, next(m for m, p in PLATFORM_OF.items() if p == platform))
    advice = gpu_advice()
    assert advice is not None and menu in advice and "\n" not in advice
    assert hosted_check() == platform
    assert capsys.readouterr().out == advice + "\n"
    not_hosted.setattr(torch.cuda, "is_available", lambda: True)
    assert gpu_advice() is None


def run_setup_cell() -> list[tuple[str, str]]:
    """Execute SETUP_CELL as IPython would, with a stand-in for ``get_ipython()``; returns the line magics it ran."""
    calls = []
    shell = types.SimpleNamespace(run_line_magic=lambda name, line: calls.append((name, line)))
    exec(TransformerManager().transform_cell(SETUP_CELL), {"get_ipython": lambda: shell})
    return calls


def test_setup_cell_does_nothing_when_not_hosted(not_hosted):
    assert run_setup_cell() == []


@pytest.mark.parametrize("marker", sorted(PLATFORM_OF))
def test_setup_cell_installs_the_package_on_each_platform(not_hosted, marker):
    mark(not_hosted, marker)
    assert hosted_platform() is not None  # the cell and hosted_platform agree on every mark
    ((magic, line),) = run_setup_cell()
    assert magic == "pip" and line.startswith("install ") and f"git+{REPO_URL}" in line


def test_setup_cell_is_short_plain_and_installs_this_project():
    tree = ast.parse(TransformerManager().transform_cell(SETUP_CELL))
    assert not any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) for n in ast.walk(tree))
    assert imported_modules(ast.unparse(tree)) <= {"os", "sys"}, "it runs before tresnet_nb is installed"
    assert len(SETUP_CELL.splitlines()) <= 8
    spec = Requirement(hosted.INSTALL_SPEC)
    assert canonicalize_name(spec.name) == canonicalize_name(PYPROJECT["name"]) and spec.url == f"git+{REPO_URL}"
    assert spec.extras <= set(PYPROJECT["optional-dependencies"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_starts_with_the_setup_cell(path):
    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert first.source == SETUP_CELL, f"{path.name}: make tresnet_nb.hosted.SETUP_CELL its first code cell"


@pytest.mark.parametrize("bad", ["/abs/00_quickstart.ipynb", "notebooks/00_quickstart"])
def test_links_refuse_what_is_not_a_notebook_path(bad):
    with pytest.raises(ValueError, match="ending in .ipynb"):
        colab_url(bad)
