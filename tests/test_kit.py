"""Cache keys of the kit (mdrl_lib.kit, mdrl_lib.specs): a changed toy world never reuses an old base."""
from __future__ import annotations

from mdrl_lib import specs as specs_module
from mdrl_lib.config import RunConfig
from mdrl_lib.domains import math as toy_math
from mdrl_lib.domains import qa as toy_qa
from mdrl_lib.domains import writing as toy_cw
from mdrl_lib.kit import Kit
from mdrl_lib.specs import Base


def test_base_key_follows_the_world_version_and_the_world_settings(tmp_path, monkeypatch):
    kit = Kit(RunConfig.from_params(run_dir=str(tmp_path)))
    key = kit.key(Base())
    settings = Base().key_fields(kit)["world_settings"]
    assert set(settings) == {"code", "math", "qa", "cw"}
    assert settings["math"] == {"boxed_share": toy_math.BOXED_SHARE}
    assert settings["qa"] == {"unit_share": toy_qa.UNIT_SHARE}
    assert settings["cw"] == {"descending_share": toy_cw.DESCENDING_SHARE}
    assert settings["code"] == {}  # the default hook: no knobs
    assert Kit(RunConfig.from_params(run_dir=str(tmp_path))).key(Base()) == key
    monkeypatch.setattr(toy_math, "BOXED_SHARE", 0.0)
    assert kit.key(Base()) != key
    monkeypatch.undo()
    monkeypatch.setattr(specs_module, "WORLD_VERSION", specs_module.WORLD_VERSION + 1)
    assert kit.key(Base()) != key
    assert Kit(RunConfig.from_params(run_dir=str(tmp_path), seed=1)).key(Base()) != kit.key(Base())


def test_full_scale_base_key_ignores_the_toy_world(tmp_path, monkeypatch):
    kit = Kit(RunConfig.from_params(scale="full", run_dir=str(tmp_path)))
    assert "world_settings" not in Base().key_fields(kit)
    key = kit.key(Base())
    monkeypatch.setattr(toy_math, "BOXED_SHARE", 0.0)
    assert kit.key(Base()) == key


def test_every_toy_world_knob_changes_the_base_key(tmp_path, monkeypatch):
    """Warm-up weights, anneal steps, the other warm-up settings, the model's sizes and each domain's
    convention share: changing any one gives another base; settings the toy base never reads do not."""
    def key(**params):
        return Kit(RunConfig.from_params(run_dir=str(tmp_path), **params)).key(Base())

    reference = key()
    for params in ({"warmup_anneal_steps": 100}, {"warmup_steps": 10}, {"warmup_lr": 2e-3}, {"warmup_batch_size": 8},
                   {"model_hidden_size": 64}, {"data_eval_size": 50}, {"seed": 5}):
        assert key(**params) != reference, params
    for params in ({"data_max_prompt_tokens": 99}, {"rl_lr": 1e-4}, {"compute_device": "cpu"}):
        assert key(**params) == reference, params
    monkeypatch.setitem(specs_module.TOY_WARMUP_WEIGHTS, "qa", 2.0)
    assert key() != reference
    monkeypatch.undo()
    monkeypatch.setattr(toy_qa, "UNIT_SHARE", 0.9)
    assert key() != reference
    monkeypatch.undo()
    monkeypatch.setattr(toy_cw, "DESCENDING_SHARE", 0.3)
    assert key() != reference
    monkeypatch.undo()
    assert key() == reference
