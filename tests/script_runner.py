"""Helpers for tests that run the kit's command-line scripts: import one as a module, or run a
command on CPU only with a hard time bound."""
from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_script(path: Path, *, keep_threads: bool = False):
    """The script at ``path`` imported as a module (its ``main`` is not run). ``keep_threads``: restore torch's
    thread count afterwards (the benchmarks set one thread when imported)."""
    import torch

    threads = torch.get_num_threads()
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    finally:
        if keep_threads:
            torch.set_num_threads(threads)
    return module


def run_bounded(command: list[str], timeout: float, **extra_env: str) -> subprocess.CompletedProcess:
    """Run ``command`` from the repository root with no GPU and no hub; past ``timeout`` seconds kill
    its whole process group and fail the test with its output."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", **extra_env}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"{' '.join(command[:6])} ... took over {timeout} s\n{out[-2000:]}\n{err[-3000:]}")
    return subprocess.CompletedProcess(command, process.returncode, out, err)
