"""Several processes sharing one store: each artifact is built once, every reader sees it complete."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mdrl_lib.store import MANIFEST, Store

ROOT = Path(__file__).resolve().parent.parent

# Each child imports what it needs, says it is ready, then waits for "go", so that all start together.
_PRELUDE = r"""
import json, logging, os, sys, time
from pathlib import Path
args = json.loads(sys.argv[1])
events = []

class _Events(logging.Handler):
    def emit(self, record):
        if hasattr(record, "store_event"):
            events.append([record.store_event, record.store_key])

_log = logging.getLogger("mdrl_lib.store")
_log.addHandler(_Events())
_log.setLevel(logging.INFO)
"""
_START = r"""
Path(args["ready"]).touch()
while not Path(args["go"]).exists():
    time.sleep(0.005)
"""

_CHAIN_CHILD = _PRELUDE + r"""
import torch
torch.set_num_threads(1)
from safetensors.torch import load_file
from mdrl_lib.config import RunConfig
from mdrl_lib.kit import open_kit
""" + _START + r"""
kit = open_kit(RunConfig.from_params(**args["params"]))
stages = kit.chain(tuple(args["order"]), progress=False)
artifacts = [kit.base()] + stages
tensors = [len(load_file(str(a.path / "model.safetensors"))) for a in artifacts]
print(json.dumps({"pid": os.getpid(), "keys": [a.key for a in artifacts], "events": events,
                  "built_by": [a.manifest["built_by_pid"] for a in artifacts], "tensors": tensors}))
"""

_HAMMER_CHILD = _PRELUDE + r"""
import hashlib
from mdrl_lib.store import Store

def payload(key, index):
    return hashlib.sha256(f"{key}/{index}".encode()).digest() * 2048  # 64 KiB

def build(key):
    def write(directory):
        with open(args["builds"], "a") as log:  # one short O_APPEND write per build: lines never mix
            log.write(f"{os.getpid()} {key}\n")
        for index in range(3):
            (directory / f"part{index}.bin").write_bytes(payload(key, index))
            time.sleep(args["build_seconds"] / 3)
        return {"parts": 3}
    return write
""" + _START + r"""
store = Store(args["root"])
seen = []
for key in args["keys"]:
    artifact = store.get_or_create(key, build(key), config={"key": key}, seed=0)
    complete = artifact.metrics == {"parts": 3} and all(
        (artifact.path / f"part{i}.bin").read_bytes() == payload(key, i) for i in range(3))
    seen.append([key, complete, artifact.manifest["built_by_pid"]])
print(json.dumps({"pid": os.getpid(), "seen": seen, "events": events}))
"""


def _run_together(script: str, all_args: list[dict], tmp_path: Path, timeout: float) -> list[dict]:
    """Start one child per args, release them at once, and return each one's JSON report."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    go = tmp_path / "go"
    procs = []
    for index, args in enumerate(all_args):
        args = {**args, "ready": str(tmp_path / f"ready{index}"), "go": str(go)}
        procs.append(subprocess.Popen([sys.executable, "-c", script, json.dumps(args)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    deadline = time.monotonic() + timeout
    try:
        while not all((tmp_path / f"ready{i}").exists() for i in range(len(procs))):
            assert time.monotonic() < deadline, "children did not start in time"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs if p.poll() is not None]
            time.sleep(0.01)
        go.touch()
        outputs = [p.communicate(timeout=max(deadline - time.monotonic(), 1)) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]


def test_two_processes_asking_for_one_chain_build_each_stage_once(tmp_path):
    params = dict(seed=0, run_dir=str(tmp_path / "run"), warmup_steps=30, rl_steps=2, rl_prompts_per_step=2,
                  rl_num_generations=2, data_train_size=8, data_eval_size=8)
    reports = _run_together(_CHAIN_CHILD, [{"params": params, "order": ["math", "qa"]}] * 2, tmp_path, timeout=240)
    first, second = reports
    assert first["keys"] == second["keys"] and len(set(first["keys"])) == 3  # base, math, math->qa
    assert first["built_by"] == second["built_by"]
    builds = [key for report in reports for event, key in report["events"] if event == "building"]
    assert sorted(builds) == sorted(first["keys"])  # each of the 3 artifacts built once, by one of the two
    assert all(event != "discarded" for report in reports for event, _ in report["events"])
    pids = {r["pid"] for r in reports}
    assert set(first["built_by"]) <= pids
    waited = [key for report in reports for event, key in report["events"] if event == "waiting"]
    assert first["keys"][0] in waited  # they did meet: one waited for the other's base
    assert first["tensors"] == second["tensors"] and min(first["tensors"]) > 0
    store = Path(params["run_dir"]) / "store"
    assert sorted(p.name for p in store.iterdir() if not p.name.startswith(".")) == sorted(first["keys"])
    assert list((store / ".tmp").iterdir()) == []


def test_six_processes_hammering_the_same_keys_build_each_once(tmp_path):
    keys = [f"blob-{i}" for i in range(6)]
    builds = tmp_path / "builds.log"
    common = {"root": str(tmp_path / "store"), "builds": str(builds), "build_seconds": 0.15}
    # Half ask in one order, half in the reverse one: a request holds one key's lock at a time, so no deadlock.
    children = [{**common, "keys": keys if i % 2 == 0 else keys[::-1]} for i in range(6)]
    reports = _run_together(_HAMMER_CHILD, children, tmp_path, timeout=60)
    lines = [line.split() for line in builds.read_text().splitlines()]
    assert sorted(key for _, key in lines) == keys  # exactly one build per key among 6 processes
    builder = {key: int(pid) for pid, key in lines}
    for report in reports:
        assert sorted(key for key, _, _ in report["seen"]) == keys
        assert all(complete for _, complete, _ in report["seen"])
        assert all(builder[key] == built_by for key, _, built_by in report["seen"])
    assert sum(event == "waiting" for r in reports for event, _ in r["events"]) > 0
    store = Store(tmp_path / "store")
    assert store.keys() == sorted(keys)
    assert all((store.path(k) / MANIFEST).is_file() for k in keys)


_KILLED_CHILD = r"""
import json, sys, time
from pathlib import Path
from mdrl_lib.store import Store
args = json.loads(sys.argv[1])

def build(directory):
    (directory / "half.bin").write_bytes(b"half")
    Path(args["started"]).touch()
    time.sleep(600)

Store(args["root"]).get_or_create("base-1", build, config={}, seed=0)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_killed_builder_releases_the_lock_and_its_debris_is_cleaned(tmp_path):
    root, started = tmp_path / "store", tmp_path / "started"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", _KILLED_CHILD,
                              json.dumps({"root": str(root), "started": str(started)})], env=env)
    try:
        deadline = time.monotonic() + 30
        while not started.exists():
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(TimeoutError):  # it holds the lock while alive
            Store(root, lock_timeout=0.2).get_or_create("base-1", lambda d: {}, config={}, seed=0)
        assert [p.name.split(".")[1] for p in (root / ".tmp").iterdir()] == [str(child.pid)]
    finally:
        child.kill()
        child.wait()
    store = Store(root, lock_timeout=10)
    assert list((root / ".tmp").iterdir()) == []  # its half build is gone
    artifact = store.get_or_create("base-1", lambda d: {"rebuilt": True}, config={}, seed=0)
    assert artifact.metrics == {"rebuilt": True} and artifact.manifest["built_by_pid"] == os.getpid()
