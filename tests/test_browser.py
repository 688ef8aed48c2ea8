"""Notebook 03's quadratic-world widget, tried the student's way: in JupyterLab, in a real (headless) browser.

The kit's widgets draw their figure when a **Draw** button is pressed (an immediately drawing widget hung
papermill). nbval and papermill never press that button; a student does, in JupyterLab. This test starts
JupyterLab headless on a free localhost port with a token, in a temporary directory, opens a notebook in headless
Chromium (driven by Playwright), runs it with Run > Run All Cells, presses the widget's Draw button, and checks that
a figure (an image) appears under the widget and that no cell shows an error. A screenshot is kept in the test's
tmp path and, when ``MDRL_SCREENSHOT_DIR`` is set, there too.

The opened notebook is built from notebook 03's own cells, read from ``notebooks/03_perturbation_theory.ipynb``
by their content (each must match exactly one cell), in the notebook's order:

1. the cell tagged ``parameters`` (``seed`` and the rest: the widget is seeded by ``config.seed``);
2. the cell that checks them (``recipe.Params.from_namespace(globals())``), which makes ``config``;
3. the imports cell (the one importing ``ipywidgets``): ``interactive``, ``fixed``, ``display``, ``quadratic``;
4. the widget cell itself (``interactive(explore_world, {... "manual_name": "Draw"}, ...)``).

Nothing else is taken. The widget reads none of the other cells' names, and the cell right after the imports opens
the kit and, for the default pair ``"math,auto"``, trains and scores the chain that chooses B (minutes on a CPU),
as do the toy-LM sections with their checkpoints; the quadratic world needs no trained artifact. That it needs
none is checked, not assumed: the kernel runs with an empty ``MDRL_RUN_DIR``, and the test fails if anything was
written there.

Skipped, with its reason, where Playwright is not importable or no Chromium binary is found (``MDRL_CHROMIUM``
names one; otherwise ``chromium``/``chromium-browser``/``google-chrome`` on PATH, or Playwright's own download).
Marked ``browser``: it runs last, once the notebooks' artifacts are built, so that it does not compete with that
build for the CPU. Every wait is bounded; JupyterLab, its kernels and the browser are stopped in teardown.
"""
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
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "03_perturbation_theory.ipynb"
OPENED = "widget_03.ipynb"  # the name of the built notebook in JupyterLab's (temporary) root

# Bounds on every wait, in seconds (generous against a busy CPU; the test takes far less when all is well).
SERVER_START = 90
PAGE = 90  # JupyterLab's page and the notebook's first cell
RUN_ALL = 180  # the kernel starts and runs the four cells (the imports take torch)
DRAW = 90  # the figure appears after Draw is pressed
SHUTDOWN = 15


def _source(cell: dict) -> str:
    return "".join(cell["source"])


def widget_notebook(path: Path = NOTEBOOK) -> dict:
    """Notebook 03 cut down to the cells its quadratic-world widget needs (see the module's docstring)."""
    notebook = json.loads(path.read_text())
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    wanted = {
        "tagged parameters": lambda cell: "parameters" in cell.get("metadata", {}).get("tags", []),
        "checking the parameters": lambda cell: "Params.from_namespace(globals())" in _source(cell),
        "importing ipywidgets": lambda cell: "from ipywidgets import" in _source(cell),
        "showing the Draw widget": lambda cell: '"manual_name": "Draw"' in _source(cell),
    }
    taken = []
    for what, matches in wanted.items():
        found = [cell for cell in code if matches(cell)]
        assert len(found) == 1, f"{path.name}: {len(found)} code cells {what} (want exactly 1)"
        taken.append(found[0])
    assert taken == sorted(taken, key=code.index), f"{path.name}: the widget's cells are out of order"
    cells = [{**cell, "outputs": [], "execution_count": None} for cell in taken]
    return {**notebook, "cells": cells}


def test_widget_notebook_takes_the_real_cells():
    """The built notebook is notebook 03's own cells, unchanged (cheap: no browser)."""
    built = widget_notebook()
    original = {cell.get("id"): cell for cell in json.loads(NOTEBOOK.read_text())["cells"]}
    assert len(built["cells"]) == 4
    for cell in built["cells"]:
        assert cell["source"] == original[cell["id"]]["source"]
    assert built["metadata"]["kernelspec"]["name"] == "python3"
    assert "interactive(explore_world" in _source(built["cells"][-1])


# --- what the browser test needs, each skipped with its reason when missing -------------------------------------

def chromium_binary() -> tuple[str | None, str]:
    """The Chromium to drive, or None and why there is none. ``MDRL_CHROMIUM`` names one explicitly; otherwise
    the first of the usual names on PATH. ("" with None: let Playwright look for its own download.)"""
    named = os.environ.get("MDRL_CHROMIUM")
    if named:
        if Path(named).is_file() and os.access(named, os.X_OK):
            return named, ""
        return None, f"MDRL_CHROMIUM={named} is not an executable file"
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found, ""
    return None, ""


def test_a_missing_chromium_is_a_reason_to_skip(monkeypatch, tmp_path):
    """Where no Chromium is found, the browser test is skipped with the reason, not failed (cheap: no browser)."""
    monkeypatch.setenv("MDRL_CHROMIUM", str(tmp_path / "chromium"))
    assert chromium_binary() == (None, f"MDRL_CHROMIUM={tmp_path / 'chromium'} is not an executable file")
    monkeypatch.delenv("MDRL_CHROMIUM")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert chromium_binary() == (None, "")  # then only Playwright's own download is left to look for


@pytest.fixture
def chromium():
    """``(playwright's sync_playwright, executable or None)``; skips the test where either is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        pytest.skip(f"playwright is not importable ({error}); pip install -e '.[browser]'")
    executable, why_not = chromium_binary()
    if why_not:
        pytest.skip(f"no Chromium to drive: {why_not}")
    if executable is None:
        with sync_playwright() as playwright:
            own = Path(playwright.chromium.executable_path)
        if not own.is_file():
            pytest.skip("no Chromium to drive: none of chromium, chromium-browser, google-chrome is on PATH, "
                        "Playwright has no browser of its own, and MDRL_CHROMIUM is not set")
    return sync_playwright, executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Lab:
    url: str
    token: str
    root: Path
    run_dir: Path
    log: Path
    process: subprocess.Popen

    def api(self, path: str, method: str = "GET", timeout: float = 5):
        request = urllib.request.Request(f"{self.url}{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def wait_for_idle_kernel(self, path: str, timeout: float) -> None:
        """Until the notebook at ``path`` has a session whose kernel is idle and connected to the page."""
        deadline, sessions = time.monotonic() + timeout, []
        while time.monotonic() < deadline:
            sessions = self.api("/api/sessions")
            kernels = [s["kernel"] for s in sessions if s.get("path") == path and s.get("kernel")]
            if any(k.get("execution_state") == "idle" and k.get("connections", 0) > 0 for k in kernels):
                return
            time.sleep(0.5)
        pytest.fail(f"no idle kernel for {path} within {timeout} s (sessions: {sessions}):\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _stop(lab: Lab) -> None:
    """Shut JupyterLab down (its kernels with it), then end whatever of it is left: no process outlives the test."""
    import psutil  # ipykernel's dependency

    try:
        family = psutil.Process(lab.process.pid).children(recursive=True)  # kernels run in sessions of their own
    except psutil.NoSuchProcess:
        family = []
    if lab.process.poll() is None:
        try:
            lab.api("/api/shutdown", method="POST")
        except (OSError, urllib.error.URLError):
            pass
        for sent in (None, signal.SIGTERM, signal.SIGKILL):  # ask, then terminate, then kill its process group
            if sent is not None:
                try:
                    os.killpg(lab.process.pid, sent)
                except ProcessLookupError:
                    pass
            try:
                lab.process.wait(SHUTDOWN)
                break
            except subprocess.TimeoutExpired:
                continue
    alive = [process for process in family if process.is_running()]
    for process in alive:
        process.terminate()
    _, alive = psutil.wait_procs(alive, timeout=SHUTDOWN)
    for process in alive:
        process.kill()
    psutil.wait_procs(alive, timeout=SHUTDOWN)


@pytest.fixture
def lab(chromium, tmp_path):
    """JupyterLab, headless, on a free localhost port with a token, rooted in a temporary directory that holds
    the widget notebook; its settings, workspaces, runtime files and the kit's run directory are temporary too."""
    root, run_dir, home = tmp_path / "lab", tmp_path / "run", tmp_path / "jupyter"
    root.mkdir()
    run_dir.mkdir()
    (root / OPENED).write_text(json.dumps(widget_notebook(), indent=1))
    notification = home / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))  # no news toast
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "PYTHONDONTWRITEBYTECODE": "1",
           "MDRL_RUN_DIR": str(run_dir),
           "JUPYTER_CONFIG_DIR": str(home / "config"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
           "IPYTHONDIR": str(home / "ipython")}
    env.pop("MPLBACKEND", None)  # the kernel's own inline backend, as a student has it
    port, token = free_port(), secrets.token_hex(16)
    log = tmp_path / "jupyterlab.log"
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={root}", "--LabApp.news_url=None",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # containers and CI machines often run as root
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    server = Lab(f"http://127.0.0.1:{port}", token, root, run_dir, log, process)
    try:
        deadline = time.monotonic() + SERVER_START
        while True:
            if process.poll() is not None:
                pytest.fail(f"JupyterLab exited ({process.returncode}) before serving:\n{server.log_tail()}")
            try:
                server.api("/api/status", timeout=2)
                break
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not serve within {SERVER_START} s:\n{server.log_tail()}")
                time.sleep(0.5)
        yield server
    finally:
        _stop(server)


@pytest.fixture
def screenshots(tmp_path):
    """Where screenshots go: the test's tmp path, and ``MDRL_SCREENSHOT_DIR`` when it is set."""
    places = [tmp_path]
    if os.environ.get("MDRL_SCREENSHOT_DIR"):
        places.append(Path(os.environ["MDRL_SCREENSHOT_DIR"]))

    def keep(page, name: str) -> list[Path]:
        kept = []
        for place in places:
            place.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=place / name)
            kept.append(place / name)
        print("screenshot:", ", ".join(map(str, kept)))
        return kept

    return keep



# JupyterLab renders an error output and a stream to stderr alike (both as application/vnd.jupyter.stderr), so an
# error is told from a warning by its text: IPython's traceback, or an exception's last line ("ValueError: ...",
# which a SyntaxError shows without a traceback). Outputs of widgets (the Output under Draw) are included.
ERRORS_SHOWN = r"""() => [...document.querySelectorAll(
        '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
    .map(output => output.innerText)
    .filter(text => /Traceback \(most recent call last\)|^\s*\w*(Error|Exception|Interrupt)\b/m.test(text))"""

ALL_CELLS_RAN = r"""() => {
    const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')];
    return prompts.length > 0 && prompts.every(p => /\[\d+\]/.test(p.textContent));
}"""
FIGURE = ".widget-interact .jp-OutputArea-output img"  # the image the widget's Output shows under its controls


def _or_errors(condition: str) -> str:
    """A page function true when ``condition`` is, or as soon as an error shows (Run All stops at one)."""
    return f"() => ({condition})() || ({ERRORS_SHOWN})().length > 0"


@pytest.mark.browser
def test_widget_draws_in_jupyterlab(chromium, lab, screenshots):
    sync_playwright, executable = chromium
    phases, start = {}, time.monotonic()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(PAGE * 1000)
            try:
                page.goto(f"{lab.url}/lab/tree/{OPENED}?token={lab.token}")
                page.locator(".jp-Notebook .jp-CodeCell").first.wait_for()
                lab.wait_for_idle_kernel(OPENED, PAGE)  # Run All before the kernel is up asks to select one
                page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').wait_for()
                phases["page and kernel"] = time.monotonic() - start

                page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()  # Run > Run All Cells
                page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
                page.wait_for_function(_or_errors(ALL_CELLS_RAN), timeout=RUN_ALL * 1000)
                errors = page.evaluate(ERRORS_SHOWN)
                assert errors == [], "the notebook shows errors after Run All:\n" + "\n---\n".join(errors)
                phases["run all"] = time.monotonic() - start

                draw = page.locator(".widget-interact").get_by_role("button", name="Draw")
                draw.wait_for()
                figure = page.locator(FIGURE)
                assert figure.count() == 0, "the widget drew before Draw was pressed"
                draw.click()
                page.wait_for_function(_or_errors(f"() => document.querySelector({FIGURE!r}) !== null"),
                                       timeout=DRAW * 1000)
                errors = page.evaluate(ERRORS_SHOWN)
                assert errors == [], "the notebook shows errors after Draw:\n" + "\n---\n".join(errors)
                phases["draw"] = time.monotonic() - start
                size = figure.first.evaluate("img => [img.complete, img.naturalWidth, img.naturalHeight]")
                assert size[0] and size[1] > 100 and size[2] > 100, f"the figure is not a loaded image: {size}"
                figure.first.scroll_into_view_if_needed()
                screenshots(page, "notebook03_widget.png")
            except BaseException:
                try:
                    screenshots(page, "notebook03_widget_failed.png")
                except Exception as error:  # the page itself may be what failed
                    print("no screenshot of the failure:", error)
                raise
        finally:
            browser.close()
    assert lab.process.poll() is None, f"JupyterLab died:\n{lab.log_tail()}"
    built = [path for path in lab.run_dir.rglob("*")]
    assert built == [], f"the widget's cells wrote into the run directory (they need no artifact): {built[:5]}"
    print("seconds since the page was opened:", {name: round(value, 1) for name, value in phases.items()})
