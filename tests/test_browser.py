"""The workbook in a real browser: JupyterLab driven by headless Chromium (Debian's, through Playwright).

One private JupyterLab server (loopback, free port, random token, temporary root and Jupyter folders) serves copies of
the notebooks prepared with papermill under the ``smoke`` preset. Each notebook is opened in the page and run with
JupyterLab's own Run > Run All Cells; the page must then show no error output, a fastprogress bar, a plot and a
rendered widget. Small synthetic notebooks, each broken in one way on purpose, show that every check can fail.
Full-page screenshots go to the test's folder and to runs/browser/ (git-ignored). Without Chromium (or Playwright and
JupyterLab) the tests are skipped with the command that installs them; .ci/run installs Chromium."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import nbformat
import psutil
import pytest
from conftest import ROOT
from lab_browser import (
    CHROMIUM_ARGS,
    LabServer,
    PageReport,
    end_processes,
    lab_environment,
    missing_requirements,
    open_notebook,
    run_all,
    screenshot,
    start_lab,
)

SCREENSHOTS = ROOT / "runs" / "browser"
# The parts of a small notebook that has everything the checks look for; each broken variant changes one part.
GOOD_CELLS = {
    "progress": "from fastprogress.fastprogress import progress_bar\n\nfor _ in progress_bar(range(3)):\n    pass",
    "plot": "import matplotlib.pyplot as plt\n\nplt.plot([0, 1], [1, 0])\nplt.show()",
    "widget": 'import ipywidgets as widgets\n\nwidgets.IntSlider(value=3, description="item")',
}
BROKEN = {  # variant: (the part it replaces or adds, its code, the kind of problem the checks must report)
    "raises": ("last", 'raise RuntimeError("raised on purpose")', "error"),
    "no_plot": ("plot", "import matplotlib.pyplot as plt\n\nplt.plot([0, 1], [1, 0])\nplt.close()", "no plot"),
    "widget_model_missing": (  # a widget view whose model the kernel never created: what a lost model looks like
        "widget",
        'from IPython.display import display\n\ndisplay({"application/vnd.jupyter.widget-view+json": '
        '{"model_id": "0" * 32, "version_major": 2, "version_minor": 0}}, raw=True)',
        "widget not rendered",
    ),
    "no_progress": ("progress", "for _ in range(3):\n    pass", "no progress bar"),
}


def write_notebook(path: Path, sources: list[str]) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, path)


def prepare(name: str, lab: Path, out: Path, **params) -> str:
    """Copy notebooks/``name`` into the server's root with papermill's parameters injected (not executed)."""
    import papermill

    papermill.execute_notebook(
        str(ROOT / "notebooks" / name),
        str(lab / name),
        prepare_only=True,
        progress_bar=False,
        parameters={"PRESET": "smoke", "OUTPUT_DIR": str(out / Path(name).stem), **params},
    )
    return name


class Lab(NamedTuple):
    server: LabServer
    context: Any  # Playwright's BrowserContext
    base: Path  # the module's temporary folder: the server's root is base/lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server and a headless Chromium; on teardown both end, and no process they started (kernels,
    Chromium's processes, Playwright's driver) may outlive them."""
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    base = tmp_path_factory.mktemp("browser")
    root, home, hub = base / "lab", base / "home", base / "hf-cache"
    for folder in (root, home, hub):
        folder.mkdir()
    # the kernels inherit the server's environment: a closed Hugging Face hub, as conftest.closed_hub makes in-process
    env = lab_environment(
        home, {"HF_HUB_CACHE": str(hub), "HF_ENDPOINT": "http://127.0.0.1:9", "TRESNET_NB_CACHE": str(base / "cache")}
    )
    env.pop("HF_HUB_OFFLINE", None)
    server = start_lab(root, home, env)
    playwright = context = None
    try:
        playwright = sync_playwright().start()
        context = playwright.chromium.launch_persistent_context(
            tempfile.mkdtemp(dir=home, prefix="chromium-profile-"),
            executable_path=shutil.which("chromium"),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900},
        )
        yield Lab(server, context, base)
    finally:
        started = {p.pid for p in psutil.Process().children(recursive=True)} - before
        if context is not None:
            context.close()
        if playwright is not None:
            playwright.stop()
        left = server.stop() + end_processes(started)
        assert not left, f"processes left behind (now killed): {left}"


def run_in_lab(lab: Lab, name: str, timeout: float, shots: list[Path]) -> PageReport:
    """Open ``name`` in a new page, Run All Cells, screenshot it (``shots``; a picture of a progress bar while it
    runs beside the last one); the page's report. Its kernel is shut down after."""
    page = lab.context.new_page()
    try:
        open_notebook(page, lab.server, name)
        report = run_all(page, name, timeout, progress_shot=shots[-1].with_name(f"{shots[-1].stem}_progress.png"))
        screenshot(page, name, shots)
        print(f"{name}: {report}; screenshot {shots[-1]}")
        return report
    finally:
        page.close()
        lab.server.shutdown_kernels()


@pytest.mark.slow
@pytest.mark.parametrize("variant", BROKEN)
def test_the_checks_fail_on_a_notebook_broken_on_purpose(lab, variant, tmp_path):
    part, code, kind = BROKEN[variant]
    parts = {**GOOD_CELLS, part: code}  # "last" is a new part: a cell after the others
    name = f"broken_{variant}.ipynb"
    write_notebook(lab.server.root / name, list(parts.values()))
    report = run_in_lab(lab, name, 120, [tmp_path / f"{Path(name).stem}.png"])
    # this problem and no other: the checks that pass here pass on the other parts of the same notebook
    assert report.kinds() == {kind}, report.problems()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "dataset"),
    [("00_quickstart.ipynb", None), ("08_your_own_data.ipynb", "folder"), ("09_error_analysis.ipynb", None)],
    ids=["00", "08", "09"],
)
def test_notebook_runs_all_cells_in_jupyterlab(lab, name, dataset, tmp_path, capsys):
    base = lab.base
    # 09 trains its own run first (RUN_DIR None) on the embedded Fashion-MNIST; a 2-fold cross-fit keeps it short
    params = {"FOLDS": 2} if name.startswith("09") else {}
    if dataset is not None:
        from tresnet_nb.data import get_dataset

        root = get_dataset(dataset).write_fixture(base / "data" / dataset)
        params.update(DATASET=dataset, DATA_ROOT=str(root))
    prepare(name, lab.server.root, base / "runs", **params)
    stem = Path(name).stem
    report = run_in_lab(lab, name, 600, [tmp_path / f"{stem}.png", SCREENSHOTS / f"{stem}.png"])
    assert report.problems() == [], report.problems()
    if not name.startswith("09"):  # the prediction browser (09 has no widget of its own)
        assert any(w["text"].startswith("item") for w in report.widgets), report.widgets
    assert report.images >= 3 and report.progress >= 1
    assert (base / "runs" / stem / "metrics.json").is_file()  # the run went to the end, in the prepared OUTPUT_DIR
    with capsys.disabled():  # in the log of every run, not only of failed ones
        print(f"\n{name} in JupyterLab: screenshot {SCREENSHOTS / f'{stem}.png'}")


def test_a_process_left_behind_is_reported_and_ended():
    # what the lab fixture's teardown relies on: a process that outlives its server is named, killed, and fails it
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        left = end_processes({proc.pid}, grace=0.5)
        assert len(left) == 1 and left[0].startswith(f"{proc.pid} sleep 60"), left
        assert proc.wait(10) == -9
    finally:
        proc.kill()
        proc.wait()


def test_without_chromium_the_skip_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    reason = missing_requirements()
    assert "apt-get install -y chromium" in reason and ".ci/run" in reason
