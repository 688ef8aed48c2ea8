"""Notebook 06's recipe (mdrl_lib.recipes.nb06): its plan reuses notebook 05's specs (same keys), holds the
7 merges of the experts, 6 of the chain's stages and the alternating refresh with their scores, and its parameters cell is the recipe's."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mdrl_lib.comparison import schedule_cost
from mdrl_lib.config import ConfigError, RunConfig
from mdrl_lib.kit import Kit
from mdrl_lib.merging import Merge
from mdrl_lib.recipes import nb05, nb06 as recipe
from mdrl_lib.recovery import RollbackScores, refresh_step_cost
from mdrl_lib.specs import Base, Refresh, Scores, Stage

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("nb06-recipe"))
    params = recipe.Params(run_dir=run_dir)
    kit = Kit(params.config)
    settled = nb05.Params(run_dir=run_dir, rollback_pair="math,cw")  # as settle leaves 05's "math,auto"
    return kit, params, settled, recipe.comparison_plan(kit, params, settled, ("math,cw",))


def test_the_refreshes_and_rollbacks_are_notebook_05s_own_specs(setup):
    kit, params, settled, plan = setup
    five = nb05.recovery_plan(kit, settled, ("math,cw",))
    steps = kit.config.rl.refresh_steps
    assert sorted(plan.refreshes) == sorted(set(settled.budgets) | {steps})  # 05's own budgets
    for n, spec in plan.refreshes.items():
        assert spec == Refresh(five.chain_end, "math", steps=n, lr_schedule="linear")
        assert kit.key(spec) == kit.key(five.refreshes[("linear", n)])
    # the main pair's sweeps scored on every domain: random draws and equal-size controls (Math only) left out
    assert set(plan.rollbacks) == {"first_order", "first_order_routes", "second_order", "magnitude", "other_delta",
                                   "gradient_step", "revert_stage"}
    for rule, spec in plan.rollbacks.items():
        assert isinstance(spec, RollbackScores) and spec.domains is None
        assert kit.key(spec) == kit.key(five.rollbacks[("math,cw", rule)])


def test_seven_merges_of_the_four_experts(setup):
    kit, _, _, plan = setup
    experts = tuple(Stage(Base(), d) for d in kit.config.order)
    assert [kit.key(e) for e in experts[:1]] == [kit.key(plan.recovery.chain[0])]  # Code's expert is the chain's stage
    assert len(plan.merges) == 7 and all(isinstance(m, Merge) and m.models == experts for m in plan.merges)
    names = [recipe.merge_name(m) for m in plan.merges]
    assert names == ["merge task_arithmetic scale 0.3", "merge task_arithmetic scale 0.5",
                     "merge task_arithmetic scale 1", "merge ties density 0.2", "merge ties density 0.5",
                     "merge dare_ties drop 0.5", "merge dare_ties drop 0.9"]
    assert len({kit.key(m) for m in plan.merges}) == 7


def test_six_merges_of_the_chain_s_stages_each_from_the_stage_before(setup):
    kit, params, settled, plan = setup
    chain = tuple(plan.recovery.chain)
    assert len(chain) == len(kit.config.order) and chain[-1] == plan.chain_end
    assert len(plan.stage_merges) == 6  # task arithmetic at 0.3 and 0.5 (1 is the chain's end), 2 TIES, 2 DARE-TIES
    for merge in plan.stage_merges:
        assert merge.models == chain and merge.references == (Base(), *chain[:-1])
    assert [recipe.merge_name(m) for m in plan.stage_merges][:3] == [
        "stage merge task_arithmetic scale 0.3", "stage merge task_arithmetic scale 0.5", "stage merge ties density 0.2"]
    assert not {kit.key(m) for m in plan.stage_merges} & {kit.key(m) for m in plan.merges}
    off = recipe.comparison_plan(kit, recipe.Params(run_dir=params.run_dir, merge_stages=False), settled, ("math,cw",))
    assert off.stage_merges == () and len(off.specs()) == len(plan.specs()) - 12  # 6 merges and their scores


def test_the_alternating_refresh_costs_the_single_refresh(setup):
    kit, _, _, plan = setup
    steps, rl = kit.config.rl.refresh_steps, kit.config.rl
    cycles = recipe.Params().alternating_cycles
    assert len(plan.schedule) == cycles * 4 and len(plan.cycle_ends) == cycles
    assert sum(s.steps for s in plan.schedule) == steps
    assert schedule_cost(list(plan.schedule), rl) == plan.refresh_cost == steps * refresh_step_cost(rl)
    assert plan.schedule[0].parent == plan.chain_end and plan.schedule[0].domain == "math"
    assert [s.domain for s in plan.schedule[:4]] == ["math", "code", "qa", "cw"]
    assert plan.cycle_ends[-1] == plan.schedule[-1]


def test_the_plan_lists_each_spec_once_with_the_scores_the_notebook_reads(setup):
    kit, _, _, plan = setup
    specs = plan.specs()
    keys = [kit.key(s) for s in specs]
    assert len(keys) == len(set(keys))
    scored = {s.of for s in specs if isinstance(s, Scores)}
    assert scored == {plan.post_a, plan.chain_end, *plan.refreshes.values(), *plan.experts.values(), *plan.merges,
                      *plan.stage_merges, *plan.cycle_ends}
    assert set(plan.schedule) <= set(specs) and set(plan.rollbacks.values()) <= set(specs)
    assert sum(isinstance(s, Merge) for s in specs) == 13
    assert sum(isinstance(s, Scores) for s in specs) == 2 + len(plan.refreshes) + 4 + 7 + 6 + len(plan.cycle_ends)


def test_the_plan_waits_for_the_chain_before_listing_the_rest(setup):
    from mdrl_lib.plan import Pending

    kit, params, _, _ = setup
    entries = recipe.plan(kit, params)
    assert isinstance(entries[-1], Pending)  # "math,auto" is chosen from the chain's scores, not built to plan


def test_bad_parameters_name_the_valid_choices(tmp_path):
    with pytest.raises(ConfigError, match=r"^alternating_cycles: .*valid cycles for these steps and share: 1, 2, 3, 5, 6, 10, 15, 30"):
        recipe.Params(run_dir=str(tmp_path), alternating_cycles=4)
    with pytest.raises(ConfigError, match="refresh_domain: 'cw' must be trained before the last stage"):
        recipe.Params(run_dir=str(tmp_path), refresh_domain="cw")
    with pytest.raises(ConfigError, match="merge_drop_rates"):
        recipe.Params(run_dir=str(tmp_path), merge_drop_rates="0.5,1.0")


def test_the_parameters_cell_is_the_recipes():
    cells = json.loads((ROOT / "notebooks" / "06_recovery_methods.ipynb").read_text())["cells"]
    cell = next(c for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))
    assert "".join(cell["source"]) == recipe.Params.papermill_cell()
    # the "Build it yourself" exercises at the end ask the kit for nothing; the check of what was asked comes last
    # among the cells before them
    build = next(i for i, c in enumerate(cells) if "".join(c["source"]).startswith("## Build it yourself"))
    code = [c for c in cells[:build] if c["cell_type"] == "code"]
    assert "params = recipe.Params.from_namespace(globals())" in "".join(code[1]["source"])
    assert "used == planned" in "".join(code[-1]["source"])
    assert not any("kit" in "".join(c["source"]) for c in cells[build:] if c["cell_type"] == "code")
