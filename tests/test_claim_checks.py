"""Claim checks C3 and C4 (notebook 02) and the base's preconditions (notebook 00) on hand-made numbers."""
import numpy as np
import pandas as pd
import pytest

from mdrl_lib.claims import AblationContrast, ablation_contrasts, base_preconditions, check_c3, check_c4
from mdrl_lib.claims.nb02 import activation_premises, agreement, c3_pairs_table, threshold_margin

MODULES_MIXED = {"model.layers.0.self_attn": [0.12, 0.09, 0.10], "model.layers.0.mlp": [-0.15, -0.11, -0.12],
                 "model.layers.1.mlp": [0.01, -0.01, 0.0], "embeddings": [0.2, 0.1, 0.15]}
FLOORS = {"model.layers.0.self_attn": 0.4, "model.layers.0.mlp": 0.5, "model.layers.1.mlp": 0.6, "embeddings": 0.7}
BANDS = {m: 0.05 for m in MODULES_MIXED}  # the null's bands: |mean cosine| beyond 0.05 is beyond chance
BANDS["embeddings"] = 0.3  # a module with a wide null


def c3(global_cosines=(0.01, -0.02, 0.0), floor=0.6, modules=None, floors=None, bands=None, **kw):
    modules = MODULES_MIXED if modules is None else modules
    return check_c3(("math", "qa"), list(global_cosines), floor, modules, FLOORS if floors is None else floors,
                    module_bands=BANDS if bands is None else bands, **kw)


# ---- C3 ---------------------------------------------------------------------------------------------

def test_c3_supported_when_orthogonal_with_a_module_beyond_the_null_on_each_side():
    check = c3(cancellation=0.9, module_p={m: 0.01 for m in MODULES_MIXED}, null_draws=1000,
               global_without_embeddings=[0.0, -0.01, 0.01], embedding_contribution=0.001)
    assert check.supported is True and check.name == "math-qa-gradients" and check.tested == "mechanism"
    assert check.figures["conflicting"] == "model.layers.0.mlp" and check.figures["cooperating"] == \
        "model.layers.0.self_attn"
    # the embeddings' +0.15 keeps its sign but stays inside its own wide band: within chance
    assert check.figures["sign_reproduces_within_chance"] == "embeddings"
    assert [p["holds"] for p in check.premises] == [True, True]
    assert check.figures["global_cosine_without_embeddings"] == pytest.approx(0.0)
    assert any("rests on one conflicting module (model.layers.0.mlp" in c for c in check.caveats)


def test_c3_a_module_must_pass_its_band_and_keep_its_sign_on_every_replicate():
    assert c3(bands={m: 0.13 for m in MODULES_MIXED}).supported is False  # -0.127 and +0.103: inside 0.13
    flipping = {**MODULES_MIXED, "model.layers.0.mlp": [-0.3, -0.2, 0.01]}  # large mean, sign flips once
    check = c3(modules=flipping)
    assert check.supported is False and check.figures["conflicting_modules"] == 0


def test_c3_not_supported_when_the_global_cosine_is_large_against_the_noise_floor():
    check = c3(global_cosines=(0.05, 0.15, 0.1))  # 0.15 > 0.2 x 0.6
    assert check.supported is False and "> 0.2 x noise floor (0.120)" in check.why


def test_c3_modules_with_a_low_floor_count_as_neither():
    check = c3(floors={**FLOORS, "model.layers.0.mlp": 0.1})
    assert check.supported is False and check.figures["testable_modules"] == 3
    assert c3(floors={**FLOORS, "model.layers.0.mlp": 0.1}, min_floor=0.05).supported is True


def test_c3_premises_a_low_noise_floor_or_too_few_replicates_make_it_not_testable():
    check = c3(floor=0.05)
    assert check.supported is None and check.verdict == "not testable here"
    assert "noise floor" in check.why and "FAILS" in check.why
    two = {m: v[:2] for m, v in MODULES_MIXED.items()}
    check = check_c3(("math", "qa"), [0.01, -0.02], 0.6, two, FLOORS, module_bands=BANDS)
    assert check.supported is None and check.failed_premises[0]["name"].startswith("batch replicates")
    assert check.figures["verdict_if_premises_held"] == "supported"


def test_c3_after_a_stage_is_its_own_record_and_the_embeddings_caveat_appears_when_they_carry_the_cosine():
    check = c3(where="math", global_cosines=(0.03, 0.03, 0.03), global_without_embeddings=[0.0, 0.0, 0.0],
               embedding_contribution=0.028)
    assert check.name == "math-qa-gradients-after-math" and "at the math expert" in check.measured
    assert any(c.startswith("the embeddings carry +0.028 of the global cosine +0.030") for c in check.caveats)


def test_c3_rejects_malformed_input():
    with pytest.raises(ValueError, match="one cosine per replicate"):
        check_c3(("math", "qa"), [0.0, 0.0], 0.6, {"a": [0.1]}, {"a": 0.5}, module_bands={"a": 0.1})
    with pytest.raises(ValueError, match="two domains"):
        check_c3(("math",), [0.0], 0.6, {"a": [0.1]}, {"a": 0.5}, module_bands={"a": 0.1})
    with pytest.raises(ValueError, match="empty"):
        check_c3(("math", "qa"), [], 0.6, {"a": []}, {"a": 0.5}, module_bands={"a": 0.1})
    with pytest.raises(ValueError, match="module_floors lacks"):
        check_c3(("math", "qa"), [0.0], 0.6, {"a": [0.1]}, {}, module_bands={"a": 0.1})
    with pytest.raises(ValueError, match="module_bands lacks"):
        check_c3(("math", "qa"), [0.0], 0.6, {"a": [0.1]}, {"a": 0.5}, module_bands={})


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


def test_c4_reports_its_margin_and_a_caveat_within_one_pair_of_the_threshold():
    at = check_c4(_overlaps([0.01] * 3 + [0.5] * 3), 0.053, ("code", "math"), 18, HURT, q=0.1)
    assert at.figures["pairs_needed"] == 3 and at.figures["overlap_margin"] == 0 and "margin +0" in at.why
    assert any("one pair fewer would fail it" in c for c in at.caveats)
    below = check_c4(_overlaps([0.01] * 2 + [0.5] * 4), 0.053, ("code", "math"), 18, HURT, q=0.1)
    assert below.figures["overlap_margin"] == -1 and any("one pair more would pass it" in c for c in below.caveats)
    clear = check_c4(_overlaps([0.01] * 5 + [0.5]), 0.053, ("code", "math"), 18, HURT, q=0.1)
    assert clear.figures["overlap_margin"] == 2 and clear.caveats == []


def test_threshold_margin_is_the_pairs_above_minus_the_pairs_needed():
    assert threshold_margin(3, 6, 0.5) == (3, 0) and threshold_margin(2, 6, 0.5) == (3, -1)
    assert threshold_margin(4, 7, 0.5) == (4, 0)  # half of 7 rounds up
    with pytest.raises(ValueError, match="count"):
        threshold_margin(7, 6, 0.5)


def test_activation_premises_hold_for_matched_controls_and_fail_for_unmatched_or_too_few():
    held = activation_premises({"code": [1.05, 0.98] * 5, "math": [0.95] * 10})
    assert all(p["holds"] for p in held) and held[-1]["value"] == 10
    failed = activation_premises({"code": [1.0] * 10, "math": [0.58] * 10})
    assert [p["holds"] for p in failed] == [True, False, True] and failed[1]["value"] == 0.58
    few = activation_premises({"code": [1.0] * 5})
    assert few[-1]["holds"] is False


def test_c4_an_unmatched_control_makes_it_not_testable_only_where_the_verdict_rests_on_it():
    table = _overlaps([0.001] * 6)
    unmatched = {"code": [1.0] * 10, "math": [0.58] * 10}
    check = check_c4(table, 0.053, ("code", "math"), 18, HURT, q=0.1, activation_ratios=unmatched)
    assert check.supported is None and "activation match (math)" in check.why  # both hurt: rests on math
    code_not_hurt = [AblationContrast("code", -0.03, -0.23, 0.2, 1e-20), HURT[1]]
    check = check_c4(table, 0.053, ("code", "math"), 18, code_not_hurt, q=0.1, activation_ratios=unmatched)
    assert check.supported is False and all(p["holds"] for p in check.premises)
    assert any(c.startswith("activation match (math)") and "code, whose control matches" in c for c in check.caveats)
    assert "activation-matched" in check.baseline and "mean of 10" in check.baseline


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
    check3 = c3(cancellation=0.9, global_without_embeddings=[0.0, 0.0, 0.0], embedding_contribution=0.001)
    table = _overlaps([1e-5, 0.01, 0.2, 0.03, 0.5, 0.04], jaccards=[0.2, 0.1, 0.05, 0.08, 0.03, 0.11])
    weak = [HURT[0], AblationContrast("math", -0.02, -0.01, -0.01, 0.3)]
    c4 = check_c4(table, chance=0.053, pair=("code", "math"), shared_channels=18, contrasts=weak, q=0.1)
    lines = agreement(check3, c4).splitlines()
    assert lines[0].startswith("C3 (math vs qa, at the base), global part agrees: the global cosine is -0.0033 "
                               "against a noise floor of 0.600; without the embeddings it is +0.0000")
    assert lines[1].startswith("C3, module part agrees: over 3 replicates, 1 module(s) conflict (model.layers.0.mlp)")
    assert "(model.layers.0.mlp) has cosine -0.1267 against a chance band of ±0.0500" in lines[1]
    assert lines[2].startswith("  Kept their sign on every replicate but within chance: embeddings.")
    assert "probability 0.25" in lines[2]
    assert lines[3] == ("C4, sharing: 4 of 6 pairs share more answer-position channels than chance (3 needed: margin "
                        "+1); the largest overlap is code-math (0.200 against 0.053).")
    assert lines[4] == ("C4, use: ablating the 18 channels code-math share hurts 1 of its 2 domains more than the "
                        "control does (code).")
    large = c3(global_cosines=(0.05, 0.15, 0.1), modules={"a": [0.0] * 3}, floors={"a": 0.5}, bands={"a": 0.1})
    untested = check_c4(table, chance=0.053, pair=("code", "math"), shared_channels=0, contrasts=None, q=0.1)
    lines = agreement(large, untested).splitlines()
    assert lines[0].startswith("C3 (math vs qa, at the base), global part disagrees")
    assert "module part disagrees: over 3 replicates, 0 module(s)" in lines[1]
    assert len(lines) == 3  # C4's use part is not testable: no line for it
    noisy = c3(floor=0.05)
    after = c3(where="math", floor=0.05)
    lines = agreement(noisy, untested, after).splitlines()
    assert lines[0] == f"C3 (math vs qa, at the base): not testable on this run: {noisy.why.removeprefix('not testable here: ')}."
    assert lines[1].startswith("C3 (math vs qa, at the math expert): not testable")


def test_c3_pairs_table_has_one_row_per_checked_pair():
    checks = [c3(), check_c3(("code", "cw"), [0.0] * 3, 0.05, {"a": [0.05] * 3}, {"a": 0.1}, module_bands={"a": 0.1})]
    table = c3_pairs_table(checks)
    assert list(table.index) == ["math-qa", "code-cw"]
    assert list(table["verdict"]) == ["supported", "not testable here"]
    assert table.loc["math-qa", "conflicting / cooperating modules"] == "1 / 1"
    assert table.loc["math-qa", "global cosine"] == pytest.approx(-0.0033, abs=1e-4)
    assert table.loc["code-cw", "noise floor"] == 0.05 and table.loc["code-cw", "why"] == checks[1].why


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
