"""Notebook 04's recipe assembles C0's inputs, the controls' per-item tables and the planned-vs-used check,
on a kit whose per-item results are hand-made (nothing is trained)."""
from __future__ import annotations

import pandas as pd
import pytest

from mdrl_lib.config import RunConfig
from mdrl_lib.kit import Kit
from mdrl_lib.recipes import nb04
from mdrl_lib.specs import Base, Scores, Stage


def math(scores: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"domain": "math", "item": range(len(scores)), "score": [float(s) for s in scores],
                         "details": [{}] * len(scores)})


@pytest.fixture
def run(tmp_path, monkeypatch):
    """(kit, params): two RL seeds; Math all right after its stage (10 items), the chain's end 7 - seed right,
    the shuffled-reward control's end 9 right, more Math all right."""
    kit = Kit(RunConfig.from_params(run_dir=str(tmp_path), rl_steps=5))
    params = nb04.Params(run_dir=str(tmp_path), rl_seeds="0,1")
    plan = nb04.chain_plan(kit, params)
    tables = {kit.key(Base()): math([1] * 5 + [0] * 5)}
    for seed, chain in plan.chains.items():
        tables.update({kit.key(spec): math([1] * 5 + [0] * 5) for spec in chain})
        tables[kit.key(chain[1])] = math([1] * 10)
        tables[kit.key(chain[-1])] = math([1] * (7 - seed) + [0] * (3 + seed))
    tables[kit.key(plan.controls["shuffled rewards"])] = math([1] * 9 + [0])
    tables[kit.key(plan.controls["more of the same"])] = math([1] * 10)
    monkeypatch.setattr(kit, "item_results", lambda spec: tables[kit.key(spec)])
    holds = {"value": True}
    monkeypatch.setattr("mdrl_lib.claims.nb00.base_precondition_table",
                        lambda kit: pd.DataFrame({"check": ["a", "b"], "holds": [True, holds["value"]]}))
    return kit, params, holds


def test_c0_inputs_hold_each_seeds_drop_and_the_paired_comparison_with_the_shuffled_control(run):
    from mdrl_lib.claims.nb04 import check_c0

    kit, params, holds = run
    inputs = nb04.c0_inputs(kit, params)
    drops = inputs["drops"]
    assert drops["rl_seed"].tolist() == [0, 1] and drops["change"].tolist() == pytest.approx([-0.3, -0.4])
    # McNemar, exact: seed 0 lost 3 and gained none, p = 2 * (1/2)^3; seed 1 lost 4, p = 2 * (1/2)^4
    assert drops["p_value"].tolist() == pytest.approx([0.25, 0.125])
    versus = inputs["versus_shuffled"]
    # the real chain's end (7 right) minus the control's (9 right), paired: 2 discordant items, p = 2 * (1/2)^2
    assert versus["diff"] == pytest.approx(-0.2) and versus["p_value"] == pytest.approx(0.5)
    assert versus["ci_low"] < -0.2 < versus["ci_high"]
    assert inputs["shuffled_change"] == pytest.approx(-0.1) and inputs["same_domain_change"] == 0
    assert inputs["domain"] == "math" and inputs["preconditions_hold"] is True
    check = check_c0(**inputs)
    assert check.supported is False and check.figures["change_rl1"] == pytest.approx(-0.4)
    holds["value"] = False
    assert nb04.c0_inputs(kit, params)["preconditions_hold"] is False


def test_control_runs_pair_each_control_with_the_checkpoint_after_the_damaged_stage(run):
    kit, params, _ = run
    runs = nb04.control_runs(kit, params)
    assert list(runs) == ["real chain", "shuffled rewards", "more of the same"]
    after = kit.item_results(kit.chain_specs(None, 0)[1])
    assert all(before is after for before, _ in runs.values())
    assert runs["real chain"][1]["score"].sum() == 7  # RL seed 0's chain, the first seed
    digit_free = {"math": math([1] * 4), "cw": math([0] * 4)}
    with_world = nb04.control_runs(kit, params, {nb04.DIGIT_FREE: digit_free, "world seed 5": digit_free})
    assert list(with_world)[-1] == nb04.DIGIT_FREE and len(with_world) == 4
    assert with_world[nb04.DIGIT_FREE][0] is digit_free["math"] and with_world[nb04.DIGIT_FREE][1] is digit_free["cw"]
    assert nb04.world_items(kit, params) == {}  # no other world unless asked for


def test_used_and_planned_agree_only_when_the_kit_was_asked_for_exactly_the_plan(tmp_path, monkeypatch):
    kit = Kit(RunConfig.from_params(run_dir=str(tmp_path), rl_steps=5))
    monkeypatch.setattr(kit, "_get", lambda spec, progress, trainer_overrides: None)  # record, build nothing
    params = nb04.Params(run_dir=str(tmp_path))
    specs = nb04.chain_plan(kit, params).specs()
    used, planned = nb04.used_and_planned(kit, params)
    assert used == set() and planned == {kit.key(s) for s in specs}  # the plan holds everything it is built from
    for spec in specs:
        kit.get(spec)
    used, planned = nb04.used_and_planned(kit, params)
    assert used == planned
    extra = Scores(Stage(Base(), "qa", rl_seed=7))
    kit.get(extra)
    used, planned = nb04.used_and_planned(kit, params)
    assert used - planned == {kit.key(extra), kit.key(extra.of)} and not planned - used
