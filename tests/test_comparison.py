"""Recovery methods side by side (notebook 06): the alternating refresh's schedule, the comparison's
paired changes on hand-made per-item tables, the choice of settings on the selection half only, the Pareto
front, and the figure."""
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from mdrl_lib.comparison import (CHOICE_RULE, alternating_refresh, choose_settings, cycle_ends,  # noqa: E402
                                 cycle_split, method_changes, pareto_front, recovery_comparison, schedule_cost,
                                 schedule_table, summarize_changes)
from mdrl_lib.config import ConfigError, RLConfig  # noqa: E402
from mdrl_lib.pairs import half_items  # noqa: E402
from mdrl_lib.plots import plot_recovery_front  # noqa: E402
from mdrl_lib.specs import Base, Refresh, Stage  # noqa: E402

ORDER = ["code", "math", "qa", "cw"]
SEED = 0
ITEMS = list(range(20))
SELECTION = half_items(ITEMS, "selection", SEED)  # [2, 3, 4, 6, 8, 10, 11, 13, 16, 19]
REPORT = half_items(ITEMS, "report", SEED)  # [0, 1, 5, 7, 9, 12, 14, 15, 17, 18]
END = Stage(Stage(Stage(Stage(Base(), "code"), "math"), "qa"), "cw")


# ------------------------------------------------------------------------------------ alternating refresh

@pytest.mark.parametrize("total, cycles, share, first_steps, other_steps", [
    (150, 5, None, 12, 6),  # toy refresh budget, default share 2/(4+1): Math twice each other domain
    (150, 1, 0.5, 75, 25),
    (150, 25, 0.5, 3, 1),
    (20, 2, None, 4, 2),  # full-scale refresh budget
    (20, 5, 0.25, 1, 1),
    (24, 2, 0.5, 6, 2),
])
def test_alternating_schedule_adds_up_and_chains(total, cycles, share, first_steps, other_steps):
    schedule = alternating_refresh(END, ORDER, "math", total_steps=total, cycles=cycles, first_share=share)
    assert len(schedule) == 4 * cycles
    assert all(isinstance(s, Refresh) for s in schedule)
    assert sum(s.steps for s in schedule) == total
    assert schedule[0].parent == END
    assert all(b.parent == a for a, b in zip(schedule, schedule[1:]))
    assert [s.domain for s in schedule] == ["math", "code", "qa", "cw"] * cycles
    assert [s.steps for s in schedule] == [first_steps, other_steps, other_steps, other_steps] * cycles
    table = schedule_table(schedule)
    assert table["cumulative_steps"].iloc[-1] == total
    assert list(table["cycle"]) == [c for c in range(1, cycles + 1) for _ in range(4)]
    ends = cycle_ends(schedule)
    assert ends == schedule[3::4] and ends[-1] is schedule[-1]
    assert list(table.index[table["ends_cycle"]]) == list(range(3, 4 * cycles, 4))


def test_alternating_schedule_costs_what_the_single_refresh_costs():
    rl = RLConfig()
    schedule = alternating_refresh(END, ORDER, "math", total_steps=rl.refresh_steps, cycles=5)
    single = rl.refresh_steps * rl.prompts_per_step * rl.num_generations * 4  # sample 1 + train 3 passes each
    assert schedule_cost(schedule, rl) == single


def test_alternating_schedule_passes_overrides_and_keeps_other_domains_in_chain_order():
    schedule = alternating_refresh(END, ["qa", "cw", "math"], "math", total_steps=8, cycles=2, first_share=0.5,
                                   lr_schedule="constant", rl_seed=3)
    assert [s.domain for s in schedule] == ["math", "qa", "cw"] * 2
    assert [s.steps for s in schedule] == [2, 1, 1] * 2
    assert all(s.lr_schedule == "constant" and s.rl_seed == 3 for s in schedule)


def test_alternating_schedule_refuses_what_does_not_split_into_whole_steps():
    with pytest.raises(ConfigError, match=r"valid cycles for these steps and share: 1, 5, 25"):
        alternating_refresh(END, ORDER, "math", total_steps=150, cycles=3, first_share=0.5)
    with pytest.raises(ConfigError, match="none"):
        cycle_split(20, 1, 4, 0.5)  # 10 Math steps, 10 left for three domains
    with pytest.raises(ConfigError, match="valid: code, math"):
        alternating_refresh(END, ["code", "math"], "qa", total_steps=4, cycles=1)
    with pytest.raises(ConfigError, match="unknown domain"):
        alternating_refresh(END, ["code", "maths"], "code", total_steps=4, cycles=1)
    with pytest.raises(ConfigError, match="at least one other"):
        alternating_refresh(END, ["math"], "math", total_steps=4, cycles=1)
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        alternating_refresh(END, ORDER, "math", total_steps=8, cycles=1, first_share=1.0)
    with pytest.raises(ConfigError, match="set by the schedule"):
        alternating_refresh(END, ORDER, "math", total_steps=8, cycles=1, steps=3)


# ------------------------------------------------------------------------------------------- comparison

def items(math=None, code=0.5, qa=1.0, cw=0.3) -> pd.DataFrame:
    """A per-item table of 20 items per domain; each argument is a scalar or {item: score} over a default."""
    defaults = {"code": code, "math": math if math is not None else 0.0, "qa": qa, "cw": cw}
    rows = []
    for domain, value in defaults.items():
        base = {"code": 0.5, "math": 0.0, "qa": 1.0, "cw": 0.3}[domain]
        for item in ITEMS:
            score = value.get(item, base) if isinstance(value, dict) else value
            rows.append({"domain": domain, "item": item, "score": float(score)})
    return pd.DataFrame(rows)


REFERENCE = items()


def test_paired_changes_match_hand_computed_values_on_each_half():
    # Math: 4 report items and 1 selection item go 0 -> 1; Code: +0.2 on every item; QA: 2 report items 1 -> 0.
    method = items(math={0: 1, 1: 1, 5: 1, 7: 1, 2: 1}, code=0.7, qa={9: 0, 12: 0})
    changes = method_changes({"A": method}, REFERENCE, families={"A": "refresh"}, costs={"A": 100.0},
                             half_seed=SEED, n_boot=500)
    got = changes.set_index(["half", "domain"])
    assert got.loc[("report", "math"), "change"] == pytest.approx(0.4)
    assert got.loc[("selection", "math"), "change"] == pytest.approx(0.1)
    assert got.loc[("report", "code"), "change"] == pytest.approx(0.2)
    assert got.loc[("report", "qa"), "change"] == pytest.approx(-0.2)
    assert got.loc[("selection", "qa"), "change"] == pytest.approx(0.0)
    assert got.loc[("report", "cw"), "change"] == pytest.approx(0.0)
    assert (got["items"] == 10).all() and (got["cost"] == 100.0).all()
    assert got.loc[("report", "math"), "test"] == "mcnemar_exact"  # binary domain: McNemar
    assert got.loc[("report", "code"), "test"] == "wilcoxon_signed_rank"  # fractional domain
    assert got.loc[("report", "code"), "ci_low"] == pytest.approx(0.2)  # every difference is 0.2
    summary = summarize_changes(changes, "math").set_index("half")
    assert summary.loc["report", "damaged_change"] == pytest.approx(0.4)
    assert summary.loc["report", "others_mean"] == pytest.approx((0.2 - 0.2 + 0.0) / 3)
    assert summary.loc["selection", "others_mean"] == pytest.approx((0.2 + 0.0 + 0.0) / 3)


def test_setting_is_chosen_on_the_selection_half_and_reported_on_the_report_half():
    # "ties 0.2" gains 5 selection items on Math but loses... nothing: Math starts at 0, so give it a lower start on
    # the report half by raising the reference there. Reference Math: 1 on report items 0, 1, 5 (0 elsewhere).
    reference = items(math={0: 1, 1: 1, 5: 1})
    winner_on_selection = items(math={2: 1, 3: 1, 4: 1, 6: 1, 8: 1})  # +0.5 selection, -0.3 report
    better_on_report = items(math={2: 1, 3: 1, 0: 1, 1: 1, 5: 1, 7: 1, 9: 1, 12: 1, 14: 1})  # +0.2 sel, +0.4 rep
    methods = {"ties 0.2": winner_on_selection, "ties 0.8": better_on_report, "math expert": better_on_report,
               "alternating": reference}
    families = {"ties 0.2": "merge", "ties 0.8": "merge", "math expert": "expert", "alternating": "alternating"}
    costs = {"ties 0.2": 0.0, "ties 0.8": 0.0, "alternating": 4800.0}
    table = recovery_comparison(methods, reference, costs=costs, families=families, damaged="math",
                                half_seed=SEED, n_boot=500)
    assert list(table["method"]) == ["ties 0.2", "math expert", "alternating"]
    row = table.set_index("method").loc["ties 0.2"]
    assert row["selection_damaged"] == pytest.approx(0.5)
    assert row["damaged_change"] == pytest.approx(-0.3) and row["math_change"] == pytest.approx(-0.3)
    assert row["members"] == 2 and row["group"] == "merge" and row["items"] == 10
    assert math.isnan(table.set_index("method").loc["math expert", "cost"])
    assert table.attrs["rule"] == CHOICE_RULE and table.attrs["damaged"] == "math"
    assert set(table.attrs["changes"]["method"]) == set(methods)  # every member, both halves, kept for the record


def test_choice_breaks_ties_by_the_others_then_cost_and_respects_a_cost_cap():
    summary = pd.DataFrame([
        {"method": "k=0.01", "group": "rollback", "half": "selection", "damaged_change": 0.3, "others_mean": -0.1,
         "cost": 50.0},
        {"method": "k=0.1", "group": "rollback", "half": "selection", "damaged_change": 0.3, "others_mean": 0.0,
         "cost": 50.0},
        {"method": "k=1", "group": "rollback", "half": "selection", "damaged_change": 0.3, "others_mean": 0.0,
         "cost": 10.0},
        {"method": "k=1", "group": "rollback", "half": "report", "damaged_change": 0.9, "others_mean": 0.9,
         "cost": 10.0},
        {"method": "budget 150", "group": "refresh", "half": "selection", "damaged_change": 0.6, "others_mean": 0.0,
         "cost": 9600.0},
        {"method": "budget 20", "group": "refresh", "half": "selection", "damaged_change": 0.2, "others_mean": 0.0,
         "cost": 1280.0},
    ])
    assert choose_settings(summary) == {"rollback": "k=1", "refresh": "budget 150"}
    assert choose_settings(summary, max_cost=2000) == {"rollback": "k=1", "refresh": "budget 20"}
    with pytest.raises(ValueError, match="no member costs at most"):
        choose_settings(summary, max_cost=5)


def test_comparison_refuses_bad_input_naming_the_choices():
    with pytest.raises(ValueError, match="valid families: refresh, rollback, merge, stage_merge, alternating, expert"):
        recovery_comparison({"A": REFERENCE}, REFERENCE, costs={"A": 1.0}, families={"A": "merging"},
                            damaged="math")
    with pytest.raises(ValueError, match="no cost for"):
        recovery_comparison({"A": REFERENCE}, REFERENCE, costs={}, families={"A": "merge"}, damaged="math")
    with pytest.raises(ConfigError, match="valid domains"):
        recovery_comparison({"A": REFERENCE}, REFERENCE, costs={"A": 1.0}, families={"A": "merge"}, damaged="maths")
    fewer = REFERENCE[REFERENCE["item"] != 19]
    with pytest.raises(ValueError, match="method 'A'"):
        method_changes({"A": fewer}, REFERENCE, families={"A": "merge"}, half_seed=SEED, n_boot=100)


# ------------------------------------------------------------------------------------------- Pareto front

FRONT = pd.DataFrame([
    {"method": "A", "family": "refresh", "others_mean": 0.0, "damaged_change": 0.5, "cost": 10.0},
    {"method": "B", "family": "rollback", "others_mean": 0.1, "damaged_change": 0.3, "cost": 10.0},
    {"method": "C", "family": "merge", "others_mean": -0.1, "damaged_change": 0.2, "cost": 10.0},  # below A
    {"method": "D", "family": "merge", "others_mean": 0.2, "damaged_change": 0.1, "cost": 1.0},
    {"method": "E", "family": "alternating", "others_mean": 0.1, "damaged_change": 0.3, "cost": 20.0},  # B, dearer
    {"method": "F", "family": "refresh", "others_mean": -0.2, "damaged_change": 0.1, "cost": 0.5},  # cheapest
])


def test_pareto_front_on_a_hand_made_table():
    assert list(pareto_front(FRONT)["method"]) == ["A", "B", "D", "F"]
    # on the two changes alone, E ties B (both stay) and F is dominated by A
    assert list(pareto_front(FRONT, cost=None)["method"]) == ["A", "B", "D", "E"]
    # a row without a cost (a reference) is never on a front with cost, and dominates nothing there
    with_expert = pd.concat([FRONT, pd.DataFrame([{"method": "G", "family": "expert", "others_mean": 0.1,
                                                   "damaged_change": 0.6, "cost": float("nan")}])],
                            ignore_index=True)
    assert list(pareto_front(with_expert)["method"]) == ["A", "B", "D", "F"]
    assert list(pareto_front(with_expert, cost=None)["method"]) == ["D", "G"]  # on the changes, G beats A, B, E
    with pytest.raises(ValueError, match="no column 'gain'"):
        pareto_front(FRONT, y="gain")


# ------------------------------------------------------------------------------------------- the figure

def test_front_figure_has_labelled_axes_a_family_legend_and_every_point_named():
    table = FRONT.assign(on_front=FRONT["method"].isin(["A", "B", "D", "F"]))
    table.loc[len(table)] = {"method": "math expert", "family": "expert", "others_mean": -0.3,
                             "damaged_change": 0.7, "cost": float("nan"), "on_front": False}
    table.attrs["domains"] = ["code", "math", "qa", "cw"]
    ax = plot_recovery_front(table, "math")
    assert "Math score change" in ax.get_ylabel() and "report half" in ax.get_ylabel()
    assert "other 3 (Code, QA, CW)" in ax.get_xlabel() and "paired" in ax.get_xlabel()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"refresh", "rollback", "merge", "alternating", "expert"} <= set(legend)
    assert any("Pareto front" in t for t in legend)
    texts = [t.get_text() for t in ax.texts]
    key = next(t for t in texts if t.startswith("off the front:"))
    for method in table["method"]:  # on the front or a reference: named at the point; else numbered in the key
        named = any(t.startswith(method + "\n") for t in texts)
        numbered = any(line.split(": ", 1)[1].startswith(method + " (") for line in key.splitlines()[1:])
        assert named != numbered, method
        if numbered:
            number = next(line.split(":")[0] for line in key.splitlines()[1:] if line.split(": ", 1)[1].startswith(method))
            assert number in texts  # the number stands at the point
    assert any("no cost" in t for t in texts)
    front_line = next(line for line in ax.lines if line.get_linestyle() == "--")
    assert list(front_line.get_xdata()) == [-0.2, 0.0, 0.1, 0.2]  # front sorted along the x axis
    assert ax.get_title()
    plt.close("all")
