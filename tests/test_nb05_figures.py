"""Notebook 05's figures (mdrl_lib.plots.plot_*): the panels, and the reference lines where the numbers say."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from mdrl_lib import plots  # noqa: E402
from mdrl_lib.domains.base import DOMAIN_NAMES  # noqa: E402


@pytest.fixture
def figure(monkeypatch):
    """The figure a plot function shows (plt.show kept from closing it)."""
    shown = []
    monkeypatch.setattr(plt, "show", lambda: shown.append(plt.gcf()))
    yield shown
    plt.close("all")


def horizontal_lines(ax):
    return [line.get_ydata()[0] for line in ax.get_lines() if len(set(line.get_ydata())) == 1
            and line.get_linestyle() == "--"]


def curve_rows(curves, x, values):
    return pd.DataFrame([{"curve": c, "domain": d, x: v, "diff": 0.01 * v, "ci_low": 0.0, "ci_high": 0.02 * v}
                         for c in curves for d in DOMAIN_NAMES for v in values])


def test_the_refresh_figure_marks_the_drop_to_recover(figure):
    linear = "refresh from the chain's end (linear rate)"
    plots.plot_refresh_curves(curve_rows([linear, "control"], "steps", [0, 10, 50]), "math", -0.171, linear)
    axes = figure[0].axes
    assert len(axes) == 2 and horizontal_lines(axes[0]) == [pytest.approx(0.171)]
    assert {t.get_text() for t in axes[1].get_legend().get_texts()} == {"Code", "QA", "CW"}


def test_the_distance_figure_has_one_panel_per_distance(figure):
    distance = pd.DataFrame([{"curve": c, "steps": s, "overall": 1.0 + s, "routes": 0.5, "subspace": 0.1}
                             for c in ("a", "b") for s in (0, 10)])
    plots.plot_distances(distance)
    axes = figure[0].axes
    assert [ax.get_title() for ax in axes] == list(plots.DISTANCE_PANELS.values())
    assert [len(ax.get_lines()) for ax in axes] == [2, 2, 2]


def test_the_rollback_figure_has_a_row_per_pair_and_the_drop_in_a(figure):
    rows = []
    for pair in ("math,qa", "math,cw"):
        rows.append(curve_rows(["first_order", "random", "revert_stage"], "fraction", [0.01, 0.1])
                    .rename(columns={"curve": "rule"}).assign(pair=pair))
    drops = {p: pd.DataFrame([{"domain": "math", "diff": d}]) for p, d in (("math,qa", -0.2), ("math,cw", -0.1))}
    plots.plot_rollback_curves(pd.concat(rows), drops, [("math", "qa"), ("math", "cw")])
    axes = figure[0].axes
    assert len(axes) == 8 and axes[0].get_title() == "math,qa: Math (recovery)"
    assert horizontal_lines(axes[0]) == [pytest.approx(0.2)] and horizontal_lines(axes[4]) == [pytest.approx(0.1)]
    assert len(axes[0].get_lines()) == 2 + 1 + 1  # two rules (revert_stage left out), zero line, drop line
    assert horizontal_lines(axes[1]) == []


def test_the_cost_figure_draws_weight_only_rollbacks_as_dotted_lines(figure):
    costs = pd.DataFrame({"cost": [2560, 5120, 1024, 0, 0], "A change": [0.01, 0.03, 0.08, 0.002, 0.02]},
                         index=["refresh 10 steps (linear)", "refresh 20 steps (constant)",
                                "rollback first_order (k = 0.01)", "rollback random (k = 0.01)",
                                "rollback magnitude (k = 0.01)"])
    plots.plot_costs(costs, "math", 0.01)
    ax = figure[0].axes[0]
    dotted = [line.get_ydata()[0] for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert dotted == [0.002, 0.02] and ax.get_xscale() == "log"
    assert ax.get_title() == "Math recovered against cost (dotted: weight-only rollbacks)"


def test_the_c7_figure_shows_the_rule_and_both_controls_at_both_matchings(figure):
    rows = [{"pair": "math,cw", "rule": rule, "fraction": k, "domain": "math", "diff": 0.01, "ci_low": 0.0,
             "ci_high": 0.02} for rule in ("first_order", "random", "magnitude", "random_size", "magnitude_size",
                                           "gradient_step") for k in (0.001, 0.01, 0.1)]
    plots.plot_c7_k_curves(pd.DataFrame(rows), "math,cw", "math", (0.001, 0.1))
    axes = figure[0].axes
    assert len(axes) == 2 and all(ax.get_xscale() == "log" for ax in axes)
    for ax, matching in zip(axes, ("equal count", "equal size of change")):
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels[:3] == ["first-order rule", "random (mean of the draws)", "magnitude"]
        assert matching in ax.get_title() and ax.get_xlabel().startswith("rollback budget k")
        assert "gradient_step" not in labels


def test_the_objective_figure_plots_each_rule_and_the_refresh(figure):
    rollback = pd.DataFrame([{"rule": r, "fraction": k, "loss_change": -k, "score_change": k,
                              "predicted_change": (-2 * k if r == "first_order" else None)}
                             for r in ("first_order", "magnitude") for k in (0.01, 0.1)])
    refresh = pd.DataFrame({"steps": [0, 10], "loss_change": [0.0, -0.05], "score_change": [0.0, 0.02]})
    plots.plot_objective_tracking(rollback, refresh, "math", "math,cw")
    left, right = figure[0].axes
    assert [t.get_text() for t in left.get_legend().get_texts()] == [
        "rollback: first_order", "rollback: magnitude", "linear refresh (0 = chain end)"]
    assert [t.get_text() for t in right.get_legend().get_texts()] == ["first_order", "measured = predicted"]
    assert "L_A" in left.get_xlabel() and "Math" in left.get_ylabel()
