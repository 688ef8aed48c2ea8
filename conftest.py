"""Test-wide settings; the notebooks' kernels inherit these variables from pytest."""
import os
from pathlib import Path

# No hub is reachable from the test machines; without this, datasets pings it even for local files.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_UPDATE_DOWNLOAD_COUNTS", "false")
# Notebooks run by nbval share one run directory, so each artifact is built once per test session.
os.environ.setdefault("MDRL_RUN_DIR", str(Path(__file__).resolve().parent / "runs" / "nbval"))
