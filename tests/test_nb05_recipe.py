"""Notebook 05's recipe functions (mdrl_lib.recipes.nb05) on hand-made per-item scores: the plan holds the cached
analyses, and the tables and the C6/C7 inputs are the paired changes a hand count gives."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from mdrl_lib.claims import check_c6_refresh, check_c7
from mdrl_lib.config import RunConfig
from mdrl_lib.domains.base import DOMAIN_NAMES
from mdrl_lib.kit import Kit
from mdrl_lib.recipes import nb05 as recipe
from mdrl_lib.recovery import refresh_step_cost, rollback_cost, sweep_changes

PAIRS = {"rollback_pair": "math,qa", "second_rollback_pair": "math,cw",  # the settings these tests were written for
         "refresh_budgets": "10,20,50"}

ITEMS = 20
FIRST_ORDER = [0.6, 0.7, 0.8, 0.85, 0.9]  # Math after the first-order rollback at each default budget


def scores(math_level: float, others: float = 0.5) -> pd.DataFrame:
    """Per-item 0/1 scores: the first ``level`` share of each domain's items right (Math at ``math_level``)."""
    rows = []
    for domain in DOMAIN_NAMES:
        level = math_level if domain == "math" else others
        rows += [{"domain": domain, "item": i, "score": float(i < round(level * ITEMS))} for i in range(ITEMS)]
    return pd.DataFrame(rows)


class StubKit:
    """A kit that serves hand-made tables for a plan's specs (keys from a real kit; nothing is built)."""

    def __init__(self, kit, plan):
        self.kit, self.config = kit, kit.config
        models = [plan.chain_end, *plan.refreshes.values(), *plan.controls.values()]
        self.weight_values = {kit.key(plan.post_a): 0.0, **{kit.key(s): float(i + 1) for i, s in enumerate(models)}}
        levels = {plan.post_a: 0.9, plan.chain_end: 0.5, plan.before("cw"): 0.7, plan.equal_cost: 0.55}
        linear = {7: 0.55, 10: 0.6, 20: 0.7, 50: 0.75}
        levels.update({spec: linear[steps] + (0.05 if schedule == "constant" else 0.0)
                       for (schedule, steps), spec in plan.refreshes.items()})
        levels.update({spec: 0.85 for spec in plan.controls.values()})
        self.tables = {kit.key(spec): scores(level) for spec, level in levels.items()}
        # Math under each rollback: the first-order rule rises with k (0.6 ... 0.9), the others stay flat
        rule_level = {"magnitude": 0.6, "magnitude_size": 0.7}
        self.sweeps, self.budgets, self.along = {}, {}, {}
        for (pair, rule), spec in plan.rollbacks.items():
            fractions = (1.0,) if rule == "revert_stage" else spec.fractions
            levels = FIRST_ORDER if rule == "first_order" else [rule_level.get(rule, 0.5)] * len(fractions)
            table = pd.concat([scores(level).assign(fraction=f) for f, level in zip(fractions, levels)],
                              ignore_index=True)
            self.sweeps[kit.key(spec)] = table[table["domain"].isin(spec.domains or DOMAIN_NAMES)]
            self.budgets[kit.key(spec)] = [{"fraction": f, "count": round(f * 1000), "chosen": round(f * 1000),
                                            "norm": f, "predicted_change": -f} for f in fractions]
        # L_A: 1.0 at every model, falling by 0.1 per budget along each rollback, whose first-order prediction
        # says it rises (+0.1 per budget): the measured fall tracks the first-order rule's scores, the prediction not
        for spec in [*plan.objective_along.values(), plan.refresh_objective]:
            rows = [{"source": "model", "model": m.label(), "loss": 1.0 - 0.01 * i} for i, m in enumerate(spec.models)]
            rows += [{"source": "rollback", "rule": s.rule, "fraction": f, "model": s.label(), "loss": 1.0 - 0.1 * i,
                      "norm": f, "predicted_change": 0.1 * i if s.rule in ("first_order", "gradient_step") else None}
                     for s in spec.sweeps for i, f in enumerate(s.fractions)]
            self.along[kit.key(spec)] = pd.DataFrame(rows)

    def key(self, spec):
        return self.kit.key(spec)

    def item_results(self, spec):
        return self.tables[self.key(spec)]

    def open(self, spec):
        if spec.kind == "objective_along":
            return self.along[self.key(spec)]
        if spec.kind == "rollback_changes":
            return sweep_changes(recipe.items(self, spec.baseline), self.open(spec.sweep), n_boot=spec.n_boot,
                                 seed=spec.seed)
        return self.sweeps[self.key(spec)].assign(rule=spec.rule)

    def get(self, spec):
        return SimpleNamespace(metrics={"budgets": self.budgets.get(self.key(spec))})

    def weights(self, spec):
        yield "w", torch.full((4,), self.weight_values[self.key(spec)])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    kit = Kit(RunConfig.from_params(run_dir=str(tmp_path_factory.mktemp("nb05-recipe")), rl_steps=3,
                                    rl_refresh_steps=7))
    plan = recipe.recovery_plan(kit, recipe.Params(run_dir=kit.config.run_dir, **PAIRS))
    return StubKit(kit, plan), plan


def test_the_plan_holds_the_subspace_and_each_sweeps_changes(setup):
    stub, plan = setup
    kit = stub.kit
    assert plan.changes.keys() == plan.rollbacks.keys()
    for key, changes in plan.changes.items():
        assert kit.key(changes.sweep) == kit.key(plan.rollbacks[key])
        assert kit.key(changes.baseline) == kit.key(plan.chain_end)
    assert (plan.subspace.domain_a, plan.subspace.domain_b) == ("math", "qa")  # A and the main pair's B
    assert kit.key(plan.subspace.model) == kit.key(plan.post_a) and kit.key(plan.subspace.objective) == kit.key(
        plan.objective)
    keys = [kit.key(s) for s in plan.specs()]
    assert kit.key(plan.subspace) in keys and all(kit.key(s) in keys for s in plan.changes.values())
    other = recipe.recovery_plan(kit, recipe.Params(run_dir=kit.config.run_dir, distance_subspace_rank=4, **PAIRS))
    assert kit.key(other.subspace) != kit.key(plan.subspace)
    fewer = recipe.recovery_plan(kit, recipe.Params(run_dir=kit.config.run_dir, rollback_fractions="0.01", **PAIRS))
    assert kit.key(fewer.subspace) == kit.key(plan.subspace)  # the budgets are not the subspace's input


def test_the_c6_inputs_are_the_hand_counted_changes(setup):
    stub, plan = setup
    inputs = recipe.c6_inputs(stub, plan, distance=pd.DataFrame(
        {"curve": [recipe.refresh_curve("linear")] * 2, "steps": [0, 7], "subspace": [0.02, 0.01]}))
    assert inputs["drop"]["diff"] == pytest.approx(0.5 - 0.9)
    assert inputs["recovery"]["diff"] == pytest.approx(0.05)  # the 7-step linear refresh: 0.55
    assert set(inputs["others"]) == {"code", "qa", "cw"} and all(v["diff"] == 0 for v in inputs["others"].values())
    assert inputs["control_gain"]["diff"] == pytest.approx(-0.05)
    assert inputs["excess"]["diff"] == pytest.approx(inputs["recovery"]["diff"] - inputs["control_gain"]["diff"])
    assert (inputs["domain"], inputs["steps"], inputs["name"]) == ("math", 7, "refresh-math")
    # the constant rate at the largest given budget (50 steps: 0.8) against the decaying rate's 50 steps (0.75)
    assert inputs["constant"]["diff"] == pytest.approx(0.3) and inputs["constant"]["steps"] == 50
    assert inputs["constant"]["linear"] == pytest.approx(0.25)
    assert inputs["subspace_distance"] == (0.02, 0.01)
    # 18 of 20 right at theta_A*, 10 at the chain's end: 8 items lost, d = -1 on 8 and 0 on 12
    se = math.sqrt((8 * 0.6 ** 2 + 12 * 0.4 ** 2) / 19) / math.sqrt(20)
    assert inputs["damage"]["z"] == pytest.approx(-0.4 / se)
    # L_A falls from the chain's end (0.99) along the linear refresh (0.98, 0.97, ...) as Math rises: rank 1
    assert inputs["tracking"]["rank_correlation"] == pytest.approx(1.0)
    check = check_c6_refresh(**inputs)
    assert check.figures["recovery"] == inputs["recovery"]["diff"] and check.tested == "outcome"
    assert check.premises[0]["holds"] and check.verdict == "not supported"  # +0.05 on 20 items: not significant


@pytest.mark.parametrize("pair", [("math", "qa"), ("math", "cw")])
def test_the_c7_inputs_average_the_whole_k_curve(setup, pair):
    stub, plan = setup
    inputs = recipe.c7_inputs(stub, plan, pair)
    assert inputs["fractions"] == plan.fractions  # the default grid lies inside the rules file's k range
    mean = sum(FIRST_ORDER) / len(FIRST_ORDER)
    assert inputs["recovery"]["diff"] == pytest.approx(mean - 0.5)  # mean over k, against the chain end's 0.5
    over = {c: v["diff"] for c, v in inputs["over_controls"].items()}
    assert over == pytest.approx({"random": mean - 0.5, "magnitude": mean - 0.6, "random_size": mean - 0.5,
                                  "magnitude_size": mean - 0.7})
    assert [row["recovery"] for row in inputs["curve"]] == pytest.approx([v - 0.5 for v in FIRST_ORDER])
    # both pairs: B's stage takes Math 0.2 down (0.9 -> 0.7 for QA, 0.7 -> 0.5 for CW), 4 of 20 items
    se = math.sqrt((4 * 0.8 ** 2 + 16 * 0.2 ** 2) / 19) / math.sqrt(20)
    assert inputs["damage"]["z"] == pytest.approx(-0.2 / se)
    assert inputs["tracking"]["rank_correlation"] == pytest.approx(1.0)  # measured L_A falls as Math rises
    assert inputs["tracking"]["predicted_rank_correlation"] == pytest.approx(-1.0)  # the prediction says it rises
    assert inputs["gradient_step"]["change"]["diff"] == pytest.approx(0.0)
    assert inputs["gradient_step"]["loss_change"] == pytest.approx(-0.2)  # mean of 0, -0.1, ..., -0.4
    check = check_c7(**inputs)
    assert check.verdict == "not testable here" and [p["name"].split(":")[0] for p in check.failed_premises] == [
        "damage"]  # 2.2 standard errors < 3
    assert check.figures["verdict_if_premises_held"] == "not supported"  # magnitude_size's margin: interval reaches 0


def test_a_chosen_pair_is_judged_on_the_report_half_only(setup):
    import dataclasses

    from mdrl_lib.pairs import half_items

    stub, plan = setup
    chosen = dataclasses.replace(plan, chosen=("math,qa",))
    inputs = recipe.c7_inputs(stub, chosen, ("math", "qa"))
    assert inputs["items_half"] == "report" and recipe.c7_inputs(stub, plan, ("math", "qa"))["items_half"] == "all"
    report = half_items(range(20), "report")
    assert inputs["damage"]["n"] == len(report) == 10 and inputs["recovery"]["n"] == 10
    assert "judged on the other half only" in " ".join(check_c7(**inputs).caveats)

def test_the_refresh_tables(setup):
    stub, plan = setup
    drop = recipe.chain_drop(stub, plan)
    curves = recipe.refresh_curves(stub, plan)
    # linear and control at every budget, constant at the largest given one; budget 0 of each curve too
    assert len(curves) == len(DOMAIN_NAMES) * (2 * len(plan.budgets) + 1 + 3)
    summary = recipe.refresh_summary(curves, plan, drop)
    linear = summary[recipe.refresh_curve("linear")]
    assert list(summary.index) == list(plan.budgets)
    assert linear.loc[50] == pytest.approx(0.25) and summary.loc[50, recipe.SHARE_COLUMN] == pytest.approx(0.25 / 0.4)
    assert summary[recipe.CONTROL_CURVE].tolist() == pytest.approx([-0.05] * len(plan.budgets))


def test_the_cost_table_prices_each_method(setup):
    stub, plan = setup
    curves = recipe.refresh_curves(stub, plan)
    costs = recipe.cost_table(stub, plan, curves, recipe.rollback_curves(stub, plan))
    step = refresh_step_cost(stub.config.rl)
    assert costs.loc["refresh 20 steps (linear)", "cost"] == 20 * step
    assert costs.loc["refresh 50 steps (constant)", "A change"] == pytest.approx(0.3)
    assert "refresh 20 steps (constant)" not in costs.index and not costs.index.str.contains("_size").any()
    assert costs.loc["rollback first_order (k = 0.01)", "cost"] == rollback_cost("first_order", objective_sequences=256)
    assert costs.loc["rollback first_order (k = 0.01)", "A change"] == pytest.approx(0.3)
    assert costs.loc["rollback revert_stage (k = 1)", "cost"] == 0
    equal = f"refresh {plan.equal_cost_steps} steps (linear, the first-order rollback's cost)"
    assert costs.loc[equal, "A change"] == pytest.approx(0.05)
    assert (costs["cost in refresh steps"] * step).tolist() == pytest.approx(costs["cost"].tolist())


def test_the_paper_table_and_the_rollback_tables(setup):
    stub, plan = setup
    table = recipe.paper_table(stub, plan)
    assert table.loc["chain end", "Math"] == 0.5 and table.loc["θ_A* (after the Math stage)", "Math"] == 0.9
    assert table.loc["rollback math,qa first_order (best k = 0.1)", "Math"] == 0.9
    assert table.loc["rollback math,qa magnitude (best k = 0.001)", "Math"] == 0.6  # ties: the smallest budget
    assert not table.index.str.contains("random").any()  # A-only controls stay out of the all-domain table
    assert "rollback math,cw revert_stage" in table.index
    assert table["average"].tolist() == pytest.approx(table[["Code", "Math", "QA", "CW"]].mean(axis=1).tolist())
    budgets = recipe.rollback_budgets(stub, plan)
    assert len(budgets) == sum(len(stub.budgets[stub.key(s)]) for s in plan.rollbacks.values())
    drops = recipe.pair_drops(stub, plan)
    assert list(drops) == ["math,qa", "math,cw"]
    assert recipe.change_row(drops["math,cw"], "math")["diff"] == pytest.approx(-0.2)
    curves = recipe.rollback_curves(stub, plan)
    assert set(curves["pair"]) == {"math,qa", "math,cw"} and math.isclose(
        curves.query("pair == 'math,qa' and rule == 'magnitude' and domain == 'math'")["diff"].iloc[0], 0.1)


def test_the_refresh_distances_start_at_the_chain_end_and_at_zero(setup):
    """Weights: theta_A* 0, the chain's end 1, then each refresh and control 2, 3, ... (four entries each)."""
    stub, plan = setup

    class Norms:
        def distances(self, difference):
            norm = float(difference["w"].norm())
            return {"overall": norm, "routes": norm / 2, "subspace": norm / 4}

    distance = recipe.refresh_distances(stub, plan, Norms())
    start = distance[distance["steps"] == 0].set_index("curve")
    assert start.loc[recipe.refresh_curve("constant"), "overall"] == pytest.approx(2.0)  # |1 - 0| over 4 entries
    assert start.loc[recipe.CONTROL_CURVE, ["overall", "routes", "subspace"]].tolist() == [0.0, 0.0, 0.0]
    last = distance.set_index(["curve", "steps"]).loc[(recipe.CONTROL_CURVE, 50)]
    models = 1 + len(plan.refreshes) + len(plan.controls)
    assert last["overall"] == pytest.approx(2 * models) and last["subspace"] == pytest.approx(models / 2)
    assert len(distance) == len(plan.refreshes) + len(plan.controls) + 3  # budget 0 of each curve
