"""Error breakdowns and controls (mdrl_lib.interference) on hand-written per-item tables."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from mdrl_lib.config import RunConfig
from mdrl_lib.domains.base import get_domain
from mdrl_lib.interference import CATEGORIES, breakdown, control_specs, drop_breakdown, error_category
from mdrl_lib.kit import Kit
from mdrl_lib.specs import Stage


def items(domain: str, completions: list[str], specs: list[dict]) -> pd.DataFrame:
    """A per-item table as Kit.item_results gives it, scored by the real toy verifier."""
    d = get_domain(domain)
    texts = [json.dumps(s) for s in specs]
    scores, details = d.score(completions, texts), d.details(completions, texts)
    return pd.DataFrame({"domain": domain, "item": range(len(completions)), "completion": completions,
                         "score": scores, "details": details})


MATH = [{"answer": "42"}, {"answer": "7"}, {"answer": "13"}, {"answer": "5"}, {"answer": "0"}]


def test_each_domain_sorts_hand_written_answers_into_the_four_kinds():
    def kinds(domain, completions, spec):
        table = items(domain, completions, [spec] * len(completions))
        return [error_category(domain, s, d) for s, d in zip(table["score"], table["details"])]

    assert kinds("math", ["42", "(42)", "42 years", "41", "x"], {"answer": "42"}) == [
        "right", "right content, wrong convention", "right content, wrong convention", "wrong content", "no answer"]
    assert kinds("qa", ["17 years", "17", "18 years", "bax"], {"answer": "17 years", "number": "17"}) == [
        "right", "right content, wrong convention", "wrong content", "no answer"]
    assert kinds("code", ["3*5+2", "9+8", "3+3", "import os"], {"target": 17, "digit": "3"}) == [
        "right", "wrong content", "wrong content", "no answer"]
    assert kinds("cw", ["2 bat 17 gem", "17 bat 2 gem", "bat gem"], {"letters": "bg", "length": 12}) == [
        "right", "wrong content", "no answer"]
    with pytest.raises(ValueError, match="valid domains"):
        error_category("physics", 0.0, {})


def test_breakdown_shares_sum_to_one_per_domain():
    table = breakdown(items("math", ["42", "(7)", "12", "", "0"], MATH))
    assert list(table.columns) == list(CATEGORIES)
    assert table.loc["math"].tolist() == [0.4, 0.2, 0.2, 0.2]


def test_a_drop_splits_into_convention_and_wrong_content():
    before = items("math", ["42", "7", "13", "4", "0"], MATH)  # 4 of 5 right
    after = items("math", ["42 x", "8", "13", "5", "(0)"], MATH)  # lost 3 (two by convention), gained 1
    result = drop_breakdown(before, after, "math")
    assert (result["n"], result["lost"], result["gained"]) == (5, 3, 1)
    assert result["lost: right content, wrong convention"] == 2 and result["lost: wrong content"] == 1
    assert result["lost: no answer"] == 0
    assert result["change"] == pytest.approx(after["score"].mean() - before["score"].mean())
    with pytest.raises(ValueError, match="different items"):
        drop_breakdown(before, after.iloc[:4], "math")
    with pytest.raises(ValueError, match="no items of domain 'qa'"):
        drop_breakdown(before, after, "qa")


def test_control_specs_take_the_later_stages_step_budget_from_the_same_checkpoint(tmp_path):
    kit = Kit(RunConfig.from_params(run_dir=str(tmp_path), rl_steps=50))
    specs = control_specs(kit, "code,math,qa,cw", "math", rl_seed=2)
    chain = kit.chain_specs("code,math,qa,cw", rl_seed=2)
    assert specs["after"] == chain[1] and specs["real chain"] == chain[-1]
    names = [f"replayed rewards (seed {s})" for s in (2, 3, 4)]  # 3 replicates, control seeds from the RL seed
    assert list(specs) == ["after", "real chain", *names, "more of the same"]
    for seed, name in zip((2, 3, 4), names):
        replayed = specs[name]
        assert (replayed.domain, replayed.reward, replayed.parent.domain, replayed.parent.reward) == (
            "cw", "replayed", "qa", "replayed")
        # each control stage replays the real stage of its domain (an input, built first)
        assert (replayed.replay, replayed.parent.replay) == (chain[3], chain[2]) and chain[3] in replayed.inputs()
        assert replayed.rl_seed == replayed.parent.rl_seed == seed and replayed.parent.parent == chain[1]
        # the distance rule: as many steps as the real later stages
        assert [s.resolved_steps(kit) for s in (replayed.parent, replayed)] == [c.resolved_steps(kit) for c in chain[2:]]
    same = specs["more of the same"]
    assert isinstance(same, Stage) and same.domain == "math" and same.steps == 100 and same.parent == chain[1]
    assert len({kit.key(s) for s in specs.values()}) == 6
    assert len(control_specs(kit, "code,math,qa,cw", "math", replicates=5)) == 2 + 5 + 1
    without = control_specs(kit, "code,math,qa,cw", "math", rl_seed=2, more_of_the_same=False)
    assert list(without) == ["after", "real chain", *names] and all(without[n] == specs[n] for n in without)
    with pytest.raises(ValueError, match="last stage"):
        control_specs(kit, "code,math,qa,cw", "cw")
    with pytest.raises(ValueError, match="not in the chain"):
        control_specs(kit, "code,qa", "math")


# ---- the digit-free world ---------------------------------------------------------------------------

def test_the_digit_free_world_sorts_hand_written_answers_too():
    def kinds(domain, completions, spec):
        d = get_domain(domain, numbers="letters")
        texts = [json.dumps(spec)] * len(completions)
        return [error_category(domain, s, det) for s, det in zip(d.score(completions, texts), d.details(completions, texts))]

    qa = {"answer": "bh years", "number": "bh"}
    assert kinds("qa", ["bh years", "bh", "(bh) years", "bi years", "17 years", "bax"], qa) == [
        "right", "right content, wrong convention", "right content, wrong convention", "wrong content",
        "no answer", "no answer"]
    cw = {"letters": "bg", "length": 12}
    assert kinds("cw", ["c bat bh gem", "bh bat c gem", "2 bat 17 gem", "bat gem"], cw) == [
        "right", "wrong content", "no answer", "no answer"]


def test_the_digit_free_world_keeps_prompts_and_lengths_and_drops_every_digit_from_qa_and_cw_answers():
    for name in ("qa", "cw"):
        plain, free = get_domain(name), get_domain(name, numbers="letters")
        a, b = plain.build_splits(0, *plain.default_sizes), free.build_splits(0, *free.default_sizes)
        assert [e.prompt for e in a.eval] == [e.prompt for e in b.eval]
        assert [len(e.answer) for e in a.eval] == [len(e.answer) for e in b.eval]
        assert not any(c.isdigit() for e in b.train + b.eval for c in e.answer)
        assert not any(c.isdigit() for _, answer in free.warmup_pairs(b) for c in answer)
        assert plain.world_settings().get("numbers") is None and free.world_settings()["numbers"] == "letters"
    with pytest.raises(ValueError, match="digits, letters"):
        get_domain("qa", numbers="roman")


def test_the_digit_free_world_is_its_own_base_and_leaves_the_default_key_alone(tmp_path):
    from mdrl_lib.config import ConfigError
    from mdrl_lib.specs import Base

    plain = Kit(RunConfig.from_params(run_dir=str(tmp_path)))
    free = Kit(RunConfig.from_params(run_dir=str(tmp_path), data_digit_free=True))
    fields = Base().key_fields(plain)
    assert "digit_free" not in fields["data"] and all("numbers" not in v for v in fields["world_settings"].values())
    assert Base().key_fields(free)["world_settings"]["qa"]["numbers"] == "letters"
    assert plain.key(Base()) != free.key(Base())
    assert free.splits("qa").eval[0].answer[0].isalpha() and free.splits("math").eval == plain.splits("math").eval
    with pytest.raises(ConfigError, match="data_digit_free"):
        RunConfig.from_params(scale="full", data_digit_free=True)


# ---- paired changes, the control table ----------------------------------------------------------------

def scored(domain: str, scores: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"domain": domain, "item": range(len(scores)), "score": scores,
                         "details": [{}] * len(scores)})


def test_stage_changes_pair_items_and_pick_the_test_by_domain():
    from mdrl_lib.interference import stage_changes

    base = pd.concat([scored("math", [1, 1, 1, 1, 0, 0]), scored("cw", [0.2, 0.4, 0.6, 0.8, 1.0, 1.0])])
    after = pd.concat([scored("math", [1, 0, 0, 0, 0, 1]), scored("cw", [0.4, 0.4, 0.6, 0.8, 1.0, 1.0])])
    table = stage_changes({"base": base, "qa": after}, n_boot=500).set_index("domain")
    assert list(table["stage"]) == ["qa", "qa"]
    math = table.loc["math"]
    # b = 3 items lost, c = 1 gained: exact McNemar p = 2 * P(Binomial(4, 1/2) <= 1) = 2 * 5/16
    assert math["change"] == pytest.approx(-2 / 6) and math["p_value"] == pytest.approx(10 / 16)
    assert math["test"] == "mcnemar_exact" and math["ci_low"] < -2 / 6 < math["ci_high"]
    assert table.loc["cw", "test"] == "wilcoxon_signed_rank" and table.loc["cw", "change"] == pytest.approx(0.2 / 6)
    with pytest.raises(ValueError, match="different items"):
        stage_changes({"base": base, "qa": after.iloc[1:]})


def test_the_control_table_compares_each_control_with_its_start_and_with_the_real_chain():
    from mdrl_lib.interference import control_table

    after_stage = scored("math", [1] * 8 + [0] * 2)
    real = scored("math", [1] * 5 + [0] * 5)  # lost 3 of 8
    shuffled = scored("math", [1] * 8 + [0] * 2)  # unchanged
    same = scored("math", [1] * 10)  # gained 2
    table = control_table({"real chain": (after_stage, real), "shuffled rewards": (after_stage, shuffled),
                           "more of the same": (after_stage, same)}).set_index("control")
    assert table.loc["real chain", "change"] == pytest.approx(-0.3)
    assert table.loc["real chain", "p_value"] == pytest.approx(0.25)  # b = 3, c = 0: 2 * (1/2)^3
    assert pd.isna(table.loc["real chain", "minus_reference"])
    assert table.loc["shuffled rewards", "change"] == 0 and table.loc["shuffled rewards", "p_value"] == 1
    # the real chain's end minus each control's end, paired on the same items
    assert table.loc["shuffled rewards", "minus_reference"] == pytest.approx(-0.3)
    assert table.loc["more of the same", "minus_reference"] == pytest.approx(-0.5)
    assert table.loc["more of the same", "minus_reference_p"] == pytest.approx(2 * 0.5 ** 5)
    with pytest.raises(ValueError, match="reference"):
        control_table({"shuffled rewards": (after_stage, shuffled)})


def test_the_stage_breakdown_stacks_each_checkpoint():
    from mdrl_lib.interference import stage_breakdown

    table = stage_breakdown({"base": items("math", ["42", "(7)"], MATH[:2]), "math": items("math", ["42", "7"], MATH[:2])})
    assert list(table["stage"]) == ["base", "math"]
    assert table.set_index("stage").loc["base", "right content, wrong convention"] == 0.5
    assert table[list(CATEGORIES)].sum(axis=1).tolist() == [1.0, 1.0]


# ---- what notebook 04 builds ------------------------------------------------------------------------

def own_world(kit, **params):
    """Notebook 04's specs in the run's own world, from its recipe."""
    from mdrl_lib.recipes import nb04

    return nb04.planned_runs(kit, nb04.Params(run_dir=kit.config.run_dir, **params))[0][1]


def test_planned_specs_list_every_chain_and_control_once_with_parents_first(tmp_path):
    from mdrl_lib.interference import RandomDirections
    from mdrl_lib.specs import GroupSignal
    from mdrl_lib.recipes import nb04
    from mdrl_lib.specs import Base, Scores

    kit = Kit(RunConfig.from_params(run_dir=str(tmp_path), rl_steps=5))
    specs = own_world(kit, rl_seeds="0,1,2")
    assert specs == own_world(kit, order="code,math,qa,cw", rl_seeds="0,1,2", damaged_domain="math")
    assert own_world(kit) == own_world(kit, rl_seeds="0")  # one RL seed by default
    keys = [kit.key(s) for s in specs]  # computable without building anything
    assert len(set(keys)) == len(keys) == 37 and not list((tmp_path / "store").glob("stage-*"))
    training = [s for s in specs if isinstance(s, Stage)]
    scores = [s for s in specs if isinstance(s, Scores)]
    # the base first; last the precondition check's signal and the random-direction baseline
    assert specs[0] == Base() and specs[-2] == GroupSignal(Base()) and isinstance(specs[-1], RandomDirections)
    assert specs[-1].draws == 10 and specs[-1].start == kit.chain_specs(None, 0)[1]
    # 3 x 4 chain stages + 3 replicates x 2 replayed stages (no more-of-the-same stage unless asked for)
    assert len(training) == 18 and len(scores) == 16 and specs[1:19] == training
    position = {kit.key(s): i for i, s in enumerate(specs)}
    for spec in specs:
        assert all(position[kit.key(parent)] < position[kit.key(spec)] for parent in spec.inputs())
    for seed in (0, 1, 2):
        for stage in kit.chain_specs(None, seed):
            assert stage in training and Scores(stage) in scores
    controls = control_specs(kit, None, "math", rl_seed=0, more_of_the_same=False)
    assert all(Scores(spec) in scores for spec in controls.values())
    more = control_specs(kit, None, "math", rl_seed=0)["more of the same"]
    assert more not in training and Scores(more) not in scores
    asked = own_world(kit, rl_seeds="0,1,2", more_of_the_same=True)
    assert [s for s in asked if s not in specs] == [more, Scores(more)] and len(asked) == 39
    assert sum(s.reward == "replayed" for s in training) == 6 and Scores(Base()) in scores
    assert not any(s.reward in ("shuffled", "permuted") for s in training)
    one = own_world(kit, rl_seeds="3", damaged_domain="qa", order="code,math,qa,cw")
    assert len([s for s in one if isinstance(s, Stage)]) == 4 + 3 and len(one) == 1 + 7 + 8 + 2
    params = nb04.Params(run_dir=str(tmp_path), rl_seeds=3)
    assert nb04.chain_plan(kit, params).rl_seeds == (3,)
    runs = nb04.planned_runs(kit, nb04.Params(run_dir=str(tmp_path), rl_seeds="0", world_seeds="5",
                                              digit_free_control=True))
    assert [c.seed for c, _ in runs] == [0, 5, 0] and runs[2][0].data.digit_free
    assert runs[0][1] == own_world(kit, rl_seeds="0") and len(runs[1][1]) == 4 + 5
    planned = nb04.plan(kit, nb04.Params(run_dir=str(tmp_path), rl_seeds="0", world_seeds="5"))
    assert {extra for extra, _ in (p for p in planned if isinstance(p, tuple))} == {(("seed", 5),)}


@pytest.mark.parametrize("params, fragment", [
    ({"rl_seeds": ""}, "at least one RL seed"),
    ({"rl_seeds": "0,0"}, "more than once"),
    ({"rl_seeds": "a"}, "comma-separated integers"),
    ({"damaged_domain": "cw"}, "last stage"),
    ({"damaged_domain": "math", "order": "code,qa"}, "not in the order"),
    ({"damaged_domain": "bio"}, "valid choices"),
])
def test_planned_specs_reject_bad_parameters_by_name(tmp_path, params, fragment):
    from mdrl_lib.config import ConfigError
    from mdrl_lib.recipes import nb04

    with pytest.raises(ConfigError, match=fragment):
        nb04.Params(run_dir=str(tmp_path), **params)


def test_forgetting_measures_each_domain_from_its_own_stage_to_the_end():
    from mdrl_lib.interference import forgetting

    def checkpoint(math, code):
        return pd.concat([scored("math", math), scored("code", code)])

    stages = {"base": checkpoint([0, 0, 0, 0], [0, 0, 0, 0]),
              "code": checkpoint([0, 0, 1, 1], [1, 1, 1, 0.5]),
              "math": checkpoint([1, 1, 1, 1], [0.5, 1, 1, 0.5]),
              "qa": checkpoint([1, 0, 0, 1], [0.5, 0.5, 1, 0.5])}
    table = forgetting(stages, n_boot=200).set_index("domain")
    assert list(table.index) == ["code", "math"]
    assert table.loc["math", "before"] == 1 and table.loc["math", "change"] == pytest.approx(-0.5)
    assert table.loc["code", "change"] == pytest.approx((2.5 - 3.5) / 4) and table.loc["code", "test"] == "wilcoxon_signed_rank"
    with pytest.raises(ValueError, match="at least two stages"):
        forgetting({"base": stages["base"], "code": stages["code"]})
