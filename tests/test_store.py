import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch
from filelock import FileLock
from safetensors.torch import load_file, save_file

from mdrl_lib import scratch
from mdrl_lib.store import MANIFEST, Store, cache_key


def _build_tensor(directory):
    save_file({"w": torch.arange(6.0).reshape(2, 3)}, str(directory / "model.safetensors"))
    return {"score": 0.5}


def test_cache_key_depends_on_exactly_the_given_fields():
    assert cache_key("base", {"a": 1, "b": [1, 2]}) == cache_key("base", {"b": [1, 2], "a": 1})
    assert cache_key("base", {"a": 1}) != cache_key("base", {"a": 2})
    assert cache_key("base", {"a": 1}) != cache_key("expert", {"a": 1})
    assert cache_key("base", {"a": 1}).startswith("base-")
    with pytest.raises(ValueError, match="alphanumeric"):
        cache_key("../evil", {})


def test_get_or_create_builds_once_and_writes_a_manifest(tmp_path):
    store = Store(tmp_path)
    calls = []

    def build(directory):
        calls.append(directory)
        return _build_tensor(directory)

    first = store.get_or_create("base-1", build, config={"lr": 0.1}, seed=7)
    second = store.get_or_create("base-1", build, config={"lr": 0.1}, seed=7)
    assert len(calls) == 1
    assert first == second
    manifest = json.loads((tmp_path / "base-1" / MANIFEST).read_text())
    assert manifest["seed"] == 7 and manifest["config"] == {"lr": 0.1}
    assert manifest["metrics"] == {"score": 0.5} and manifest["seconds"] >= 0
    assert manifest["kit_version"]
    assert torch.equal(load_file(str(first.path / "model.safetensors"))["w"], torch.arange(6.0).reshape(2, 3))
    assert Store(tmp_path).keys() == ["base-1"]


def test_crash_between_write_and_rename_leaves_no_artifact(tmp_path, monkeypatch):
    store = Store(tmp_path)

    def crash(src, dst):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(OSError, match="simulated crash"):
        store.get_or_create("base-1", _build_tensor, config={}, seed=0)
    monkeypatch.undo()
    assert store.get("base-1") is None
    assert not (tmp_path / "base-1").exists()
    assert list((tmp_path / ".tmp").iterdir()) == []
    rebuilt = store.get_or_create("base-1", _build_tensor, config={}, seed=0)
    assert rebuilt.metrics == {"score": 0.5}


def test_failing_build_leaves_nothing(tmp_path):
    store = Store(tmp_path)

    def broken(directory):
        (directory / "model.safetensors").write_bytes(b"half a checkpoint")
        raise RuntimeError("training diverged")

    with pytest.raises(RuntimeError):
        store.get_or_create("base-1", broken, config={}, seed=0)
    assert store.get("base-1") is None and store.keys() == []


def test_a_killed_build_is_ignored_and_cleaned_up(tmp_path):
    dead = tmp_path / ".tmp" / "base-1.999999999.abcd1234"
    dead.mkdir(parents=True)
    (dead / "model.safetensors").write_bytes(b"partial")
    (dead / MANIFEST).write_text("{}")
    store = Store(tmp_path)
    assert store.get("base-1") is None
    assert not dead.exists()


def test_directory_without_manifest_is_not_an_artifact(tmp_path):
    (tmp_path / "base-1").mkdir()
    (tmp_path / "base-1" / "model.safetensors").write_bytes(b"x")
    assert Store(tmp_path).get("base-1") is None


def test_debris_at_the_final_path_is_replaced(tmp_path):
    (tmp_path / "base-1").mkdir()
    (tmp_path / "base-1" / "junk").write_text("x")
    artifact = Store(tmp_path).get_or_create("base-1", _build_tensor, config={}, seed=0)
    assert not (artifact.path / "junk").exists() and artifact.metrics == {"score": 0.5}


# ---- concurrency: a lock per key, finished artifacts are never deleted ------------------------------


def _files_with_inodes(directory):
    return {p.name: (p.stat().st_ino, p.read_bytes()) for p in sorted(directory.iterdir())}


def test_a_second_build_finishing_later_never_deletes_the_finished_artifact(tmp_path):
    """A writer that did not take the lock (an older kit) publishes while we build: ours is discarded."""
    store = Store(tmp_path)
    other = Store(tmp_path)
    seen = {}

    def slow_build(directory):
        (directory / "model.safetensors").write_bytes(b"ours")
        other._build("base-1", lambda d: (d / "model.safetensors").write_bytes(b"theirs") and None,
                     config={}, seed=1)  # the other writer finishes first, while we are still building
        seen["before"] = _files_with_inodes(tmp_path / "base-1")
        return {"who": "ours"}

    artifact = store.get_or_create("base-1", slow_build, config={}, seed=0)
    assert (artifact.path / "model.safetensors").read_bytes() == b"theirs"
    assert artifact.manifest["seed"] == 1 and artifact.metrics == {}
    assert _files_with_inodes(tmp_path / "base-1") == seen["before"]  # same files, same inodes: never replaced
    assert list((tmp_path / ".tmp").iterdir()) == []


def test_publish_keeps_a_finished_artifact_and_replaces_debris(tmp_path):
    store = Store(tmp_path)
    store.get_or_create("base-1", _build_tensor, config={}, seed=0)
    before = _files_with_inodes(tmp_path / "base-1")
    late = tmp_path / ".tmp" / "late"
    late.mkdir()
    (late / MANIFEST).write_text("{}")
    assert store._publish("base-1", late) is False
    assert late.is_dir() and _files_with_inodes(tmp_path / "base-1") == before

    (tmp_path / "base-2").mkdir()
    (tmp_path / "base-2" / "junk").write_text("x")
    assert store._publish("base-2", late) is True
    assert not late.exists() and sorted(p.name for p in (tmp_path / "base-2").iterdir()) == [MANIFEST]


def test_two_threads_asking_for_one_key_build_it_once(tmp_path):
    started, release = threading.Event(), threading.Event()
    calls, results, errors = [], {}, []

    def build(directory):
        calls.append(threading.current_thread().name)
        started.set()
        assert release.wait(10)
        return _build_tensor(directory)

    def ask(name):
        try:
            results[name] = Store(tmp_path).get_or_create("base-1", build, config={}, seed=0)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    first = threading.Thread(target=ask, args=("first",), name="first")
    first.start()
    assert started.wait(10)
    second = threading.Thread(target=ask, args=("second",), name="second")
    second.start()
    time.sleep(0.3)
    assert second.is_alive() and calls == ["first"]  # the second waits on the key's lock
    release.set()
    first.join(10)
    second.join(10)
    assert errors == [] and calls == ["first"]
    assert results["first"] == results["second"]
    assert results["second"].manifest["built_by_pid"] == os.getpid()


def test_debris_is_replaced_only_under_the_keys_lock(tmp_path):
    store = Store(tmp_path)
    (tmp_path / "base-1").mkdir()
    (tmp_path / "base-1" / "junk").write_text("x")
    store.lock_path("base-1").parent.mkdir(exist_ok=True)
    holder = FileLock(str(store.lock_path("base-1")))
    holder.acquire()
    done = threading.Event()
    calls = []

    def build(directory):
        calls.append(1)
        return _build_tensor(directory)

    thread = threading.Thread(target=lambda: (store.get_or_create("base-1", build, config={}, seed=0), done.set()))
    thread.start()
    time.sleep(0.3)
    assert not done.is_set() and calls == [] and (tmp_path / "base-1" / "junk").exists()
    holder.release()
    thread.join(10)
    assert done.is_set() and calls == [1]
    assert not (tmp_path / "base-1" / "junk").exists() and store.get("base-1").metrics == {"score": 0.5}


def test_a_waiter_that_finds_the_artifact_built_returns_it_without_building(tmp_path):
    store = Store(tmp_path)
    store.lock_path("base-1").parent.mkdir(exist_ok=True)
    holder = FileLock(str(store.lock_path("base-1")))
    holder.acquire()
    results = []
    thread = threading.Thread(target=lambda: results.append(
        store.get_or_create("base-1", lambda d: pytest.fail("built twice"), config={}, seed=0)))
    thread.start()
    time.sleep(0.2)
    Store(tmp_path)._build("base-1", _build_tensor, config={}, seed=3)  # the lock holder's build
    holder.release()
    thread.join(10)
    assert len(results) == 1 and results[0].manifest["seed"] == 3


def test_waiting_is_logged_and_times_out_with_a_clear_error(tmp_path, caplog):
    store = Store(tmp_path, lock_timeout=0.3)
    store.lock_path("base-1").parent.mkdir(exist_ok=True)
    holder = FileLock(str(store.lock_path("base-1")))
    holder.acquire()
    try:
        with caplog.at_level(logging.INFO, logger="mdrl_lib.store"):
            start = time.monotonic()
            with pytest.raises(TimeoutError, match=r"base-1, which another process is building \(lock .*base-1\.lock\)"):
                store.get_or_create("base-1", _build_tensor, config={}, seed=0)
            assert 0.25 < time.monotonic() - start < 5
    finally:
        holder.release()
    assert [r.store_event for r in caplog.records if hasattr(r, "store_event")] == ["waiting"]
    assert store.get_or_create("base-1", _build_tensor, config={}, seed=0).metrics == {"score": 0.5}
    with pytest.raises(ValueError, match="lock_timeout"):
        Store(tmp_path, lock_timeout=-1)


def test_a_build_asking_for_its_own_key_is_an_error_not_a_hang(tmp_path):
    store = Store(tmp_path)

    def recursive(directory):
        return store.get_or_create("base-1", _build_tensor, config={}, seed=0)

    with pytest.raises(RuntimeError, match="must not depend on its own artifact"):
        store.get_or_create("base-1", recursive, config={}, seed=0)
    assert store.get_or_create("base-1", _build_tensor, config={}, seed=0).metrics == {"score": 0.5}


def test_builds_are_logged_and_quiet_by_default(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="mdrl_lib.store"):
        Store(tmp_path).get_or_create("base-1", _build_tensor, config={}, seed=0)
        Store(tmp_path).get_or_create("base-1", _build_tensor, config={}, seed=0)
    assert [r.store_event for r in caplog.records if hasattr(r, "store_event")] == ["building", "built"]


def test_the_store_prints_nothing_unless_logging_is_configured(tmp_path):
    import subprocess
    import sys

    script = ("import sys; from mdrl_lib.store import Store; s = Store(sys.argv[1]); "
              "s.get_or_create('k-1', lambda d: {}, config={}, seed=0); print(s.keys())")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and done.stdout == "['k-1']\n" and done.stderr == ""


# ---- scratch directories of killed runs ----------------------------------------------------------------


def _dead_pid():
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not scratch.pid_alive(proc.pid)
    return proc.pid


@pytest.fixture
def temp_root(tmp_path, monkeypatch):
    root = tmp_path / "systemtmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def test_scratch_dir_names_the_creating_process(temp_root):
    first, second = scratch.scratch_dir("mdrl-grpo"), scratch.scratch_dir("mdrl-grpo")
    assert first != second and first.is_dir() and first.parent == temp_root
    assert first.name.startswith(f"mdrl-grpo-{os.getpid()}-") and len(first.name) > len(f"mdrl-grpo-{os.getpid()}-")
    assert (first.stat().st_mode & 0o777) == 0o700
    with pytest.raises(ValueError, match="letters, digits"):
        scratch.scratch_dir("../evil")
    with pytest.raises(ValueError, match="letters, digits"):
        scratch.scratch_dir("mdrl-")


def test_remove_abandoned_removes_only_dead_pids_dirs_of_that_prefix(temp_root):
    dead = _dead_pid()
    abandoned = [temp_root / f"mdrl-grpo-{dead}-abc_12XY", temp_root / f"mdrl-grpo-{dead}-q"]
    for path in abandoned:
        path.mkdir()
        (path / "checkpoint-1").mkdir()
        (path / "checkpoint-1" / "optimizer.pt").write_bytes(b"x")
    live = [temp_root / f"mdrl-grpo-{os.getpid()}-abcdefgh", temp_root / f"mdrl-grpo-{os.getppid()}-abcdefgh",
            scratch.scratch_dir("mdrl-grpo")]
    for path in live[:2]:
        path.mkdir()
    foreign = [temp_root / name for name in (
        "mdrl-grpo-abcdefgh",                 # the old unnamed-pid style: whose it is cannot be told
        f"mdrl-grpo-{dead}-ab-cd",            # not the pattern
        f"mdrl-grpo-{dead}-",                 # no random part
        f"mdrl-grpo-{dead}",                  # no random part
        f"xmdrl-grpo-{dead}-abcdefgh",        # another prefix
        f"mdrl-grpo-extra-{dead}-abcdefgh",   # another prefix
        f"mdrl-sandbox-{dead}-abcdefgh",      # another prefix (removed only when asked for it)
        "mdrl-grpo-0-abcdefgh",               # pid 0 is no process's
    )]
    for path in foreign:
        path.mkdir()
    not_a_dir = temp_root / f"mdrl-grpo-{dead}-file1234"
    not_a_dir.write_text("a file")
    target = temp_root / "kept-target"
    target.mkdir()
    (target / "precious").write_text("x")
    link = temp_root / f"mdrl-grpo-{dead}-link1234"
    link.symlink_to(target, target_is_directory=True)

    removed = scratch.remove_abandoned("mdrl-grpo")
    assert removed == sorted(abandoned)
    assert not any(p.exists() for p in abandoned)
    assert all(p.is_dir() for p in live + foreign)
    assert not_a_dir.is_file() and link.is_symlink() and (target / "precious").exists()
    assert scratch.remove_abandoned("mdrl-grpo") == []
    assert scratch.remove_abandoned("mdrl-sandbox") == [temp_root / f"mdrl-sandbox-{dead}-abcdefgh"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to make another user's dir")
def test_remove_abandoned_leaves_another_users_dirs(temp_root):
    dead = _dead_pid()
    theirs = temp_root / f"mdrl-grpo-{dead}-abcdefgh"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    assert scratch.remove_abandoned("mdrl-grpo") == [] and theirs.is_dir()


def test_opening_a_store_cleans_grpo_and_sandbox_scratch_of_dead_processes(temp_root, tmp_path):
    dead = _dead_pid()
    grpo, sandbox = temp_root / f"mdrl-grpo-{dead}-abcdefgh", temp_root / f"mdrl-sandbox-{dead}-abcdefgh"
    mine = scratch.scratch_dir("mdrl-sandbox")
    for path in (grpo, sandbox):
        path.mkdir()
    Store(tmp_path / "run")
    assert not grpo.exists() and not sandbox.exists() and mine.is_dir()


def test_pid_alive_rejects_what_is_not_a_pid():
    assert scratch.pid_alive(os.getpid())
    with pytest.raises(ValueError, match="positive"):
        scratch.pid_alive(0)


def test_write_json_atomic_replaces_whole_files_and_leaves_nothing_on_failure(tmp_path):
    import json

    from mdrl_lib.store import write_json_atomic

    target = tmp_path / "record.json"
    write_json_atomic(target, {"b": 1, "a": [1, 2]})
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1} and target.read_text().endswith("\n")
    with pytest.raises(TypeError):
        write_json_atomic(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1}  # the old record stays whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]  # no temporary file left
