"""The base's GRPO signal as a cached artifact (mdrl_lib.specs.GroupSignal), the precondition table that
reads it, and the right-number share; notebooks 00 and 04 plan the same artifact."""
from __future__ import annotations

import pandas as pd
import pytest

from mdrl_lib.claims.nb00 import base_precondition_table, base_preconditions, right_number_share
from mdrl_lib.config import ConfigError, RunConfig
from mdrl_lib.domains.base import DOMAIN_NAMES
from mdrl_lib.kit import Kit
from mdrl_lib.specs import SIGNAL_COLUMNS, GroupSignal
from mdrl_lib.specs import Base, Stage


def kit_for(tmp_path, **params) -> Kit:
    return Kit(RunConfig.from_params(run_dir=str(tmp_path), **params))


def test_the_key_follows_the_model_the_sample_and_the_decoding_and_nothing_else(tmp_path):
    kit = kit_for(tmp_path)
    key = kit.key(GroupSignal(Base()))
    assert key.startswith("signal-") and key == kit.key(GroupSignal(Base(), 8))
    changed = {kit.key(GroupSignal(Base(), 4)), kit.key(GroupSignal(Stage(Base(), "math"))),
               kit_for(tmp_path, seed=1).key(GroupSignal(Base())),
               kit_for(tmp_path, rl_max_completion_length=12).key(GroupSignal(Base())),
               kit_for(tmp_path, warmup_steps=600).key(GroupSignal(Base()))}
    assert key not in changed and len(changed) == 5
    for unrelated in ({"rl_steps": 7}, {"rl_lr": 1e-4}, {"rl_num_generations": 4}, {"order": "qa,math,code,cw"}):
        assert kit_for(tmp_path, **unrelated).key(GroupSignal(Base())) == key, unrelated
    with pytest.raises(ConfigError, match="num_generations"):
        GroupSignal(Base(), 1)


def test_notebooks_00_and_04_plan_one_signal_artifact(tmp_path):
    from mdrl_lib.recipes import nb00, nb04

    kit = kit_for(tmp_path)
    zero = [s for s in nb00.plan(kit, nb00.Params(run_dir=str(tmp_path))) if isinstance(s, GroupSignal)]
    four = [s for s in nb04.chain_plan(kit, nb04.Params(run_dir=str(tmp_path))).analysis_specs()
            if isinstance(s, GroupSignal)]
    assert [kit.key(s) for s in zero] == [kit.key(s) for s in four]
    other = nb00.plan(kit, nb00.Params(run_dir=str(tmp_path), num_generations=4))
    assert GroupSignal(Base(), 4) in other
    assert GroupSignal(Base()).toy_seconds(kit.config) > 0


def test_the_right_number_share_ignores_the_convention():
    items = pd.DataFrame({"domain": ["math"] * 4 + ["qa"], "item": range(5), "score": [1, 0, 0, 0, 1],
                          "details": [{"right_number": True}, {"right_number": True}, {"right_number": False}, {},
                                      {"right_number": True}]})
    assert right_number_share(items, "math") == 0.5 and right_number_share(items, "qa") == 1.0
    with pytest.raises(ValueError, match="no items of domain 'cw'"):
        right_number_share(items, "cw")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("signal-run")
    return Kit(RunConfig.from_params(run_dir=str(run_dir), warmup_steps=20, data_eval_size=6, data_train_size=6,
                                     model_hidden_size=32, model_num_layers=1, model_num_heads=2,
                                     model_intermediate_size=64))


def test_the_signal_is_built_once_and_reads_back_as_mixed_group_share_computes_it(tiny):
    from mdrl_lib.evaluation import mixed_group_share

    spec = GroupSignal(Base(), num_generations=3)
    artifact = tiny.get(spec, progress=False)
    table = tiny.open(spec)
    assert list(table.index) == list(DOMAIN_NAMES) and list(table.columns) == list(SIGNAL_COLUMNS.values())
    assert artifact.metrics["mixed"] == {n: pytest.approx(table.loc[n, "share of mixed groups"], abs=1e-6)
                                         for n in DOMAIN_NAMES}
    model, tokenizer = tiny.load(Base())
    for name in ("math", "cw"):
        direct = mixed_group_share(model, tokenizer, tiny.domain(name), tiny.splits(name).train, num_generations=3,
                                   max_new_tokens=tiny.config.rl.max_completion_length, seed=tiny.config.seed)
        assert table.loc[name].tolist() == [direct["mixed"], direct["any_right"], direct["mean_reward"]]
    written = (artifact.path / "signal.json").stat().st_mtime_ns
    tiny.open(spec)
    assert (artifact.path / "signal.json").stat().st_mtime_ns == written  # cached: read, not sampled again
    checks = base_precondition_table(tiny, num_generations=3)
    expected = base_preconditions(tiny.scores_of(Base()), table["share of mixed groups"].to_dict(),
                                  tiny.item_results(Base()))
    pd.testing.assert_frame_equal(checks, expected)
    mixed = checks[checks["check"].str.contains("mixed groups")]
    assert mixed["value"].tolist() == table["share of mixed groups"].tolist()
