"""The package face: ``import tresnet_nb`` is cheap, every public name resolves on first use, the command line's help
and the batch runner start without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import tresnet_nb as tnb
from tresnet_nb import _EXPORTS, _SUBPACKAGES

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "fastai", "timm", "torchvision", "matplotlib", "sklearn")


def loaded_after(code: str) -> list[str]:
    """The heavy libraries a fresh interpreter has loaded after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {list(HEAVY)!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_loads_no_heavy_library():
    assert loaded_after("import tresnet_nb") == []


def test_the_command_lines_help_and_the_runner_load_no_torch():
    help_run = "import contextlib, io\nfrom tresnet_nb.__main__ import main\nwith contextlib.suppress(SystemExit), "
    help_run += "contextlib.redirect_stdout(io.StringIO()):\n    main(['--help'])\nimport tresnet_nb.runner"
    assert loaded_after(help_run) == []
    out = subprocess.run([sys.executable, "-m", "tresnet_nb", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "run" in out.stdout and "train" in out.stdout


def test_every_public_name_resolves_and_dir_lists_it():
    for name in tnb.__all__:
        assert getattr(tnb, name) is not None, name
    assert set(tnb.__all__) <= set(dir(tnb))


def test_public_names_are_unique_sorted_within_their_module_and_never_a_subpackages_name():
    # a public function named like a subpackage would be shadowed once the subpackage is imported (tnb.evaluate)
    assert len(tnb.__all__) == len(set(tnb.__all__))
    for module, names in _EXPORTS.items():
        assert list(names) == sorted(names), module
    units = {p.stem for p in (ROOT / "tresnet_nb").iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    assert set(tnb.__all__) & units == set()
    assert set(_SUBPACKAGES) == units - {"__init__", "__main__"}


def test_an_unknown_name_says_where_the_names_are():
    with pytest.raises(AttributeError, match="tresnet_nb.__all__"):
        tnb.no_such_name  # noqa: B018


def test_the_former_run_metrics_is_the_run_record():
    assert tnb.run_metrics is tnb.run_record
