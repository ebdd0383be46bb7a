"""Prove the declared dependency ranges in fresh virtual environments (``make test-floors``, ``make test-hosted``).

floors  Every dependency in pyproject.toml pinned to its floor (``name>=X`` becomes ``name==X``, the ``export`` extra
        and pytest included), on the oldest Python that ``requires-python`` allows, the package installed editable;
        then the smoke runs of the quickstart and one dataset notebook.
hosted  A hosted notebook image as users meet it: the versions listed in constraints/<image>.txt (Colab's GPU
        image by default; the file names its source) installed first, then the notebooks' own install cell
        (tresnet_nb.hosted.SETUP_CELL) with the repository's URL replaced by this checkout's committed HEAD
        (git+file://), under the same constraints, so pip fails if a declared range would change an image
        package; then the quickstart smoke run against the installed (not the checked-out) package.

Both need the package registry and, for torch's CUDA wheels, about 6 GB of disk per environment; neither belongs
in CI's run. Usage: python tools/venvcheck.py floors|hosted [--image colab-gpu] [--python PATH] [--venv DIR] [--reuse]
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOOR_EXTRAS = ("export",)  # the quickstart exports ONNX
TEST_DISTRIBUTIONS = ("pytest",)  # from the dev extra
# The smoke runs both checks end with: the quickstart (the embedded data, export included) and one dataset
# notebook on its fixture in the official format (image files, the highres cache, a Kaggle-style csv).
SMOKE_TESTS = (
    "tests/test_notebooks.py::test_quickstart_smoke_run",
    "tests/test_notebook_series.py::test_notebook_smoke_run_on_a_fixture[06_plant_pathology_2020-plant_pathology]",
)
HOSTED_SMOKE = SMOKE_TESTS[:1]
SPEC = re.compile(r"^\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(.*)$")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def floor_pins(project: dict | None = None) -> list[str]:
    """``name==floor`` for every runtime dependency, the FLOOR_EXTRAS and TEST_DISTRIBUTIONS; a requirement without
    a ``>=`` floor is an error (the floors job could not say what it proved)."""
    project = (project or _pyproject())["project"]
    extras = project.get("optional-dependencies", {})
    requirements = list(project["dependencies"]) + [r for name in FLOOR_EXTRAS for r in extras[name]]
    wanted = set(TEST_DISTRIBUTIONS)
    requirements += [r for r in extras.get("dev", []) if SPEC.match(r).group(1) in wanted]
    pins = []
    for requirement in requirements:
        name, _, constraint = SPEC.match(requirement).groups()
        floors = [c.strip()[2:].strip() for c in constraint.split(",") if c.strip().startswith(">=")]
        if len(floors) != 1:
            raise ValueError(
                f"{requirement!r} in pyproject.toml has no single '>=' floor; give it one (the lowest version the "
                f"code runs on, proved by make test-floors)"
            )
        pins.append(f"{name}=={floors[0]}")
    return pins


def python_floor(project: dict | None = None) -> str:
    """The X.Y of requires-python's '>=' bound."""
    spec = (project or _pyproject())["project"]["requires-python"]
    match = re.match(r"^>=\s*(\d+\.\d+)", spec)
    if match is None:
        raise ValueError(f"requires-python {spec!r} has no '>=X.Y' floor")
    return match.group(1)


def find_python(version: str) -> str:
    """An interpreter of ``version`` (X.Y) that runs: under pyenv's versions, or pythonX.Y on PATH (a pyenv shim
    on PATH may name a version that is not active, so each candidate is asked for its version)."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = [str(p / "bin" / "python") for p in sorted(pyenv.glob(f"{version}.*"), reverse=True)]
    candidates += [found for found in [shutil.which(f"python{version}")] if found]
    for candidate in candidates:
        probe = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True
        )
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    raise SystemExit(
        f"no working Python {version} found ({pyenv}/{version}.*, python{version} on PATH): install it (e.g. "
        f"`pyenv install {version}`) or pass --python /path/to/python{version}"
    )


def image_pins(image: str) -> tuple[Path, list[str]]:
    """The constraints file of a hosted image and its ``name==version`` lines."""
    path = ROOT / "constraints" / f"{image}.txt"
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted((ROOT / "constraints").glob("*.txt")))
        raise SystemExit(f"no constraints/{image}.txt; known images: {known}")
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return path, [line for line in lines if line]


def install_cell_spec(url: str) -> str:
    """The requirement the notebooks' install cell passes to pip, with the repository URL replaced by ``url``."""
    from tresnet_nb import hosted

    tree = re.search(r'%pip install -q "([^"]+)"', hosted.SETUP_CELL)
    if tree is None:
        raise ValueError('hosted.SETUP_CELL has no `%pip install -q "..."` line')
    return tree.group(1).replace(hosted.REPO_URL, url)


def _run(argv: list[str], **kwargs) -> None:
    print("+", " ".join(argv), flush=True)
    subprocess.run(argv, check=True, **kwargs)


def _venv(python: str, where: Path) -> Path:
    if where.exists():
        shutil.rmtree(where)
    _run([python, "-m", "venv", str(where)])
    pip = [str(where / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run([*pip, "--upgrade", "pip"])
    return where / "bin" / "python"


def _pytest(python: Path, tests: tuple[str, ...], basetemp: Path, env: dict[str, str] | None = None) -> None:
    # the venv's pytest script, not `python -m pytest`: the working directory then stays off sys.path, so the
    # tests import the package that was installed, not this checkout (editable installs point here anyway)
    script = python.parent / "pytest"
    _run([str(script), "-q", "-p", "no:cacheprovider", f"--basetemp={basetemp}", *tests], cwd=ROOT, env=env)


def check_floors(python: str | None, where: Path, reuse: bool = False) -> None:
    version = python_floor()
    interpreter = python or find_python(version)
    pins = floor_pins()
    requirements = where / "floors.txt"
    listed = "\n".join(pins) + "\n"
    print(f"floors on Python {version}:\n  " + "\n  ".join(pins), flush=True)
    if reuse and requirements.is_file() and requirements.read_text() == listed:
        py = where / "bin" / "python"
        print(f"reusing {where}: it holds these floors")
    else:
        py = _venv(interpreter, where)
        pending = where / "floors.pending.txt"
        pending.write_text(listed)
        _run([str(py), "-m", "pip", "install", "--quiet", "-r", str(pending)])
        pending.rename(requirements)  # named floors.txt only once the install succeeded (what --reuse trusts)
    _run([str(py), "-m", "pip", "install", "--quiet", "--no-deps", "-e", str(ROOT)])
    _run([str(py), "-m", "pip", "check"])
    _report(py, [p.split("==")[0] for p in pins])
    _pytest(py, SMOKE_TESTS, where / "pytest")


def check_hosted(image: str, python: str | None, where: Path, reuse: bool = False) -> None:
    constraints, pins = image_pins(image)
    version = re.search(r"^# python: (\d+\.\d+)", constraints.read_text(), re.M)
    interpreter = python or find_python(version.group(1) if version else f"{sys.version_info[0]}.{sys.version_info[1]}")
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], check=True, capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if dirty:
        print(f"note: the install cell installs the committed HEAD {head.stdout.strip()[:10]}, not uncommitted edits")
    image_file = where / "image.txt"
    if reuse and image_file.is_file() and image_file.read_text() == constraints.read_text():
        py = where / "bin" / "python"
        print(f"reusing {where}: it holds the {image} image's packages")
        _run([str(py), "-m", "pip", "uninstall", "--quiet", "--yes", "tresnet-nb"])
    else:
        py = _venv(interpreter, where)
        _run([str(py), "-m", "pip", "install", "--quiet", "-c", str(constraints), *pins])
        image_file.write_text(constraints.read_text())  # only once the image's packages are in
    spec = install_cell_spec(f"file://{ROOT}")
    _run([str(py), "-m", "pip", "install", "--quiet", "-c", str(constraints), spec])
    _run([str(py), "-m", "pip", "install", "--quiet", "-c", str(constraints), *TEST_DISTRIBUTIONS])
    _run([str(py), "-m", "pip", "check"])
    _report(py, [p.split("==")[0] for p in pins])
    with tempfile.TemporaryDirectory() as elsewhere:
        where_from = subprocess.run(
            [str(py), "-c", "import tresnet_nb; print(tresnet_nb.__file__)"],
            cwd=elsewhere,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    if Path(where_from).resolve().is_relative_to(ROOT / "tresnet_nb"):
        raise SystemExit(f"the hosted venv imports tresnet_nb from the checkout ({where_from}), not the install")
    print(f"installed package: {where_from}")
    _pytest(py, HOSTED_SMOKE, where / "pytest")


def _report(py: Path, names: list[str]) -> None:
    code = (
        "import importlib.metadata as m, sys\n"
        "print('python', sys.version.split()[0])\n"
        f"for n in {names!r}:\n"
        "    print(n, m.version(n))\n"
    )
    _run([str(py), "-c", code])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("check", choices=("floors", "hosted"))
    parser.add_argument("--image", default="colab-gpu", help="constraints/<image>.txt for the hosted check")
    parser.add_argument("--python", help="the interpreter to build the venv from (default: found by version)")
    parser.add_argument("--venv", type=Path, help="where to build it (default .venv-floors / .venv-hosted)")
    parser.add_argument("--reuse", action="store_true", help="keep a venv that already holds these floors / image")
    args = parser.parse_args(argv)
    where = (args.venv or ROOT / f".venv-{args.check}").resolve()
    started = time.perf_counter()
    if args.check == "floors":
        check_floors(args.python, where, args.reuse)
    else:
        check_hosted(args.image, args.python, where, args.reuse)
    print(f"{args.check}: passed in {time.perf_counter() - started:.0f} s ({where})")
    return 0


def imported_distributions(package: Path = ROOT / "tresnet_nb") -> dict[str, set[str]]:
    """Top-level third-party modules imported anywhere in ``package`` -> the files importing them."""
    found: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and not node.level and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top != package.name:
                    found.setdefault(top, set()).add(str(path.relative_to(package.parent)))
    return found


if __name__ == "__main__":
    sys.exit(main())
