"""Cache keys of the kit (mdrl_lib.kit): a changed toy world never reuses an old base."""
from __future__ import annotations

from mdrl_lib import kit as kit_module
from mdrl_lib.config import RunConfig
from mdrl_lib.domains import math as toy_math
from mdrl_lib.domains import qa as toy_qa
from mdrl_lib.kit import Kit


def test_base_key_follows_the_world_version_and_the_world_settings(tmp_path, monkeypatch):
    kit = Kit(RunConfig.from_params(run_dir=str(tmp_path)))
    key = kit.base_key()
    settings = kit.base_fields()["world_settings"]
    assert set(settings) == {"code", "math", "qa", "cw"}
    assert settings["math"] == {"boxed_share": toy_math.BOXED_SHARE}
    assert settings["qa"] == {"unit_share": toy_qa.UNIT_SHARE}
    assert settings["cw"] == {}  # the default hook: no knobs
    assert Kit(RunConfig.from_params(run_dir=str(tmp_path))).base_key() == key
    monkeypatch.setattr(toy_math, "BOXED_SHARE", 0.0)
    assert kit.base_key() != key
    monkeypatch.undo()
    monkeypatch.setattr(kit_module, "WORLD_VERSION", kit_module.WORLD_VERSION + 1)
    assert kit.base_key() != key
    assert Kit(RunConfig.from_params(run_dir=str(tmp_path), seed=1)).base_key() != kit.base_key()


def test_full_scale_base_key_ignores_the_toy_world(tmp_path, monkeypatch):
    kit = Kit(RunConfig.from_params(scale="full", run_dir=str(tmp_path)))
    assert "world_settings" not in kit.base_fields()
    key = kit.base_key()
    monkeypatch.setattr(toy_math, "BOXED_SHARE", 0.0)
    assert kit.base_key() == key
