"""Notebook 04's recipe assembles C0's inputs, the controls' per-item tables and the planned-vs-used check,
on a kit whose per-item results are hand-made (nothing is trained)."""
from __future__ import annotations

import dataclasses

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
    the three replayed-reward control replicates' ends 9, 8 and 10 right, more Math all right (planned only with
    ``more_of_the_same``, off in ``params``: :func:`with_more` turns it on)."""
    kit = Kit(RunConfig.from_params(run_dir=str(tmp_path), rl_steps=5))
    params = nb04.Params(run_dir=str(tmp_path), rl_seeds="0,1")
    plan = nb04.chain_plan(kit, with_more(params))
    tables = {kit.key(Base()): math([1] * 5 + [0] * 5)}
    for seed, chain in plan.chains.items():
        tables.update({kit.key(spec): math([1] * 5 + [0] * 5) for spec in chain})
        tables[kit.key(chain[1])] = math([1] * 10)
        tables[kit.key(chain[-1])] = math([1] * (7 - seed) + [0] * (3 + seed))
    for name, right in zip(["replayed rewards (seed 0)", "replayed rewards (seed 1)", "replayed rewards (seed 2)"],
                           (9, 8, 10)):
        tables[kit.key(plan.controls[name])] = math([1] * right + [0] * (10 - right))
    tables[kit.key(plan.controls["more of the same"])] = math([1] * 10)
    monkeypatch.setattr(kit, "item_results", lambda spec: tables[kit.key(spec)])
    holds = {"value": True}
    monkeypatch.setattr("mdrl_lib.claims.nb00.base_precondition_table",
                        lambda kit: pd.DataFrame({"check": ["a", "b"], "holds": [True, holds["value"]]}))
    return kit, params, holds


def with_more(params: nb04.Params) -> nb04.Params:
    return dataclasses.replace(params, more_of_the_same=True)


def test_more_of_the_same_is_planned_only_when_asked_for(tmp_path):
    kit = Kit(RunConfig.from_params(run_dir=str(tmp_path), rl_steps=5))
    params = nb04.Params(run_dir=str(tmp_path))
    assert params.more_of_the_same is False and nb04.Params.defaults()["more_of_the_same"] is False
    default, asked = nb04.chain_plan(kit, params), nb04.chain_plan(kit, with_more(params))
    assert "more of the same" not in default.controls
    assert not any(isinstance(s, Stage) and s.domain == "math" and s.parent == default.controls["after"]
                   for s in default.training_specs())
    more = asked.controls["more of the same"]
    # as many steps of Math itself, from the checkpoint right after Math's stage, as the two later stages take
    assert more.domain == "math" and more.parent == asked.controls["after"] and more.steps == 2 * 5
    assert set(asked.training_specs()) - set(default.training_specs()) == {more}
    assert set(asked.specs()) - set(default.specs()) == {more, Scores(more)}
    assert nb04.Params.from_values({"more_of_the_same": True}).more_of_the_same is True


def test_c0_inputs_hold_each_seeds_drop_and_the_bases_preconditions(run):
    from mdrl_lib.claims.nb04 import check_c0

    kit, params, holds = run
    inputs = nb04.c0_inputs(kit, params)
    drops = inputs["drops"]
    assert drops["rl_seed"].tolist() == [0, 1] and drops["change"].tolist() == pytest.approx([-0.3, -0.4])
    # McNemar, exact: seed 0 lost 3 and gained none, p = 2 * (1/2)^3; seed 1 lost 4, p = 2 * (1/2)^4
    assert drops["p_value"].tolist() == pytest.approx([0.25, 0.125])
    assert inputs["domain"] == "math" and inputs["preconditions_hold"] is True
    check = check_c0(**inputs)
    # mean -0.35, sd 0.071: the t interval over two seeds (12.7 x 0.05 wide either side) reaches 0
    assert check.supported is False and check.figures["change_rl1"] == pytest.approx(-0.4)
    holds["value"] = False
    assert nb04.c0_inputs(kit, params)["preconditions_hold"] is False


def test_c0_specificity_inputs_pair_the_real_end_with_each_replicate_and_their_mean(run, monkeypatch):
    from mdrl_lib import interference
    from mdrl_lib.claims.nb04 import check_c0_specificity

    kit, params, _ = run
    plan = nb04.chain_plan(kit, params)
    names = interference.replicate_names(plan.controls)
    scores = {kit.key(plan.controls["after"]): {"qa": 0.6, "cw": 0.4}}
    scores.update({kit.key(plan.controls[n]): {"qa": 0.5, "cw": 0.1} for n in names})
    monkeypatch.setattr(kit, "scores_of", lambda spec: pd.DataFrame(
        [{"domain": d, "score": v} for d, v in scores[kit.key(spec)].items()]))
    monkeypatch.setattr(interference, "displacement_norm", lambda kit, a, b: 2.0 if b == plan.controls["real chain"] else 1.8)
    shares = {"real chain": [0.70, 0.50], **{n: [0.70, 0.50 + 0.01 * i] for i, n in enumerate(names)}}
    monkeypatch.setattr(nb04, "diagnostics", lambda kit, params: pd.DataFrame(
        [{"run": r, "stage": "qa", "step": step + 1, "recorded": True, "zero_advantage_share": v[step],
          "mean_abs_advantage": 0.2, "loss": 0.0, "entropy": 1.0 + step} for r, v in shares.items() for step in (1, 0)]))
    draws = pd.concat([math([1] * 10).assign(draw=0), math([1] * 9 + [0]).assign(draw=1)])
    monkeypatch.setattr(nb04, "random_direction_items", lambda kit, params: draws)
    inputs = nb04.c0_specificity_inputs(kit, params)
    versus = inputs["real_minus_controls"]
    assert versus["control"].tolist() == names
    # the real end (RL seed 0: 7 right) minus each replicate's end (9, 8, 10 right)
    assert versus["diff"].tolist() == pytest.approx([-0.2, -0.1, -0.3])
    assert inputs["real_minus_mean"]["diff"] == pytest.approx(-0.2)  # 0.7 - mean(0.9, 0.8, 1.0)
    # per step, in step order (the table above lists step 2 first)
    assert inputs["zero_advantage"] == {"real": [0.70, 0.50], "controls": [[0.70, 0.50], [0.70, 0.51], [0.70, 0.52]]}
    assert inputs["entropy"]["real"] == [1.0, 2.0] and inputs["mean_abs_advantage"]["controls"] == [[0.2, 0.2]] * 3
    assert inputs["distance"] == {"real": 2.0, "controls": [1.8] * 3}
    own = inputs["own_domains"]
    assert len(own) == 3 * 2 and set(own["domain"]) == {"qa", "cw"} and own["after"].min() == 0.1
    assert inputs["random_changes"] == pytest.approx([0.0, -0.1]) and inputs["same_domain_change"] is None
    check = check_c0_specificity(**inputs)
    assert check.figures["same_domain_change"] is None and "more steps of" not in check.measured
    more = nb04.c0_specificity_inputs(kit, with_more(params))
    assert more["same_domain_change"] == 0  # more Math kept it all right
    assert check_c0_specificity(**more).measured.endswith("; more steps of math itself: +0.000")
    # CW kept 0.1 / 0.4 = 0.25 of its post-stage score: a collapse, so the check is not testable here
    assert check.verdict == "not testable here" and "own domains" in check.why
    assert check.figures["zero_advantage_share_control"] == pytest.approx((0.60 + 0.605 + 0.61) / 3)
    assert check.figures["zero_advantage_step_gap"] == pytest.approx(0.02)
    assert check.figures["mean_abs_advantage_step_gap"] == 0.0
    table = nb04.neutrality_table(inputs)
    assert table["largest step gap in zero-advantage share"].tolist() == pytest.approx([0.0, 0.0, 0.01, 0.02])
    assert table["distance / real"].tolist() == pytest.approx([1.0, 0.9, 0.9, 0.9])


def test_control_runs_pair_each_control_with_the_checkpoint_after_the_damaged_stage(run):
    kit, params, _ = run
    runs = nb04.control_runs(kit, params)
    assert list(runs) == ["real chain", "replayed rewards (seed 0)", "replayed rewards (seed 1)",
                          "replayed rewards (seed 2)"]  # no "more of the same" unless asked for
    assert list(nb04.control_runs(kit, with_more(params)))[-1] == "more of the same"
    after = kit.item_results(kit.chain_specs(None, 0)[1])
    assert all(before is after for before, _ in runs.values())
    assert runs["real chain"][1]["score"].sum() == 7  # RL seed 0's chain, the first seed
    digit_free = {"math": math([1] * 4), "cw": math([0] * 4)}
    with_world = nb04.control_runs(kit, params, {nb04.DIGIT_FREE: digit_free, "world seed 5": digit_free})
    assert list(with_world)[-1] == nb04.DIGIT_FREE and len(with_world) == 5
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
