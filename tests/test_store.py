import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

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
