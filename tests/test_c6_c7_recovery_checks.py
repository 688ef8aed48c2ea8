"""C6 (the real refresh) and C7 (rollback) claim checks on hand-made paired changes."""
from __future__ import annotations

import pytest

from mdrl_lib.claims import C6_COLLATERAL, check_c6_refresh, check_c7, record_check, ledger


def change(diff, low, high):
    return {"diff": diff, "ci_low": low, "ci_high": high}


DROP = change(-0.05, -0.08, -0.02)
OTHERS = {"code": change(0.0, -0.02, 0.02), "qa": change(-0.01, -0.03, 0.01), "cw": change(0.005, -0.01, 0.02)}


def test_c6_is_supported_when_a_recovers_others_hold_and_the_refresh_beats_its_control():
    check = check_c6_refresh(DROP, change(0.04, 0.02, 0.06), OTHERS, change(0.03, 0.01, 0.05), domain="math", steps=150,
                             control_gain=change(0.01, -0.01, 0.03))
    assert check.supported is True and check.claim == "C6"
    assert check.figures["recovered_share"] == pytest.approx(0.8) and check.figures["worst_other"] == "qa"


@pytest.mark.parametrize("recovery, others, excess, part", [
    (change(0.04, -0.001, 0.06), OTHERS, change(0.03, 0.01, 0.05), "(a) recovery interval not above"),
    (change(0.04, 0.02, 0.06), {**OTHERS, "code": change(-C6_COLLATERAL - 0.001, -0.04, 0.0)},
     change(0.03, 0.01, 0.05), "worst other domain, code"),
    (change(0.04, 0.02, 0.06), OTHERS, change(0.01, -0.01, 0.03), "(c) excess over the control not above"),
])
def test_c6_fails_on_each_part_of_its_rule(recovery, others, excess, part):
    check = check_c6_refresh(DROP, recovery, others, excess, domain="math", steps=150)
    assert check.supported is False and part in check.why


def test_c6_is_not_testable_without_a_significant_drop():
    check = check_c6_refresh(change(-0.01, -0.03, 0.01), change(0.04, 0.02, 0.06), OTHERS, change(0.03, 0.01, 0.05),
                             domain="math", steps=150)
    assert check.supported is None and "nothing to recover" in check.why


CONTROLS = ("random", "magnitude", "random_size", "magnitude_size")
DAMAGE = {"diff": -0.05, "se": 0.01, "z": -5.0}
TRACKS = {"rank_correlation": 0.9, "sign_agreement": 0.8, "predicted_rank_correlation": -0.7}


def c7(recovery=change(0.02, 0.005, 0.035), controls=None, damage=DAMAGE, tracking=TRACKS, **extra):
    controls = controls or {c: change(0.015, 0.001, 0.03) for c in CONTROLS}
    return check_c7(DROP, damage, recovery, controls, pair=("math", "qa"), rule="first_order",
                    fractions=(0.001, 0.01, 0.1), k_range=(0.001, 0.1), tracking=tracking, **extra)


def test_c7_needs_recovery_over_k_and_a_margin_over_every_control_at_both_matchings(tmp_path):
    good = c7(others={"code": 0.0, "qa": 0.01, "cw": -0.01})
    assert good.supported is True and good.verdict == "supported" and good.tested == "mechanism"
    assert good.figures["recovered_share"] == pytest.approx(0.4) and good.figures["budgets"] == "0.001, 0.01, 0.1"
    assert [p["holds"] for p in good.premises] == [True, True]
    for control in CONTROLS:  # each of the four controls decides on its own
        controls = {c: change(0.015, 0.001, 0.03) for c in CONTROLS}
        controls[control] = change(0.01, -0.002, 0.02)
        weak = c7(controls=controls)
        assert weak.supported is False and "not above" in weak.why
    assert c7(recovery=change(0.02, -0.001, 0.04)).supported is False
    for check in (good, c7(recovery=change(0.02, -0.001, 0.04))):
        record_check(tmp_path, check, notebook="05_refresh_vs_rollback")
    table = ledger(tmp_path)
    assert table[table["claim"] == "C7"]["verdict"].tolist() == ["not supported"]  # one name: the rerun replaced it


@pytest.mark.parametrize("damage, tracking, failed", [
    ({"diff": -0.019, "se": 0.0078, "z": -2.44}, TRACKS, "damage"),      # B's stage cost A 2.4 SE < 3
    ({"diff": 0.01, "se": 0.01, "z": 1.0}, TRACKS, "damage"),            # B's stage raised A
    ({"diff": 0.0, "se": 0.0, "z": float("nan")}, TRACKS, "damage"),     # no change at all
    (DAMAGE, {**TRACKS, "rank_correlation": -0.7}, "objective valid"),  # L_A orders the budgets the wrong way
    (DAMAGE, {**TRACKS, "rank_correlation": None}, "objective valid"),  # too few points / constant
])
def test_c7_is_not_testable_when_a_premise_fails_and_keeps_the_rule_s_verdict(damage, tracking, failed):
    check = c7(damage=damage, tracking=tracking)
    assert check.supported is None and check.verdict == "not testable here"
    assert [p["name"].split(":")[0] for p in check.failed_premises] == [failed]
    assert check.figures["verdict_if_premises_held"] == "supported" and check.why.startswith("not testable here")


def test_the_c7_premise_functions_hold_and_fail_at_their_thresholds():
    from mdrl_lib.claims.nb05 import DAMAGE_MIN_SE, damage_premise, objective_premise

    assert damage_premise({"z": -DAMAGE_MIN_SE}, "CW's stage")["holds"] is True  # exactly at the threshold
    assert damage_premise({"z": -DAMAGE_MIN_SE + 0.01}, "CW's stage")["holds"] is False
    assert objective_premise({"rank_correlation": 0.5}, threshold=0.5)["holds"] is True
    assert objective_premise({"rank_correlation": 0.49}, threshold=0.5)["holds"] is False


def test_c7_records_its_caveats_and_magnitude_s_curve():
    curve = [{"fraction": 0.001, "recovery": 0.01, "over_magnitude": 0.005, "over_magnitude_size": 0.004},
             {"fraction": 0.01, "recovery": 0.02, "over_magnitude": 0.01, "over_magnitude_size": 0.01},
             {"fraction": 0.1, "recovery": -0.05, "over_magnitude": -0.1, "over_magnitude_size": 0.01}]
    check = c7(curve=curve, gradient_step={"change": change(-0.2, -0.22, -0.18), "loss_change": 1.7})
    f = check.figures
    assert f["magnitude_beats_rule_at"] == "0.1" and f["magnitude_size_beats_rule_at"] == "none"
    assert f["recovery_at_0.1"] == -0.05 and f["gradient_step_change"] == -0.2
    joined = " ".join(check.caveats)
    assert "one pair (math,qa)" in joined and "magnitude beats the rule at k = 0.1" in joined
    assert "rose by 1.700" in joined and "(rank correlation -0.70)" in joined
    from mdrl_lib.claims.nb05 import magnitude_text

    text = magnitude_text(check)
    assert text.startswith("Along k = 0.001, 0.01, 0.1, Math moved +0.010, +0.020, -0.050 under the first_order rule "
                           "and +0.005, +0.010, +0.050 under magnitude (equal count).")
    assert "beats the rule at k = 0.1 at equal count and at no budget at equal size of change" in text
    calm = c7(curve=[{**row, "over_magnitude": 0.01, "over_magnitude_size": 0.01} for row in curve])
    assert magnitude_text(calm).endswith("Magnitude beats the rule at no budget, at equal count or at equal size.")


def test_c6_records_its_premise_caveats_and_tests_the_outcome_only():
    good = dict(drop=DROP, recovery=change(0.04, 0.02, 0.06), others=OTHERS, excess=change(0.03, 0.01, 0.05),
                domain="math", steps=150)
    check = check_c6_refresh(**good, damage={"diff": -0.05, "se": 0.01, "z": -5.0},
                             constant=change(-0.017, -0.046, 0.012), subspace_distance=(0.0161, 0.0168),
                             tracking={"rank_correlation": 0.2, "sign_agreement": 1.0})
    assert check.supported is True and check.verdict == "supported (outcome only)" and check.tested == "outcome"
    joined = " ".join(check.caveats)
    assert "one domain (math)" in joined and "schedule dependence" in joined and "did not move back" in joined
    assert "L_A does not track" in joined
    calm = check_c6_refresh(**good, constant=change(0.05, 0.01, 0.09), subspace_distance=(0.02, 0.01),
                            tracking={"rank_correlation": 1.0})
    assert calm.caveats == ["one domain (math), one chain order and one RL seed"]
    weak = check_c6_refresh(**good, damage={"diff": -0.02, "se": 0.01, "z": -2.0})
    assert weak.supported is None and weak.failed_premises[0]["value"] == 2.0
    from mdrl_lib.claims.nb05 import PAPER_RECOVERED_SHARE

    assert PAPER_RECOVERED_SHARE == pytest.approx(8.38 / 8.83)  # 57.66 -> 66.04 of the drop from 66.49: 95%
