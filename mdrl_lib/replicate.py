"""Run the whole toy pipeline over several world seeds, in parallel workers that resume after a kill.

``python -m mdrl_lib replicate --seeds 1000-1009 --workers 2`` runs ``python -m mdrl_lib run`` once per world
seed into ``<root>/seed-<N>`` and marks a seed done only when its run finished (``<root>/seed-<N>/done.json``,
written last and atomically). Rerunning the command skips the seeds that are done and resumes the others from
their stored artifacts. :mod:`mdrl_lib.reference` turns the finished seeds into a reference ledger. Introduced in
the README's "The verdicts over fresh seeds".
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from mdrl_lib.claims.rules import RULES_VERSION, rule
from mdrl_lib.store import write_json_atomic

DONE_FILE = "done.json"


class ReplicateError(ValueError):
    """A bad seed list, a root of another rules version or a failed seed, reported as one line."""


def parse_seeds(text: str) -> list[int]:
    """World seeds from ``"1000-1009"``, ``"1000,1003,1005"`` or a mix (``"1000-1002,1007"``), in the given order,
    each once. Anything else is a :class:`ReplicateError` that shows the accepted forms."""
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            if "-" in part:
                low, high = (int(p) for p in part.split("-"))
                if high < low:
                    raise ValueError
                values = range(low, high + 1)
            else:
                values = [int(part)]
        except ValueError:
            raise ReplicateError(f"seeds: cannot read {part!r} in {text!r}; give a range '1000-1009', a list "
                                 "'1000,1003' or both '1000-1002,1007'") from None
        seeds += [s for s in values if s not in seeds]
    return seeds


def check_reference_seeds(seeds: Sequence[int]) -> None:
    """Refuse seeds outside the rules file's reference range (``[reference] seeds``, 1000-1099): the exploratory
    seeds, which chose the world and the rules, can never confirm them."""
    low, high = rule("reference", "seeds")
    outside = [s for s in seeds if not low <= s <= high]
    if outside:
        raise ReplicateError(f"reference seeds must lie in {low}-{high} (the rules file's [reference] seeds); "
                             f"got {', '.join(map(str, outside))}")
    if not seeds:
        raise ReplicateError("no seeds given")


def seed_dir(root: str | Path, seed: int) -> Path:
    return Path(root) / f"seed-{seed}"


def done_record(root: str | Path, seed: int) -> dict | None:
    """The ``done.json`` of ``seed`` under ``root`` (``None`` while the seed is not finished)."""
    path = seed_dir(root, seed) / DONE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def machine() -> dict[str, str]:
    """The machine a reference ran on: CPU model, the instruction set torch dispatches to, torch and Python."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__, "python": platform.python_version(),
            "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY", ""),
            "MKL_CBWR": os.environ.get("MKL_CBWR", "")}


def kit_commit() -> str:
    """The git commit of the kit's checkout (``"<sha>+changes"`` when its tracked files differ from it; ``""``
    outside a git checkout): which code a seed ran."""
    folder = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return ""
    return sha.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


@dataclass(frozen=True)
class SeedRun:
    """One seed's pipeline run: its command and where its log goes."""

    seed: int
    command: tuple[str, ...]
    run_dir: Path
    log: Path


def seed_runs(seeds: Sequence[int], root: str | Path, params: Sequence[tuple[str, str]] = (),
              only: Sequence[str] | None = None, build_workers: int = 1) -> list[SeedRun]:
    """The ``python -m mdrl_lib run`` command of every seed (toy scale, ``-p seed N``, ``params`` passed on)."""
    names = [name for name, _ in params]
    for reserved in ("seed", "scale"):
        if reserved in names:
            raise ReplicateError(f"-p {reserved}: replicate sets it itself (toy scale, one run per seed)")
    runs = []
    for seed in seeds:
        run_dir = seed_dir(root, seed)
        command = [sys.executable, "-m", "mdrl_lib", "run", "--run-dir", str(run_dir), "-p", "scale", "toy",
                   "-p", "seed", str(seed), "--workers", str(build_workers)]
        for name, value in params:
            command += ["-p", name, str(value)]
        if only:
            command += ["--only", *only]
        runs.append(SeedRun(seed, tuple(command), run_dir, Path(root) / f"seed-{seed}.log"))
    return runs


def run_seed(run: SeedRun, meta: dict) -> dict:
    """Run one seed's pipeline (its output to its log) and, when it succeeds, write its ``done.json``:
    ``meta`` plus the seed, the exit status and the wall seconds. A failed run leaves no ``done.json``."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(run.log, "a") as log:
        log.write(f"$ {' '.join(run.command)}\n")
        log.flush()
        returncode = subprocess.call(run.command, stdout=log, stderr=subprocess.STDOUT)
    record = {**meta, "seed": run.seed, "returncode": returncode, "wall_s": round(time.perf_counter() - start, 1)}
    if returncode == 0:
        write_json_atomic(run.run_dir / DONE_FILE, record)
    return record


def replicate(seeds: Sequence[int], root: str | Path, *, workers: int = 1, params: Sequence[tuple[str, str]] = (),
              only: Sequence[str] | None = None, echo=print) -> list[dict]:
    """Run every seed not done yet under ``root``, ``workers`` seeds at a time (each with one build worker),
    and return every seed's record (done ones read back). Refuses a root holding seeds of another rules version
    before anything runs. A seed that fails is reported with its log; the others go on."""
    check_reference_seeds(seeds)
    if workers < 1:
        raise ReplicateError(f"--workers: must be 1 or more, got {workers}")
    root = Path(root)
    for seed in seeds:
        done = done_record(root, seed)
        if done is not None and done.get("rules_version") != RULES_VERSION:
            raise ReplicateError(f"{seed_dir(root, seed)} was run under rules version {done.get('rules_version')}, "
                                 f"this kit's is {RULES_VERSION}: a reference never mixes versions; use a new root")
    root.mkdir(parents=True, exist_ok=True)
    meta = {"rules_version": RULES_VERSION, "params": [list(p) for p in params], "only": list(only or []),
            "machine": machine(), "commit": kit_commit()}
    todo = [run for run in seed_runs(seeds, root, params, only) if done_record(root, run.seed) is None]
    echo(f"{len(seeds) - len(todo)} of {len(seeds)} seed(s) already done under {root}; running {len(todo)} "
         f"with {workers} worker(s)")

    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:
            echo(line)

    def one(run: SeedRun) -> dict:
        say(f"seed {run.seed}: started (log {run.log})")
        record = run_seed(run, meta)
        state = "done" if record["returncode"] == 0 else f"FAILED (exit {record['returncode']}; see {run.log})"
        say(f"seed {run.seed}: {state} in {record['wall_s']:.0f} s")
        return record

    with ThreadPoolExecutor(max_workers=workers) as pool:
        ran = {r["seed"]: r for r in pool.map(one, todo)}
    return [ran.get(seed) or done_record(root, seed) for seed in seeds]
