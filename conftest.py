"""Test-wide settings; the notebooks' kernels inherit these variables from pytest."""
import os
from pathlib import Path

# No hub is reachable from the test machines; without this, datasets pings it even for local files.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_UPDATE_DOWNLOAD_COUNTS", "false")
# Notebooks run by nbval share one run directory, so each artifact is built once per test session.
os.environ.setdefault("MDRL_RUN_DIR", str(Path(__file__).resolve().parent / "runs" / "nbval"))

# Before the first notebook runs, every artifact the collected notebooks need is built by
# `python -m mdrl_lib plan --build`, one worker per core, in the background while the unit tests run
# (MDRL_PREBUILD=0 turns this off: each notebook then builds what it needs itself, one at a time).
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

_prebuild: dict = {}


def pytest_collection_finish(session):
    notebooks = sorted({Path(item.path).stem for item in session.items if Path(item.path).suffix == ".ipynb"})
    if not notebooks or os.environ.get("MDRL_PREBUILD", "1") == "0" or session.config.option.collectonly:
        return
    run_dir = Path(os.environ["MDRL_RUN_DIR"])
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "prebuild.log"
    command = [sys.executable, "-m", "mdrl_lib", "plan", "--build", "--run-dir", str(run_dir),
               "--only", *[name[:2] for name in notebooks]]
    _prebuild.update(log=log, start=time.perf_counter(),
                     process=subprocess.Popen(command, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                              cwd=Path(__file__).resolve().parent))


def pytest_collection_modifyitems(session, config, items):
    """Tests marked ``after_notebooks`` (they read what the notebooks asked the kit for) run last, then those
    marked ``browser`` (JupyterLab in a headless browser: after the notebooks' artifacts are built, not beside it)."""
    def rank(item):
        return 2 if item.get_closest_marker("browser") else 1 if item.get_closest_marker("after_notebooks") else 0

    items[:] = sorted(items, key=rank)  # stable: the order within each rank is kept


# Where the kit logs each spec a notebook asks for while nbval runs it (tests/test_notebook_requests.py reads it).
os.environ.setdefault("MDRL_REQUESTS_DIR", str(Path(os.environ["MDRL_RUN_DIR"]) / "requests"))


def requests_log(notebook: str) -> Path:
    """The request log of ``notebook`` (a file stem)."""
    return Path(os.environ["MDRL_REQUESTS_DIR"]) / f"{notebook}.jsonl"


def pytest_runtest_setup(item):
    import pytest

    if Path(item.path).suffix == ".ipynb":  # before nbval starts the notebook's kernel, which inherits this
        log = requests_log(Path(item.path).stem)
        if os.environ.get("MDRL_GET_LOG") != str(log):
            log.parent.mkdir(parents=True, exist_ok=True)
            log.unlink(missing_ok=True)
            os.environ["MDRL_GET_LOG"] = str(log)
    process = _prebuild.get("process")
    if process is None or Path(item.path).suffix != ".ipynb":
        return
    if "seconds" not in _prebuild:
        process.wait()
        _prebuild["seconds"] = time.perf_counter() - _prebuild["start"]
        reporter = item.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"\nartifacts prebuilt for the notebooks ({_prebuild['seconds']:.0f} s after "
                                f"collection; log: {_prebuild['log']})")
    if process.returncode != 0:
        tail = "\n".join(_prebuild["log"].read_text().splitlines()[-15:])
        pytest.fail(f"building the notebooks' artifacts failed (log: {_prebuild['log']}):\n{tail}", pytrace=False)


def pytest_sessionfinish(session):
    process = _prebuild.get("process")
    if process is not None and process.poll() is None:
        process.terminate()
        process.wait()
