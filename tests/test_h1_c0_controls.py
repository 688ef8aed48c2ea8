"""C0's within-group control, its premises, the random-direction baseline and GRPO's diagnostics (notebook 04),
on hand-made inputs: nothing is trained."""
from __future__ import annotations

import random
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from mdrl_lib.claims.nb04 import (check_c0_specificity, distance_premise, own_domains_premise, preconditions_premise,
                                  replicates_premise, zero_advantage_premise)
from mdrl_lib.claims.rules import rule
from mdrl_lib.interference import (RandomDirections, diagnostics_means, random_direction_changes,
                                   random_direction_row, random_displacement, run_diagnostics, stage_diagnostics)
from mdrl_lib.training import DIAGNOSTICS, GRPOLog, overridden_reward, permute_within_groups


# ---- the within-group permutation ------------------------------------------------------------------------

def zero_advantage_share(rewards, size):
    groups = [rewards[i:i + size] for i in range(0, len(rewards), size)]
    return sum(len(set(g)) == 1 for g in groups) / len(groups)


def test_the_within_group_permutation_keeps_each_groups_multiset_and_so_its_zero_advantage_share():
    rng = random.Random(0)
    rewards = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.2, 0.5, 0.5, 0.9]
    prompts = [p for p in "abcd" for _ in range(4)]
    for trial in range(20):
        out = permute_within_groups(rewards, 4, rng, prompts)
        for g in range(4):
            assert sorted(out[4 * g:4 * g + 4]) == sorted(rewards[4 * g:4 * g + 4])
        assert zero_advantage_share(out, 4) == zero_advantage_share(rewards, 4) == 0.5
    # the order within a group does change (over draws), unlike a control that keeps the rewards as they are
    assert any(permute_within_groups(rewards, 4, random.Random(s))[:4] != rewards[:4] for s in range(10))


def test_the_within_group_permutation_refuses_groups_that_do_not_fit():
    with pytest.raises(ValueError, match="groups of 4"):
        permute_within_groups([1.0] * 6, 4, random.Random(0))
    with pytest.raises(ValueError, match="do not share one prompt"):
        permute_within_groups([1.0, 0.0, 1.0, 0.0], 2, random.Random(0), ["a", "b", "b", "b"])


def test_the_permuted_reward_mode_asks_the_verifier_and_is_seeded_per_call():
    def verifier(prompts=None, completions=None, **_):
        return [float(c == "right") for c in completions]

    completions = ["right", "x", "y", "z", "right", "right", "w", "v"]
    prompts = ["p"] * 4 + ["q"] * 4
    a = overridden_reward(verifier, "permuted", seed=5, num_generations=4)
    first = a(prompts=prompts, completions=completions)
    assert sorted(first[:4]) == [0.0, 0.0, 0.0, 1.0] and sorted(first[4:]) == [0.0, 0.0, 1.0, 1.0]
    assert overridden_reward(verifier, "permuted", seed=5, num_generations=4)(prompts=prompts,
                                                                            completions=completions) == first
    with pytest.raises(ValueError, match="needs num_generations"):
        overridden_reward(verifier, "permuted", seed=5)
    with pytest.raises(ValueError, match="verifier, replayed, permuted, shuffled, random"):
        overridden_reward(verifier, "batch", seed=5)


# ---- GRPO's diagnostics, stored with a stage ---------------------------------------------------------------

def test_a_logs_diagnostics_go_to_its_metrics_only_when_recorded():
    old = GRPOLog([0.5], [], 1, 1.0)
    assert "diagnostics" not in old.to_metrics()
    new = GRPOLog([0.5, 0.6], [], 2, 1.0, diagnostics={"zero_advantage_share": [0.25, 1 / 3], "loss": [None, 0.1]})
    assert new.to_metrics()["diagnostics"] == {"zero_advantage_share": [0.25, 0.333333], "loss": [None, 0.1]}


def fake_kit(metrics_by_spec):
    return SimpleNamespace(get=lambda spec: SimpleNamespace(metrics=metrics_by_spec[spec]))


def test_diagnostics_are_read_per_stage_and_a_stage_built_before_them_is_not_recorded():
    from mdrl_lib.specs import Base, Stage

    after = Stage(Base(), "math")
    qa, cw = Stage(after, "qa"), Stage(Stage(after, "qa"), "cw")
    old_qa, old_cw = Stage(after, "qa", rl_seed=1), Stage(Stage(after, "qa", rl_seed=1), "cw", rl_seed=1)
    recorded = {name: [0.5, 0.7] for name in DIAGNOSTICS}
    kit = fake_kit({qa: {"log": {"diagnostics": recorded}}, cw: {"log": {"diagnostics": {**recorded,
                                                                                          "zero_advantage_share": [0.1, 0.3]}}},
                    old_qa: {"log": {"rewards": [0.5]}}, old_cw: {"log": {"diagnostics": recorded}}})
    assert stage_diagnostics(kit, old_qa) is None
    assert stage_diagnostics(kit, qa)["step"].tolist() == [1, 2]
    table = run_diagnostics(kit, {"real": cw, "old": old_cw}, after)
    real = table[table["run"] == "real"]
    assert real["step"].tolist() == [1, 2, 3, 4] and real["stage"].tolist() == ["qa", "qa", "cw", "cw"]
    means = diagnostics_means(table)
    assert means.loc["real", "zero_advantage_share"] == pytest.approx((0.5 + 0.7 + 0.1 + 0.3) / 4)
    assert bool(means.loc["old", "recorded"]) is False and means.loc["old", "zero_advantage_share"] != \
        means.loc["old", "zero_advantage_share"]  # NaN: a mean over part of a run is not the run's


# ---- each premise holds on one case and fails on another ------------------------------------------------------

def test_the_zero_advantage_premise_compares_the_shares_step_by_step():
    tolerance = rule("C0", "zero_advantage_tolerance")
    real = [0.50, 0.25, 0.75]
    matched = zero_advantage_premise(real, [real, list(real), [0.50, 0.25, 0.75 + tolerance / 2]])
    assert matched["holds"] is True and matched["value"] == pytest.approx(tolerance / 2)
    failed = zero_advantage_premise(real, [real, [0.50, 0.25 + tolerance + 0.01, 0.75]])
    assert failed["holds"] is False and failed["value"] == pytest.approx(tolerance + 0.01)
    # equal means are not enough: a control off by +0.2 then -0.2 fails though its mean is the real one
    swings = zero_advantage_premise([0.5, 0.5], [[0.7, 0.3]])
    assert swings["holds"] is False and swings["value"] == pytest.approx(0.2)
    not_recorded = zero_advantage_premise(None, [real] * 3)
    assert not_recorded["holds"] is False and not_recorded["value"] == "not recorded"
    assert zero_advantage_premise(real, [real, None])["holds"] is False
    assert zero_advantage_premise(real, [real[:2]])["value"] == "not recorded"  # other step counts: no comparison


def test_the_distance_premise():
    low, high = rule("C0", "distance_ratio_band")
    assert distance_premise(2.0, [2.0 * low, 2.0, 2.0 * high])["holds"] is True
    short = distance_premise(2.0, [2.0, 2.0 * low * 0.9])
    assert short["holds"] is False and short["value"] == pytest.approx(low * 0.9)
    assert distance_premise(2.0, [2.0 * high * 1.1])["holds"] is False
    assert distance_premise(0.0, [1.0])["holds"] is False


def test_the_own_domains_premise():
    floor = rule("C0", "own_domain_floor")
    kept = pd.DataFrame({"control": ["a", "a"], "domain": ["qa", "cw"], "before": [0.6, 0.4], "after": [0.5, 0.4]})
    assert own_domains_premise(kept)["holds"] is True
    collapsed = kept.assign(after=[0.03, 0.4])
    assert own_domains_premise(collapsed)["holds"] is False
    assert own_domains_premise(collapsed)["value"] == pytest.approx(0.05) and 0.05 < floor
    with pytest.raises(ValueError, match="lacks columns"):
        own_domains_premise(kept.drop(columns="before"))


def test_the_replicates_and_preconditions_premises():
    minimum = rule("C0", "min_control_replicates")
    assert replicates_premise(minimum)["holds"] is True and replicates_premise(minimum - 1)["holds"] is False
    assert preconditions_premise(True)["holds"] is True and preconditions_premise(False)["holds"] is False


# ---- C0(b) on hand-made inputs ---------------------------------------------------------------------------

def specificity(diffs=(-0.1, -0.08, -0.12), mean=(-0.1, 0.002), zero=([0.5, 0.5], [[0.51, 0.5], [0.49, 0.5],
                                                                                    [0.5, 0.5]]),
                distance=(1.5, [1.4, 1.5, 1.6]), kept=(0.55, 0.38), preconditions=True):
    versus = pd.DataFrame({"control": [f"replayed rewards (seed {i})" for i in range(len(diffs))], "diff": diffs,
                           "ci_low": [d - 0.05 for d in diffs], "ci_high": [d + 0.05 for d in diffs],
                           "p_value": [0.01] * len(diffs)})
    own = pd.DataFrame({"control": ["c", "c"], "domain": ["qa", "cw"], "before": [0.6, 0.4], "after": list(kept)})
    return check_c0_specificity(versus, {"diff": mean[0], "ci_low": mean[0] - 0.05, "ci_high": mean[0] + 0.05,
                                         "p_value": mean[1]},
                                zero_advantage={"real": zero[0], "controls": zero[1]},
                                distance={"real": distance[0], "controls": distance[1]}, own_domains=own,
                                preconditions_hold=preconditions, random_changes=[-0.003, 0.001],
                                same_domain_change=0.02)


def test_c0_specificity_supported_when_the_real_end_is_below_the_controls_mean_and_each_replicate():
    check = specificity()
    assert check.verdict == "supported" and check.tested == "mechanism" and check.name == "math-fall-beyond-neutral-rl"
    f = check.figures
    assert f["zero_advantage_share_real"] == 0.5 and f["zero_advantage_share_control"] == pytest.approx(0.5)
    assert f["distance_real"] == 1.5 and f["distance_control"] == pytest.approx(1.5)
    assert f["random_draws"] == 2 and f["random_change_min"] == -0.003 and f["control_replicates"] == 3
    assert all(p["holds"] for p in check.premises) and len(check.premises) == 5


def test_c0_specificity_not_supported_when_the_mean_is_not_significant_or_one_replicate_did_as_much():
    assert specificity(mean=(-0.02, 0.3)).verdict == "not supported"
    one_above = specificity(diffs=(-0.1, 0.01, -0.12))
    assert one_above.verdict == "not supported" and "not below every replicate" in one_above.why


@pytest.mark.parametrize("change, premise_name", [
    ({"zero": ([0.5, 0.5], [[0.5, 0.7]] * 3)}, "zero-advantage share"),
    ({"zero": (None, [[0.5, 0.5]] * 3)}, "zero-advantage share"),
    ({"distance": (1.5, [0.5, 0.6, 0.7])}, "distance moved"),
    ({"kept": (0.02, 0.01)}, "own domains"),
    ({"diffs": (-0.1, -0.1)}, "control replicates"),
    ({"preconditions": False}, "preconditions"),
])
def test_c0_specificity_not_testable_when_a_premise_fails(change, premise_name):
    check = specificity(**change)
    assert check.verdict == "not testable here" and check.figures["verdict_if_premises_held"] == "supported"
    assert [p["name"] for p in check.failed_premises][0].find(premise_name) >= 0


# ---- the random-direction baseline -----------------------------------------------------------------------

def test_a_random_displacement_has_exactly_the_requested_norm():
    shapes = {"a": (3, 4), "b": (5,), "c": (2, 2, 2), "zero": (3,)}
    norms = {"a": 0.7, "b": 2.5, "c": 1e-3, "zero": 0.0}
    step = random_displacement(norms, shapes, torch.Generator().manual_seed(0), "per_tensor")
    for name in shapes:
        assert tuple(step[name].shape) == shapes[name]
        assert float(step[name].double().norm()) == pytest.approx(norms[name], rel=1e-6, abs=1e-9)
    whole = random_displacement(norms, shapes, torch.Generator().manual_seed(0), "global")
    total = sum(float((t.double() ** 2).sum()) for t in whole.values()) ** 0.5
    assert total == pytest.approx(sum(v ** 2 for v in norms.values()) ** 0.5, rel=1e-6)
    again = random_displacement(norms, shapes, torch.Generator().manual_seed(0), "per_tensor")
    other = random_displacement(norms, shapes, torch.Generator().manual_seed(1), "per_tensor")
    assert torch.equal(again["a"], step["a"]) and not torch.equal(other["a"], step["a"])
    with pytest.raises(ValueError, match="per_tensor, global"):
        random_displacement(norms, shapes, torch.Generator(), "layer")


def test_the_random_directions_spec_validates_and_keys_its_draws(tmp_path):
    from mdrl_lib.config import ConfigError, RunConfig
    from mdrl_lib.kit import Kit
    from mdrl_lib.specs import Base, Stage

    kit = Kit(RunConfig.from_params(run_dir=str(tmp_path)))
    start, end = Stage(Base(), "math"), Stage(Stage(Base(), "math"), "qa")
    spec = RandomDirections(start, end)
    assert spec.inputs() == (start, end) and spec.matching == "per_tensor" and spec.draws == 10
    assert kit.key(spec) != kit.key(RandomDirections(start, end, draws=11))
    assert kit.key(spec) == kit.key(RandomDirections(start, end, "Math"))
    with pytest.raises(ConfigError, match="per_tensor, global"):
        RandomDirections(start, end, matching="layer")


def scored(scores):
    return pd.DataFrame({"domain": "math", "item": range(len(scores)), "score": [float(s) for s in scores]})


def test_random_direction_changes_and_row_on_hand_made_draws():
    start = scored([1, 1, 1, 1, 0])
    draws = pd.concat([scored([1, 1, 1, 0, 0]).assign(draw=0), scored([1, 1, 1, 1, 1]).assign(draw=1),
                       scored([1, 1, 0, 0, 0]).assign(draw=2)])
    changes = random_direction_changes(start, draws, "math")
    assert changes["change"].tolist() == pytest.approx([-0.2, 0.2, -0.4])
    real_end = scored([0, 0, 1, 1, 0])
    row = random_direction_row(start, draws, real_end, "math", n_boot=200)
    assert row["change"] == pytest.approx(-2 / 15) and row["draws"] == 3  # mean of the draws' changes
    assert (row["change_min"], row["change_max"]) == pytest.approx((-0.4, 0.2))
    assert row["minus_reference"] == pytest.approx(0.4 - (0.8 - 2 / 15)) and row["test"] != "mcnemar"
    with pytest.raises(ValueError, match="other math items"):
        random_direction_changes(start.iloc[:4], draws, "math")
