"""Notebook 05's verdicts in words (mdrl_lib.claims.nb05): each sentence follows the numbers it is given."""
from __future__ import annotations

import pandas as pd
import pytest

from mdrl_lib.claims import check_c6_refresh, check_c7
from mdrl_lib.claims.nb05 import agreement_text, drop_text, pair_drop_text, refresh_budget_text
from mdrl_lib.recipes.nb05 import CONTROL_CURVE, refresh_curve


def change(diff, low, high, before=0.8):
    return {"before": before, "after": before + diff, "diff": diff, "ci_low": low, "ci_high": high}


def test_the_drop_is_worth_recovering_only_when_significant():
    text = drop_text(change(-0.171, -0.198, -0.144, before=0.837), "math")
    assert text == ("Math: 0.837 -> 0.666, change -0.171 [-0.198, -0.144]: this is what the methods below try to "
                    "recover.")
    flat = drop_text(change(-0.01, -0.03, 0.01), "qa")
    assert flat.startswith("QA: 0.800 -> 0.790") and "not testable" in flat and "where QA's own stage" in flat


def summary(linear, constant=None, control=(-0.05, -0.04, -0.03)):
    table = {refresh_curve("linear"): linear, CONTROL_CURVE: list(control)}
    if constant is not None:
        table[refresh_curve("constant")] = constant
    return pd.DataFrame(table, index=pd.Index([10, 20, 50], name="steps"))


@pytest.mark.parametrize("linear, expected", [
    ([0.10, 0.19, 0.20], "Math gains most after 50 steps (+0.200); 20 steps already give 90% of that, so the "
                         "recovery saturates there."),
    ([0.01, 0.05, 0.20], "Math gains most after 50 steps (+0.200), and no smaller budget gives 90% of that: the "
                         "recovery has not saturated within the budgets tried."),
    ([-0.01, 0.0, -0.02], "At the decaying rate no budget raised Math."),
])
def test_the_refresh_budget_text_says_where_the_gain_saturates(linear, expected):
    lines = refresh_budget_text(summary(linear), "math", 0.837).splitlines()
    assert expected in lines[0] and len(lines) == 2  # no constant-rate line without that curve
    assert lines[1] == "The same steps from θ_A*: 10 steps -0.050, 20 steps -0.040, 50 steps -0.030 (from 0.837)."
    with_constant = refresh_budget_text(summary(linear, constant=[0.02, 0.03, 0.04]), "math", 0.837).splitlines()
    assert with_constant[1] == "At a constant rate: 10 steps +0.020, 20 steps +0.030, 50 steps +0.040."


def test_the_pair_drops_one_line_each():
    drops = {"math,cw": pd.DataFrame([{"domain": "code", **change(0.0, -0.1, 0.1)},
                                      {"domain": "math", **change(-0.131, -0.157, -0.105, before=0.797)}])}
    assert pair_drop_text(drops) == ("Math from before CW's stage to the chain's end: 0.797 -> 0.666 (-0.131 [-0.157, "
                                     "-0.105])")


def checks(control_high, constant=None):
    drop, others = change(-0.2, -0.25, -0.15), {"code": change(-0.01, -0.03, 0.01), "qa": change(0.02, 0.0, 0.04)}
    c6 = check_c6_refresh(drop, change(0.15, 0.1, 0.2), others, change(0.2, 0.1, 0.3), domain="math", steps=150,
                          control_gain=change(-0.05, -0.08, control_high), constant=constant)
    controls = {"random": change(0.03, 0.01, 0.05), "magnitude": change(0.01, -0.01, 0.03),
                "random_size": change(0.02, 0.01, 0.03), "magnitude_size": change(0.005, -0.01, 0.02)}
    c7 = check_c7(drop, {"diff": -0.2, "se": 0.02, "z": -10.0}, change(0.03, 0.01, 0.05), controls,
                  pair=("math", "qa"), rule="first_order", fractions=(0.01, 0.1), k_range=(0.001, 0.1),
                  tracking={"rank_correlation": 0.9, "predicted_rank_correlation": -0.7},
                  curve=[{"fraction": 0.01, "recovery": 0.04, "over_magnitude": 0.02, "over_magnitude_size": 0.01},
                         {"fraction": 0.1, "recovery": 0.02, "over_magnitude": -0.01, "over_magnitude_size": 0.0}],
                  gradient_step={"change": change(-0.1, -0.12, -0.08), "loss_change": 0.5})
    return c6, c7


def distances(end, after):
    return pd.DataFrame({"curve": [refresh_curve("linear")] * 2 + [CONTROL_CURVE], "steps": [0, 150, 0],
                         "subspace": [end, after, 0.0]})


def test_the_agreement_text_follows_the_checks_and_the_distances():
    c6, c7 = checks(control_high=-0.01, constant={**change(-0.02, -0.05, 0.01), "steps": 50, "linear": 0.07})
    lines = agreement_text(c6, [c7], distances(0.02, 0.01)).splitlines()
    assert lines[0].startswith("C6 (supported (outcome only)): Math moved -0.200 from θ_A* to the chain's end; the "
                               "150-step refresh moved it +0.150 (75% of the drop; the paper's refresh took Math from "
                               "57.66 to 66.04, 95% of its 8.83-point drop from 66.49)")
    assert "the worst other domain (code) moved -0.010" in lines[0] and "more than the whole drop" not in lines[0]
    assert lines[1] == ("At a constant rate 50 steps moved Math by -0.020 (the decaying rate's 50 steps: +0.070): "
                        "without the decay the refresh does not recover, so the verdict holds for the decaying schedule "
                        "only.")
    assert lines[2] == ("Distance to θ_A* on S over the linear refresh: 0.0200 at the chain's end -> 0.0100 after 150 "
                        "steps: the refresh moved back towards θ_A* on the conflict subspace.")
    assert lines[3].startswith("More Math training from θ_A* itself lowered Math (-0.050")
    assert lines[4] == ("C7 math,qa (not supported): over k = 0.01, 0.1, the first_order rollback moved Math by +0.030 "
                        "on average (15% of a drop of 0.200); ahead of random +0.030 and magnitude +0.010 at equal "
                        "count, of random +0.020 and magnitude +0.005 at equal size.")
    assert lines[5].startswith("  premise damage: QA's stage lowered A") and lines[5].endswith("10.00 (threshold 3.0) holds.")
    assert "rank correlation -0.70 against Math's change; the measured fall +0.90" in lines[7]
    assert lines[8].endswith("L_A rose by 0.500: the step overshoots; L_A rises as the score falls, as a valid proxy's "
                             "would.")
    assert "Magnitude beats the rule at k = 0.1 at equal count and at no budget at equal size" in lines[9]
    c6, c7 = checks(control_high=0.02)
    lines = agreement_text(c6, [c7], distances(0.02, 0.03)).splitlines()
    assert "did not move back towards θ_A*" in lines[1] and lines[2].startswith("C7 math,qa")
