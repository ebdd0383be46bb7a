"""The package's layout holds: no import cycle, no layer importing a higher one, no module over 350 lines.

Every import counts, module level and inside functions alike (a deferred import is still a dependency), read with
the standard library's ``ast``: nothing is imported. Only the package face's lazy re-exports (``tresnet_nb/__init__.py``
names modules in strings) and a package's own ``__init__`` re-exporting its children are not edges.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tresnet_nb"
MAX_LINES = 350
# Bottom first. A unit (a top-level module or subpackage of tresnet_nb) may import its own modules and units of lower
# ranks only; units of one rank are independent of each other. docs/architecture.md draws this.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("paper", "files", "runtime", "bundle", "hints"),
    ("data", "model"),
    ("recipes",),
    ("options",),
    ("config", "evaluation", "probe"),
    ("train",),
    ("report",),
    ("hosted", "steps"),
    ("heads21k", "trust", "compare"),
    ("commands", "runner", "gpucheck"),
    ("sweep",),
    ("cli",),
    ("__main__",),
)


def modules(package: Path) -> dict[str, Path]:
    """Dotted name -> file of every module under ``package``."""
    out = {}
    for f in sorted(package.rglob("*.py")):
        rel = f.relative_to(package.parent).with_suffix("")
        out[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = f
    return out


def _absolute(current: str, is_package: bool, module: str | None, level: int) -> str:
    if level == 0:
        return module or ""
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def import_edges(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (every import statement, wherever it stands)."""
    mods = modules(package)
    top = package.name
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        if m == top:  # the lazy face: its table names modules in strings, resolved on first use
            continue
        is_package = f.name == "__init__.py"
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(m, is_package, node.module, node.level)
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                # importing from a package's __init__ that is one's own ancestor is reading the face, not a cycle
                own_face = m.startswith(t + ".") and mods[t].name == "__init__.py"
                if t and t.startswith(top) and t != m and not own_face and t != top:
                    edges[m].add(t)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected sets of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        for v in edges:
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return found


def unit(module: str) -> str:
    """The layer unit of a dotted module name: 'tresnet_nb.train.fit' -> 'train'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer_problems(edges: dict[str, set[str]], layers: tuple[tuple[str, ...], ...] = LAYERS) -> list[str]:
    """Imports that go up or sideways between units, and units that no layer names."""
    rank = {name: r for r, names in enumerate(layers) for name in names}
    problems = []
    for m in sorted(edges):
        if unit(m) == m.split(".")[0]:  # the package itself
            continue
        if unit(m) not in rank:
            problems.append(
                f"{m}: unit {unit(m)!r} is in no layer; add it to LAYERS (and the diagram in docs/architecture.md)"
            )
            continue
        for t in sorted(edges[m]):
            if unit(t) != unit(m) and unit(t) in rank and rank[unit(t)] >= rank[unit(m)]:
                kind = "a higher" if rank[unit(t)] > rank[unit(m)] else "a same-rank"
                problems.append(f"{m} imports {t}: {kind} layer ({unit(t)!r} is not below {unit(m)!r})")
    return problems


def long_modules(package: Path, limit: int = MAX_LINES) -> list[str]:
    """Modules over ``limit`` lines."""
    out = []
    for m, f in modules(package).items():
        n = len(f.read_text().splitlines())
        if n > limit:
            out.append(f"{m}: {n} lines (at most {limit}; split it by concern)")
    return out


def test_no_import_cycle():
    assert cycles(import_edges(PACKAGE)) == []


def test_every_import_points_down_the_layers():
    assert layer_problems(import_edges(PACKAGE)) == []


def test_no_module_is_over_350_lines():
    assert long_modules(PACKAGE) == []


def test_every_unit_of_the_package_is_in_a_layer():
    units = {unit(m) for m in modules(PACKAGE)} - {PACKAGE.name}
    named = {name for names in LAYERS for name in names}
    assert units == named


# The checks themselves, on small packages with the faults planted: each must be caught.


def _package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "tresnet_nb" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "tresnet_nb"


def test_a_planted_cycle_through_a_deferred_import_is_caught(tmp_path):
    pkg = _package(
        tmp_path,
        {
            "__init__.py": "",
            "train/__init__.py": "",
            "train/fit.py": "from .learner import build\n",
            "train/learner.py": "def build():\n    from .fit import fit  # deferred, still a dependency\n",
        },
    )
    assert cycles(import_edges(pkg)) == [["tresnet_nb.train.fit", "tresnet_nb.train.learner"]]


def test_a_planted_upward_and_a_sideways_import_are_caught(tmp_path):
    pkg = _package(
        tmp_path,
        {
            "__init__.py": "",
            "data/__init__.py": "",
            "data/arrays.py": "def f():\n    from ..train.learner import build\n",
            "model/__init__.py": "",
            "model/load.py": "from tresnet_nb.data import arrays\n",
            "train/__init__.py": "",
            "train/learner.py": "from ..model.load import x\n",
        },
    )
    problems = layer_problems(import_edges(pkg))
    assert problems == [
        "tresnet_nb.data.arrays imports tresnet_nb.train.learner: a higher layer ('train' is not below 'data')",
        "tresnet_nb.model.load imports tresnet_nb.data: a same-rank layer ('data' is not below 'model')",
        "tresnet_nb.model.load imports tresnet_nb.data.arrays: a same-rank layer ('data' is not below 'model')",
    ]


def test_a_planted_351_line_module_is_caught_and_350_is_not(tmp_path):
    pkg = _package(tmp_path, {"__init__.py": "", "ok.py": "x = 1\n" * 350, "big.py": "x = 1\n" * 351})
    assert long_modules(pkg) == ["tresnet_nb.big: 351 lines (at most 350; split it by concern)"]


def test_a_unit_in_no_layer_is_named(tmp_path):
    pkg = _package(tmp_path, {"__init__.py": "", "utils.py": "from .paper import X\n", "paper.py": "X = 1\n"})
    assert layer_problems(import_edges(pkg)) == [
        "tresnet_nb.utils: unit 'utils' is in no layer; add it to LAYERS (and the diagram in docs/architecture.md)"
    ]


def _top_level_imports(path: Path) -> tuple[set[str], set[str]]:
    """(distributions or standard modules, this package's own modules) that ``path`` imports at module level."""
    tree = ast.parse(path.read_text())
    absolute = {a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    absolute |= {
        n.module.split(".")[0] for n in tree.body if isinstance(n, ast.ImportFrom) and n.module and not n.level
    }
    own = {n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.level and n.module}
    return absolute, own


@pytest.mark.parametrize("face", ["tresnet_nb/__init__.py"])
def test_the_face_imports_nothing_at_module_level_but_the_standard_library(face):
    # directly, or through a module of its own (tresnet_nb.hints) that itself imports only the standard library
    imported, own = _top_level_imports(PACKAGE.parent / face)
    for module in own:
        theirs, deeper = _top_level_imports(PACKAGE / f"{module.replace('.', '/')}.py")
        assert not deeper, f"{module} imports {deeper}: the face's own imports stay one module deep"
        imported |= theirs
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}
