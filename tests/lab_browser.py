"""Drive a real JupyterLab with headless Chromium: start a private server, run a notebook with the UI's own
Run > Run All Cells, and read back what the page shows (errors, progress bars, plots, widgets).

Used by tests/test_browser.py. Nothing here touches the user's Jupyter set-up: the server gets its own config, data,
runtime, settings and workspace folders, a random token and a free loopback port, and every process it starts
(kernels included) is accounted for when it stops."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

# Debian's chromium works with these flags in a container run as root, without a GPU or the network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# JupyterLab settings for a test browser: every cell in the DOM (no windowing), no news or update toasts.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_PLACEHOLDERS = ("Loading widget...", "Error displaying widget")
MAX_SCREENSHOT_HEIGHT = 16000  # Chromium's largest texture; taller pages are cut there


def missing_requirements() -> str | None:
    """Why the browser test cannot run here (and how to fix it), or None when Chromium, Playwright and JupyterLab
    are all there."""
    if shutil.which("chromium") is None:
        return (
            "Chromium not found: install Debian's chromium (as root: apt-get update && apt-get install -y "
            "chromium; .ci/run does this in CI)"
        )
    import importlib.util

    absent = [m for m in ("playwright", "jupyterlab") if importlib.util.find_spec(m) is None]
    if absent:
        return f"{' and '.join(absent)} not installed: pip install -r requirements.txt"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lab_environment(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment (kernels inherit it): private Jupyter folders under ``home``, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "TRESNET_NB_ECHO"))}
    folders = {
        "JUPYTER_CONFIG_DIR": "config",
        "JUPYTER_DATA_DIR": "data",
        "JUPYTER_RUNTIME_DIR": "runtime",
        "JUPYTERLAB_SETTINGS_DIR": "settings",
        "JUPYTERLAB_WORKSPACES_DIR": "workspaces",
        "IPYTHONDIR": "ipython",
    }
    for name, sub in folders.items():
        (home / sub).mkdir(parents=True, exist_ok=True)
        env[name] = str(home / sub)
    for name, settings in LAB_SETTINGS.items():
        path = home / "settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))
    env.update(extra or {})
    return env


@dataclass
class LabServer:
    """A JupyterLab server started by :func:`start_lab`; ``stop`` ends it and everything it started."""

    proc: subprocess.Popen
    port: int
    token: str
    root: Path
    log: Path
    descendants: set[int] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, method: str, path: str, timeout: float = 10) -> Any:
        """Call the server's REST API with the token; the decoded JSON answer (None when empty)."""
        request = urllib.request.Request(
            f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def note_descendants(self) -> None:
        """Remember every process the server has started so far (kernels leave its process group)."""
        try:
            self.descendants |= {p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            pass

    def shutdown_kernels(self) -> None:
        """End every kernel (each notebook run leaves one; a trained model holds memory)."""
        self.note_descendants()
        for kernel in self.api("GET", "/api/kernels"):
            self.api("DELETE", f"/api/kernels/{kernel['id']}", timeout=30)

    def stop(self) -> list[str]:
        """Shut the server down (its API, then SIGTERM, then SIGKILL to its group) and end whatever it started;
        the processes that outlived the shutdown (an empty list when all went as they should)."""
        self.note_descendants()
        if self.proc.poll() is None:
            try:
                self.api("POST", "/api/shutdown")
            except (OSError, urllib.error.URLError):
                pass
            for sig, wait in ((None, 30), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                if sig is not None:
                    try:
                        os.killpg(self.proc.pid, sig)
                    except ProcessLookupError:
                        break
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        return end_processes(self.descendants)


def alive(pids: set[int]) -> list[psutil.Process]:
    """The processes among ``pids`` that still run (zombies waiting for their parent do not count)."""
    procs = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            if p.status() != psutil.STATUS_ZOMBIE:
                procs.append(p)
        except psutil.NoSuchProcess:
            pass
    return procs


def end_processes(pids: set[int], grace: float = 10) -> list[str]:
    """Wait up to ``grace`` seconds for ``pids`` to end, then kill the rest; a description of each one killed."""
    deadline = time.monotonic() + grace
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = []
    for p in alive(pids):
        try:
            left.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
            p.kill()
        except psutil.Error:  # it ended meanwhile
            pass
    return left


def start_lab(root: Path, home: Path, env: dict[str, str], timeout: float = 120) -> LabServer:
    """Start JupyterLab serving ``root`` on a free loopback port with a random token, in its own process group,
    logging to ``home/server.log``; return once its API answers."""
    port, token = free_port(), secrets.token_hex(24)
    log = home / "server.log"
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.terminals_enabled=False",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.news_url=None",
        "--LabApp.extension_manager=readonly",
        "--allow-root",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = LabServer(proc, port, token, root, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {proc.returncode}; its log:\n{log.read_text()[-3000:]}")
        try:
            server.api("GET", "/api/status", timeout=2)
            return server
        except (OSError, urllib.error.URLError):
            time.sleep(0.5)
    left = server.stop()
    raise RuntimeError(
        f"JupyterLab did not answer within {timeout:.0f}s (left: {left}); its log:\n{log.read_text()[-3000:]}"
    )


# Run in the page: the notebook panel open on `path`, found through the app JupyterLab exposes for tests.
FIND_PANEL = """(path) => {
    for (const w of window.jupyterapp.shell.widgets('main')) {
        if (w.context && w.context.path === path && w.content && w.content.widgets) return w;
    }
    return null;
}"""

# Run in the page: what the notebook shows. Errors and widget outputs are found through the frontend's output models
# (an error output and a stderr stream render alike in the DOM, and a widget view's element carries no mime type);
# what they look like, the progress bars and the plots are read from the DOM as a user would see them.
READ_NOTEBOOK = """(path) => {
    const panel = (FIND_PANEL)(path);
    if (!panel) return null;
    const code = panel.content.widgets.filter((c) => c.model.type === 'code');
    const errors = [];
    const widgets = [];
    code.forEach((cell, i) => {
        const outputs = cell.model.outputs;
        for (let k = 0; k < outputs.length; k++) {
            const out = outputs.get(k).toJSON();
            if (out.output_type === 'error') errors.push(`code cell ${i + 1}: ${out.ename}: ${out.evalue}`);
            if (out.data && out.data['WIDGET_MIME']) {  // its view: the k-th child of the cell's output area
                const child = cell.outputArea.widgets[k];
                const view = child ? child.node.querySelector('.jp-OutputArea-output') : null;
                widgets.push({
                    rendered: view !== null && view.querySelector('.jupyter-widgets[class*=" widget-"]') !== null,
                    text: view === null ? '(no output element)' : view.textContent.trim().slice(0, 200),
                });
            }
        }
    });
    const node = panel.node;
    return {
        status: panel.sessionContext.kernelDisplayStatus,
        prompts: [...node.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')].map((e) => e.textContent.trim()),
        errors: errors,
        progress: (panel.tnbProgressSeen || 0) + node.querySelectorAll('.jp-OutputArea-output progress').length,
        images: [...node.querySelectorAll('.jp-OutputArea-output img')].filter(
            (img) => img.complete && img.naturalWidth > 0).length,
        widgets: widgets,
    };
}""".replace("FIND_PANEL", FIND_PANEL).replace("WIDGET_MIME", WIDGET_MIME)

# Run in the page before Run All: count the <progress> bars that appear in the cells while they run. fastprogress
# replaces its bars when a loop ends (fastai's epoch bar becomes the table of losses), so the page at the end of a
# run no longer shows the bars that it did show.
WATCH_PROGRESS = """(path) => {
    const panel = (FIND_PANEL)(path);
    panel.tnbProgressSeen = 0;
    new MutationObserver((mutations) => {
        for (const m of mutations) {
            for (const n of m.addedNodes) {
                if (n.nodeType !== 1) continue;
                panel.tnbProgressSeen += n.matches('progress') ? 1 : n.querySelectorAll('progress').length;
            }
        }
    }).observe(panel.content.node, {childList: true, subtree: true});
}""".replace("FIND_PANEL", FIND_PANEL)

# Run in the page: the height the page needs to show the whole notebook (its scrolling element's full height).
FULL_HEIGHT = """(path) => {
    const panel = (FIND_PANEL)(path);
    let scroller = panel.content.node;
    for (const el of panel.node.querySelectorAll('*')) {
        if (el.scrollHeight - el.clientHeight > scroller.scrollHeight - scroller.clientHeight) scroller = el;
    }
    scroller.scrollTop = 0;
    return document.documentElement.clientHeight + scroller.scrollHeight - scroller.clientHeight;
}""".replace("FIND_PANEL", FIND_PANEL)


@dataclass
class PageReport:
    """What the page shows for one notebook after Run All: the kernel's status, each code cell's prompt, the error
    outputs, the progress bars seen during the run, the plots (loaded images) and each widget view."""

    status: str
    prompts: list[str]
    errors: list[str]
    progress: int
    images: int
    widgets: list[dict[str, Any]]

    def problems(self) -> list[str]:
        """Everything wrong with the run as shown, each as ``kind: detail``; empty when all is well."""
        found = [f"error: {e}" for e in self.errors]
        unrun = [i + 1 for i, p in enumerate(self.prompts) if not re.search(r"\[\d+\]", p)]
        if unrun:
            found.append(f"not run: code cells {unrun} have no execution count")
        if self.progress == 0:
            found.append("no progress bar: no <progress> element in any output during the run")
        if self.images == 0:
            found.append("no plot: no loaded <img> in any output")
        if not self.widgets:
            found.append("no widget: no widget view output")
        for w in self.widgets:
            if not w["rendered"] or any(t in w["text"] for t in WIDGET_PLACEHOLDERS):
                found.append(f"widget not rendered: {w['text'][:80]!r}")
        return found

    def kinds(self) -> set[str]:
        """The kinds of the problems (the text before the first colon)."""
        return {p.split(":", 1)[0] for p in self.problems()}


def read_notebook(page: Any, path: str) -> PageReport:
    """The report of the notebook panel open on ``path`` in ``page``."""
    data = page.evaluate(READ_NOTEBOOK, path)
    if data is None:
        raise RuntimeError(f"No notebook panel for {path!r} in the page")
    return PageReport(**data)


def open_notebook(page: Any, server: LabServer, path: str, timeout: float = 120) -> None:
    """Open ``path`` in JupyterLab and wait until its kernel is idle."""
    # a workspace of its own, reset: nothing restored from an earlier page (other notebooks, a collapsed sidebar)
    workspace = re.sub(r"\W", "-", path)
    page.goto(f"{server.url}/lab/workspaces/{workspace}/tree/{path}?reset&token={server.token}", timeout=timeout * 1000)
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.started", timeout=timeout * 1000)
    page.wait_for_function(
        f"(path) => {{ const p = ({FIND_PANEL})(path); return p && p.sessionContext.kernelDisplayStatus === 'idle'; }}",
        arg=path,
        timeout=timeout * 1000,
        polling=500,
    )


def run_all(page: Any, path: str, timeout: float, progress_shot: Path | None = None) -> PageReport:
    """Run every cell with the menu Run > Run All Cells, wait until the run has ended (kernel idle, no cell queued
    or running, stable for two seconds), and return what the page shows then. ``progress_shot``: where to save a
    picture of the first cell seen showing a progress bar, if one is seen while polling."""
    from playwright.sync_api import Error as PlaywrightError

    panel = page.evaluate(f"(path) => ({FIND_PANEL})(path).id", path)
    page.evaluate(WATCH_PROGRESS, path)
    page.locator(f"#{panel} .jp-Cell").first.click()  # make this notebook the current one
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    deadline = time.monotonic() + timeout
    done_since = None
    while True:
        if progress_shot is not None:
            showing = page.locator(f"#{panel} .jp-CodeCell", has=page.locator(".jp-OutputArea-output progress"))
            try:
                if showing.count():
                    progress_shot.parent.mkdir(parents=True, exist_ok=True)
                    showing.first.screenshot(path=progress_shot, timeout=3000)
                    progress_shot = None
            except PlaywrightError:  # the bar went away meanwhile: try again on the next poll
                pass
        report = read_notebook(page, path)
        if report.status == "dead":
            raise RuntimeError(f"{path}: the kernel died; prompts {report.prompts}, errors {report.errors}")
        started = any(re.search(r"\d", p) for p in report.prompts)  # prepared notebooks carry no execution counts
        busy = report.status != "idle" or any("*" in p for p in report.prompts)
        if started and not busy:
            done_since = done_since or time.monotonic()
            if time.monotonic() - done_since > 2:
                return settle(page, path)
        else:
            done_since = None
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{path}: the run did not end within {timeout:.0f}s: kernel {report.status}, "
                f"prompts {report.prompts}, errors so far {report.errors}"
            )
        time.sleep(1)


LATE_KINDS = {"no progress bar", "no plot", "no widget", "widget not rendered"}  # what rendering may still fix


def settle(page: Any, path: str, wait: float = 5) -> PageReport:
    """The report once outputs have rendered (widgets and images load asynchronously), or after ``wait`` seconds."""
    deadline = time.monotonic() + wait
    report = read_notebook(page, path)
    while report.kinds() & LATE_KINDS and time.monotonic() < deadline:
        time.sleep(0.5)
        report = read_notebook(page, path)
    return report


def screenshot(page: Any, path: str, files: list[Path]) -> None:
    """A screenshot of the whole notebook: the viewport is made as tall as the notebook's content, then captured
    with ``full_page``; written to each of ``files``."""
    page.evaluate("() => window.jupyterapp.shell.collapseLeft()")  # the notebook over the page's full width
    height = page.evaluate(FULL_HEIGHT, path)
    page.set_viewport_size({"width": page.viewport_size["width"], "height": min(int(height), MAX_SCREENSHOT_HEIGHT)})
    page.wait_for_timeout(1500)  # let the layout follow the new size
    image = page.screenshot(full_page=True)
    for file in files:
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(image)
