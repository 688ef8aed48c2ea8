"""Notebook 03's ladder (mdrl_lib.ladder): the rungs' check inputs and premises, the side-by-side table, and the
regime each verdict carries."""
from __future__ import annotations


import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")

from mdrl_lib.claims import check_c5, check_c6_theory  # noqa: E402
from mdrl_lib.claims.record import REGIMES, ClaimCheck, ledger, record_check  # noqa: E402
from mdrl_lib.ladder import controlled_rung_inputs, ladder_table, ladder_text, quadratic_rung_inputs  # noqa: E402
from mdrl_lib.perturbation import steps_to_bound  # noqa: E402
from mdrl_lib.quadratic import make_quadratic_world  # noqa: E402


def test_steps_to_bound_is_the_fewest_steps_reaching_the_bound():
    assert steps_to_bound(0.1, 1.0, 0.5, 1000) == 7  # 0.9^6 = 0.531 > 0.5 >= 0.9^7 = 0.478
    assert 0.9 ** 7 <= 0.5 < 0.9 ** 6
    assert steps_to_bound(0.1, 0.0, 0.5, 123) == 123  # no contraction: the cap
    assert steps_to_bound(1.0, 1.0, 0.5, 10) == 1  # alpha mu = 1: one step reaches 0
    assert steps_to_bound(0.001, 1.0, 0.5, 50) == 50  # needs 693: capped
    with pytest.raises(ValueError, match="bound"):
        steps_to_bound(0.1, 1.0, 1.0, 10)


def test_the_quadratic_rung_holds_every_premise_and_the_rule_judges_it():
    world = make_quadratic_world(seed=3)
    c5_inputs, c6_inputs = quadratic_rung_inputs(world, draws=5, seed=3)
    c5, c6 = check_c5(**c5_inputs), check_c6_theory(**c6_inputs)
    assert c5.regime == c6.regime == "quadratic"
    assert all(p["holds"] for p in c5.premises + c6.premises)
    assert c5.figures["first_order"] == 0.0 and c5.figures["relative_error"] < 1e-9  # exact, measured
    assert c6.figures["bound_ratio"] <= 0.5 and c6.figures["steps"] == steps_to_bound(
        c6_inputs["alpha"], world.mu, 0.5, 10_000)
    assert c5.supported is True and c6.supported is True  # by construction: the rung is a test of the rule


def test_a_quadratic_world_off_its_minimum_fails_stationarity():
    world = make_quadratic_world(seed=0, residual=1.0)
    _, c6_inputs = quadratic_rung_inputs(world, draws=3)
    c6 = check_c6_theory(**c6_inputs)
    assert c6.verdict == "not testable here" and any("stationarity" in p["name"] for p in c6.failed_premises)


def _canned_controlled(leak=0.1, backflow=0.001, before_shift=0.01):
    """A controlled rung's measurements by hand: a damage of 0.2 off by 2.5% of the quadratic model."""
    before = [float(i % 7) for i in range(200)]
    after = [b - before_shift - 0.001 * ((i % 3) - 1) for i, b in enumerate(before)]
    return {"world": {"leak": leak, "seed": 0, "locality_target": 0.05, "gd_bound": 0.5, "b_steps": 8},
            "parameters": 240,
            "segment": {"t": [0.5, 1.0], "measured": [0.05, 0.2], "first_order": [0.0, 0.0],
                        "second_order": [0.0499, 0.195], "predicted": [0.0499, 0.195]},
            "along": [{"step": s, "measured": m, "predicted": m * 0.99, "L_A": 1 + m, "score": -1 - m}
                      for s, m in ((0, 0.0), (2, 0.05), (4, 0.1), (6, 0.15), (8, 0.2))],
            "b_rate": 0.001, "rank": 3,
            "shares": {"r": [1, 2, 3], "top": [0.5, 0.8, 0.95], "random_mean": [0.0] * 3, "random_max": [0.1] * 3},
            "coordinates_part": 0.99, "nonshared_parts": [0.01, 0.02], "grad_norm": 1e-10, "grad_s_norm": 1e-11,
            "h_delta_norm": 1.0, "mu": 1.0, "delta_s_norm": 0.5, "curvature_term": 0.05, "backflow": backflow,
            "lambda_max": 10.0, "before": before, "after": after,
            "refresh": {"alpha": 0.1, "steps": 7, "distance_s": [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.4]}}


def test_the_controlled_rung_s_premises_are_measured_not_assumed():
    c5_inputs, c6_inputs = controlled_rung_inputs(_canned_controlled())
    c5, c6 = check_c5(**c5_inputs), check_c6_theory(**c6_inputs)
    assert c5.regime == c6.regime == "controlled"
    names = {p["name"].split(":")[0] for p in c6.premises}
    assert {"stationarity (total)", "stationarity on S", "curvature on S", "weak back-flow", "damage"} <= names
    assert all(p["holds"] for p in c5.premises + c6.premises)
    assert c6.supported is True  # 0.4 <= 0.9^7
    coupled = check_c6_theory(**controlled_rung_inputs(_canned_controlled(backflow=0.02))[1])
    assert coupled.verdict == "not testable here" and "back-flow" in coupled.why
    undamaged = check_c5(**controlled_rung_inputs(_canned_controlled(before_shift=0.0))[0])
    assert undamaged.verdict == "not testable here" and "damage" in undamaged.why


def test_the_ladder_table_orders_the_rungs_and_counts_premises_once():
    world = make_quadratic_world(seed=0)
    q5, q6 = (f(**i) for f, i in zip((check_c5, check_c6_theory), quadratic_rung_inputs(world, draws=3)))
    c5, c6 = (f(**i) for f, i in zip((check_c5, check_c6_theory),
                                      controlled_rung_inputs(_canned_controlled(backflow=0.02))))
    table = ladder_table([c6, c5, q6, q5])  # any order in, ladder order out
    assert list(table["regime"]) == ["quadratic", "controlled"] and set(table["regime"]) <= set(REGIMES)
    assert table.loc[0, "premises held"] == "7/7" and table.loc[0, "failed premises"] == "none"
    assert table.loc[1, "failed premises"] == "weak back-flow" and table.loc[1, "C6 verdict"] == "not testable here"
    assert table.loc[1, "GD ratio"] == pytest.approx(0.4) and table.loc[1, "bound"] == pytest.approx(0.9 ** 7)
    text = ladder_text(table)
    assert text.splitlines()[0].startswith("[quadratic] premises 7/7;")
    assert "Both checks judged on: quadratic;" in text
    assert ladder_table([]).empty


def test_a_check_carries_its_regime_into_the_record_and_the_ledger(tmp_path):
    common = dict(claim="C5", name="x", statement="s", paper="p", measured="m", baseline="b", supported=True, why="w")
    assert ClaimCheck(**common, regime="controlled").label == "C5 x [controlled]"
    assert ClaimCheck(**common).label == "C5 x"
    with pytest.raises(ValueError, match="quadratic, controlled, local LM, default LM"):
        ClaimCheck(**common, regime="toy")
    record_check(tmp_path, ClaimCheck(**common, regime="local LM"))
    table = ledger(tmp_path)
    assert table.loc[table["check"] == "x", "regime"].item() == "local LM"
    assert isinstance(table, pd.DataFrame)


def test_the_ladder_figure_labels_each_rung_with_its_premises():
    from mdrl_lib.plots import plot_ladder

    world = make_quadratic_world(seed=0)
    checks = [f(**i) for f, i in zip((check_c5, check_c6_theory), quadratic_rung_inputs(world, draws=3))]
    checks += [f(**i) for f, i in zip((check_c5, check_c6_theory), controlled_rung_inputs(_canned_controlled()))]
    fig = plot_ladder(ladder_table(checks), tolerance=0.1)
    left, right = fig.axes
    assert [t.get_text() for t in left.get_xticklabels()] == ["quadratic\n(premises 7/7)", "controlled\n(premises 9/9)"]
    assert right.get_yscale() == "log" and left.get_ylabel() and right.get_ylabel() and left.get_title()
    heights = [p.get_height() for p in left.patches]
    assert heights[2] == pytest.approx(1.0)  # the quadratic world's second order is the whole damage


def test_regime_table_sets_a_claim_s_checks_in_ladder_order(tmp_path):
    from mdrl_lib.claims.record import regime_table

    common = dict(claim="C6", statement="s", paper="p", measured="m", baseline="b", supported=True, why="w")
    for name, regime in (("refresh", "default LM"), ("gd-default", "default LM"), ("gd-quadratic", "quadratic"),
                         ("gd-controlled", "controlled"), ("plain", "")):
        record_check(tmp_path, ClaimCheck(**common, name=name, regime=regime))
    record_check(tmp_path, ClaimCheck(**{**common, "claim": "C5"}, name="other", regime="quadratic"))
    table = regime_table(tmp_path, "C6")
    assert list(table["check"]) == ["gd-quadratic", "gd-controlled", "gd-default", "refresh", "plain"]
    assert list(table.columns) == ["check", "regime", "notebook", "verdict", "tested", "premises"]
    with pytest.raises(ValueError, match="valid claims"):
        regime_table(tmp_path, "C9")
