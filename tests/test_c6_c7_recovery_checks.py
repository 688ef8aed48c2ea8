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


def test_c7_needs_recovery_and_a_margin_over_every_control(tmp_path):
    controls = {"random": change(0.02, 0.005, 0.035), "magnitude": change(0.015, 0.001, 0.03)}
    good = check_c7(DROP, change(0.02, 0.005, 0.035), controls, pair=("math", "qa"), rule="first_order",
                    fraction=0.01, count=3350, others=OTHERS)
    assert good.supported is True and good.figures["recovered_share"] == pytest.approx(0.4)
    weak = check_c7(DROP, change(0.02, 0.005, 0.035), {**controls, "magnitude": change(0.01, -0.002, 0.02)},
                    pair=("math", "qa"), rule="first_order", fraction=0.01, count=3350)
    assert weak.supported is False and "over magnitude: not above" in weak.why
    none = check_c7(change(0.0, -0.02, 0.02), change(0.02, 0.005, 0.035), controls, pair=("math", "qa"),
                    rule="first_order", fraction=0.01, count=3350)
    assert none.supported is None
    with pytest.raises(ValueError, match="control"):
        check_c7(DROP, change(0.02, 0.005, 0.035), {}, pair=("math", "qa"), rule="first_order", fraction=0.01, count=1)
    for check in (good, weak):
        record_check(tmp_path, check, notebook="05_refresh_vs_rollback")
    table = ledger(tmp_path)
    assert table[table["claim"] == "C7"]["verdict"].tolist() == ["not supported"]  # one name: the rerun replaced it
