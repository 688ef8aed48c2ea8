"""Claim checks C3 and C4 (notebook 02) and the base's preconditions (notebook 00) on hand-made numbers."""
import numpy as np
import pandas as pd
import pytest

from mdrl_lib.claims import AblationContrast, ablation_contrasts, base_preconditions, check_c3, check_c4
from mdrl_lib.claims.nb02 import agreement, c3_pairs_table

MODULES_MIXED = {"model.layers.0.self_attn": [0.12, 0.09], "model.layers.0.mlp": [-0.15, -0.11],
                 "model.layers.1.mlp": [0.01, -0.01]}
FLOORS = {"model.layers.0.self_attn": 0.4, "model.layers.0.mlp": 0.5, "model.layers.1.mlp": 0.6}


# ---- C3 ---------------------------------------------------------------------------------------------

def test_c3_supported_when_orthogonal_with_a_reproducible_conflict_and_cooperation():
    check = check_c3(("math", "qa"), [0.01, -0.02], 0.6, MODULES_MIXED, FLOORS, cancellation=0.9)
    assert check.supported is True and check.claim == "C3" and check.name == "math-qa-gradients"
    assert check.figures["conflicting_modules"] == 1 and check.figures["cooperating_modules"] == 1
    assert check.figures["most_conflicting"] == "model.layers.0.mlp"
    assert check.figures["most_synergistic"] == "model.layers.0.self_attn"
    assert check.figures["most_conflicting_cosine"] == pytest.approx(-0.13)
    assert check.figures["global_cosine"] == pytest.approx(-0.005)
    assert "0.600" in check.baseline and "-0.130" in check.measured  # means over replicates are shown


def test_c3_not_supported_when_the_global_cosine_is_large_against_the_noise_floor():
    # 0.2 x 0.6 = 0.12: a global cosine of 0.15 on one replicate is not "near-orthogonal"
    check = check_c3(("math", "qa"), [0.05, 0.15], 0.6, MODULES_MIXED, FLOORS)
    assert check.supported is False and "> 0.2 x noise floor (0.120)" in check.why


def test_c3_bands_are_inclusive_and_scale_with_each_floor():
    modules, floors = {"a": [0.1], "b": [-0.1]}, {"a": 0.5, "b": 0.5}  # exactly 0.2 x each floor
    assert check_c3(("math", "qa"), [0.12], 0.6, modules, floors).supported is True
    higher = {"a": 0.75, "b": 0.5}  # a's band grows to 0.15: 0.1 is now orthogonal, not cooperation
    check = check_c3(("math", "qa"), [0.12], 0.6, modules, higher)
    assert check.supported is False and check.figures["cooperating_modules"] == 0


def test_c3_needs_the_module_sign_to_reproduce_on_every_replicate():
    flipping = {"a": [0.2, -0.2], "b": [-0.2, -0.15]}  # "a" cooperates on one replicate only
    check = check_c3(("math", "qa"), [0.0, 0.0], 0.6, flipping, {"a": 0.5, "b": 0.5})
    assert check.supported is False and check.figures["cooperating_modules"] == 0
    assert check.figures["conflicting_modules"] == 1


def test_c3_modules_with_a_low_floor_count_as_neither():
    modules = {"a": [0.05, 0.05], "b": [-0.2, -0.2]}
    check = check_c3(("math", "qa"), [0.0, 0.0], 0.6, modules, {"a": 0.1, "b": 0.5})  # a's own floor is noise
    assert check.supported is False and check.figures["testable_modules"] == 1
    assert check_c3(("math", "qa"), [0.0, 0.0], 0.6, modules, {"a": 0.1, "b": 0.5}, min_floor=0.05).supported


def test_c3_not_testable_when_batches_of_one_domain_barely_agree():
    check = check_c3(("math", "qa"), [0.0], 0.05, {"a": [0.05], "b": [-0.05]}, {"a": 0.1, "b": 0.1})
    assert check.supported is None and check.verdict == "not testable here" and "noise floor" in check.why


def test_c3_rejects_malformed_input():
    with pytest.raises(ValueError, match="one cosine per replicate"):
        check_c3(("math", "qa"), [0.0, 0.0], 0.6, {"a": [0.1]}, {"a": 0.5})
    with pytest.raises(ValueError, match="two domains"):
        check_c3(("math",), [0.0], 0.6, {"a": [0.1]}, {"a": 0.5})
    with pytest.raises(ValueError, match="empty"):
        check_c3(("math", "qa"), [], 0.6, {"a": []}, {"a": 0.5})
    with pytest.raises(ValueError, match="module_floors lacks"):
        check_c3(("math", "qa"), [0.0], 0.6, {"a": [0.1]}, {})


# ---- C4 ---------------------------------------------------------------------------------------------

def _overlaps(p_values, jaccards=None):
    pairs = [("code", "math"), ("code", "qa"), ("code", "cw"), ("math", "qa"), ("math", "cw"), ("qa", "cw")]
    jaccards = jaccards or [0.1] * len(pairs)
    return pd.DataFrame({"a": [a for a, _ in pairs], "b": [b for _, b in pairs], "shared": 5,
                         "jaccard": jaccards, "p_value": p_values})


HURT = [AblationContrast("code", -0.10, 0.00, -0.10, 1e-4), AblationContrast("math", -0.20, 0.01, -0.21, 1e-6)]


def test_c4_supported_when_most_pairs_share_above_chance_and_a_shared_route_is_used():
    table = _overlaps([1e-5, 0.01, 0.2, 0.03, 0.5, 0.04], jaccards=[0.2, 0.1, 0.05, 0.08, 0.03, 0.11])
    check = check_c4(table, chance=0.053, pair=("code", "math"), shared_channels=18, contrasts=HURT, q=0.1)
    assert check.supported is True and check.figures["pairs_above_chance"] == 4
    assert check.figures["mean_overlap"] == pytest.approx(0.095)
    assert check.figures["largest_pair"] == "code-math" and check.figures["largest_overlap"] == 0.2
    assert check.figures["math_p"] == 1e-6 and "2 of 2 domains" in check.why
    assert "code-math, code-qa, math-qa, qa-cw" in check.measured


def test_c4_half_the_pairs_is_enough_and_fewer_is_not():
    assert check_c4(_overlaps([0.01] * 3 + [0.5] * 3), 0.053, ("code", "math"), 18, HURT, q=0.1).supported is True
    check = check_c4(_overlaps([0.01] * 2 + [0.5] * 4), 0.053, ("code", "math"), 18, HURT, q=0.1)
    assert check.supported is False and "2 of 6 pairs above chance at p < 0.05, fewer than 50%" in check.why
    at_alpha = _overlaps([0.05] * 6)  # p must be below alpha, not equal to it
    assert check_c4(at_alpha, 0.053, ("code", "math"), 18, HURT, q=0.1).figures["pairs_above_chance"] == 0


def test_c4_not_supported_when_one_domain_is_not_hurt_more_than_by_random_channels():
    weak = [HURT[0], AblationContrast("math", -0.02, -0.01, -0.01, 0.3)]
    check = check_c4(_overlaps([0.001] * 6), 0.053, ("code", "math"), 18, weak, q=0.1)
    assert check.supported is False and "1 of 2 domains (code)" in check.why
    helped = [HURT[0], AblationContrast("math", 0.05, 0.0, 0.05, 1e-5)]  # significant, but a gain
    assert check_c4(_overlaps([0.001] * 6), 0.053, ("code", "math"), 18, helped, q=0.1).supported is False


def test_c4_not_testable_without_the_ablation_or_without_shared_channels():
    assert check_c4(_overlaps([0.001] * 6), 0.053, ("code", "math"), 18, None, q=0.1).supported is None
    check = check_c4(_overlaps([1.0] * 6), 0.053, ("code", "math"), 0, [], q=0.1)
    assert check.supported is None and "share no channel" in check.why


def test_c4_rejects_malformed_input():
    with pytest.raises(ValueError, match="math"):
        check_c4(_overlaps([0.2] * 6), 0.053, ("code", "math"), 18, HURT[:1], q=0.1)
    with pytest.raises(ValueError, match="chance"):
        check_c4(_overlaps([0.2] * 6), 0.0, ("code", "math"), 18, HURT, q=0.1)
    with pytest.raises(ValueError, match="lacks columns .'p_value'."):
        check_c4(_overlaps([0.2] * 6).drop(columns="p_value"), 0.053, ("code", "math"), 18, HURT, q=0.1)
    with pytest.raises(ValueError, match="non-empty"):
        check_c4(pd.DataFrame(), 0.053, ("code", "math"), 18, HURT, q=0.1)


def test_ablation_contrasts_pair_items_and_report_changes_against_the_unablated_model():
    rng = np.random.default_rng(0)
    n = 200
    unablated = rng.integers(0, 2, n).astype(float)
    shared = unablated.copy()
    shared[:60] = 0.0  # the shared set breaks the first 60 items
    control = unablated.copy()
    frames = [pd.DataFrame({"item": range(n), "domain": "math", "checkpoint": name, "score": scores})
              for name, scores in (("none", unablated), ("shared", shared), ("random", control))]
    cw = [pd.DataFrame({"item": range(n), "domain": "cw", "checkpoint": name, "score": np.full(n, 0.5)})
          for name in ("none", "shared", "random")]
    (math_row, cw_row) = ablation_contrasts(pd.concat(frames + cw), ablated="shared", control="random",
                                            unablated="none")
    broken = unablated[:60].mean() * 60 / n
    assert math_row.domain == "math" and math_row.change == pytest.approx(-broken)
    assert math_row.control_change == 0.0 and math_row.difference == pytest.approx(-broken)
    assert math_row.p_value < 1e-6
    assert cw_row.difference == 0.0 and cw_row.p_value == 1.0  # nothing changed: Wilcoxon on no differences


# ---- C3 and C4 in words ---------------------------------------------------------------------------

def test_agreement_says_which_part_of_each_claim_holds():
    c3 = check_c3(("math", "qa"), [0.01, -0.02], 0.6, MODULES_MIXED, FLOORS, cancellation=0.9)
    table = _overlaps([1e-5, 0.01, 0.2, 0.03, 0.5, 0.04], jaccards=[0.2, 0.1, 0.05, 0.08, 0.03, 0.11])
    weak = [HURT[0], AblationContrast("math", -0.02, -0.01, -0.01, 0.3)]
    c4 = check_c4(table, chance=0.053, pair=("code", "math"), shared_channels=18, contrasts=weak, q=0.1)
    lines = agreement(c3, c4).splitlines()
    assert lines[0].startswith("C3 (math vs qa), global part agrees: the global cosine is -0.0050, against a noise "
                               "floor of 0.600.")
    assert lines[1].startswith("C3, module part agrees: 1 module(s) conflict and 1 cooperate")
    assert "most conflicting module (model.layers.0.mlp) has cosine -0.1300 against its own floor 0.500" in lines[1]
    assert lines[2] == ("C4, sharing: 4 of 6 pairs share more answer-position channels than chance; the largest "
                        "overlap is code-math (0.200 against 0.053).")
    assert lines[3] == ("C4, use: ablating the 18 channels code-math share hurts 1 of its 2 domains more than random "
                        "channels (code).")
    large = check_c3(("qa", "cw"), [0.05, 0.15], 0.6, {"a": [0.0, 0.0]}, {"a": 0.5})
    untested = check_c4(table, chance=0.053, pair=("code", "math"), shared_channels=0, contrasts=None, q=0.1)
    lines = agreement(large, untested).splitlines()
    assert lines[0].startswith("C3 (qa vs cw), global part disagrees")
    assert "module part disagrees: 0 module(s)" in lines[1]
    assert len(lines) == 3  # C4's use part is not testable: no line for it
    noisy = check_c3(("math", "qa"), [0.0], 0.05, {"a": [0.05]}, {"a": 0.1})
    assert agreement(noisy, untested).splitlines()[0] == f"C3 (math vs qa): not testable on this run: {noisy.why}."


def test_c3_pairs_table_has_one_row_per_checked_pair():
    checks = [check_c3(("math", "qa"), [0.01, -0.02], 0.6, MODULES_MIXED, FLOORS),
              check_c3(("code", "cw"), [0.0], 0.05, {"a": [0.05]}, {"a": 0.1})]
    table = c3_pairs_table(checks)
    assert list(table.index) == ["math-qa", "code-cw"]
    assert list(table["verdict"]) == ["supported", "not testable here"]
    assert table.loc["math-qa", "conflicting / cooperating modules"] == "1 / 1"
    assert table.loc["math-qa", "global cosine"] == -0.005 and table.loc["code-cw", "noise floor"] == 0.05
    assert table.loc["code-cw", "why"] == checks[1].why


def test_base_preconditions_flag_a_base_that_did_not_learn_math():
    scores = pd.DataFrame({"domain": ["math", "qa"], "score": [0.5, 0.97]})
    good = pd.DataFrame({"domain": "math", "item": range(10), "score": 0.0,
                         "details": [{"right_number": i < 9} for i in range(10)]})
    table = base_preconditions(scores, {"math": 0.4, "qa": 0.0}, good).set_index("check")
    assert table.loc["math: held-out base score below 0.95", "holds"]
    assert not table.loc["qa: held-out base score below 0.95", "holds"]
    assert not table.loc["qa: some RL prompts give GRPO a signal (mixed groups)", "holds"]
    right = table.loc["math: held-out answers with the right number (box ignored)"]
    assert right["value"] == 0.9 and right["holds"]
    bad = good.assign(details=[{"right_number": i < 7} for i in range(10)])
    row = base_preconditions(scores, {}, bad).set_index("check").loc[
        "math: held-out answers with the right number (box ignored)"]
    assert row["value"] == 0.7 and not row["holds"]
