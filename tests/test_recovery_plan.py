"""Notebook 05's plan (its recipe, mdrl_lib.recipes.nb05) without training, and one rollback sweep
built end to end on a tiny kit: the full rollback is the reference model, the stored weights never move."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mdrl_lib.config import ConfigError, RunConfig
from mdrl_lib.kit import Kit
from mdrl_lib.recipes.nb05 import MAIN_RULES, RANDOM_DRAWS, SECOND_PAIR_RULES, SIZE_CONTROLS, Params, recovery_plan
from mdrl_lib.recovery import RollbackScores, budget_count, rollback_items
from mdrl_lib.specs import Base, GradientSteps, ObjectiveBatch, Scores


def plan(kit, params):
    """Notebook 05's plan for the notebook options ``params`` (the rest: the recipe's defaults)."""
    pairs = {"rollback_pair": "math,qa", "second_rollback_pair": "math,cw",  # the settings these tests were written for
             "refresh_budgets": "10,20,50"}
    return recovery_plan(kit, Params(run_dir=kit.config.run_dir, **{**pairs, **params}))


def planned_specs(kit, params):
    return plan(kit, params).specs()


@pytest.fixture
def kit(tmp_path):
    return Kit(RunConfig.from_params(run_dir=str(tmp_path), rl_steps=3, rl_refresh_steps=7))


def test_planned_specs_name_every_artifact_once_and_build_nothing(kit):
    specs = planned_specs(kit, {})
    keys = [kit.key(s) for s in specs]
    assert len(keys) == len(set(keys))
    assert not any(kit.store.get(k) for k in keys)  # keys only: nothing was built
    chain = kit.chain_specs()
    assert [kit.key(s) for s in chain] == [kit.key(s) for s in specs if s.kind == "stage"]
    # budgets 10, 20, 50 and the run's refresh_steps (7) at the linear rate, the largest given budget (50) also at a
    # constant one, plus the controls and the equal-cost refresh; every model has its Scores
    p = plan(kit, {})
    assert p.budgets == (7, 10, 20, 50) and len(p.refreshes) == 5 and len(p.controls) == 4
    assert [key for key in p.refreshes if key[0] == "constant"] == [("constant", 50)]
    assert kit.key(p.refreshes[("linear", 7)]) == kit.key(kit.refresh_spec("math"))  # the CLI's refresh
    assert all(kit.key(c.parent) == kit.key(chain[1]) for c in p.controls.values())  # from theta_A* (after Math)
    models = [s for s in specs if s.kind in ("base", "stage", "refresh")]
    assert {kit.key(Scores(m)) for m in models} <= set(keys)
    rollbacks = [s for s in specs if s.kind == "rollback"]
    assert len(rollbacks) == len(MAIN_RULES) + len(SECOND_PAIR_RULES) + 2 * len(SIZE_CONTROLS)
    for pair in ("math,qa", "math,cw"):  # the controls C7 needs: random of RANDOM_DRAWS draws, both matchings
        random, size = p.rollbacks[(pair, "random")], p.rollbacks[(pair, "random_size")]
        assert random.draws == size.draws == RANDOM_DRAWS >= 10 and random.domains == ("math",)
        assert kit.key(size.norm_of) == kit.key(p.rollbacks[(pair, "first_order")])
        assert p.rollbacks[(pair, "magnitude_size")].norm_of is not None
        along = p.objective_along[pair]
        assert [s.rule for s in along.sweeps] == ["first_order", "gradient_step", "magnitude", "magnitude"]
        assert kit.key(along.models[0]) == kit.key(chain[-1]) and kit.key(along) in keys
    assert kit.key(p.rollbacks[("math,qa", "magnitude")]) == kit.key(RollbackScores(
        chain[-1], chain[1], "math", "qa", "magnitude", p.fractions, seed=kit.config.seed))  # stored keys unchanged
    assert kit.key(p.refresh_objective) in keys
    qa = [s for s in rollbacks if s.domain_b == "qa"]
    assert all(kit.key(s.reference) == kit.key(chain[1]) and kit.key(s.current) == kit.key(chain[-1]) for s in qa)
    assert kit.key(ObjectiveBatch(chain[1], "math")) in keys


def test_the_options_change_the_plan(kit):
    fewer = planned_specs(kit, {"constant_refresh": False, "second_rollback_pair": "", "refresh_budgets": "5"})
    p = plan(kit, {"constant_refresh": False, "second_rollback_pair": "", "refresh_budgets": "5"})
    assert set(p.refreshes) == {("linear", 5), ("linear", 7)} and len(p.pairs) == 1
    assert len(fewer) < len(planned_specs(kit, {}))
    own = plan(kit, {"rollback_gradient_at": "own"}).rollbacks[("math,qa", "first_order")]
    assert kit.key(own.gradient_at) == kit.key(kit.chain_specs()[1])
    # run parameters are the kit's business: the plan follows the kit it is given
    assert [kit.key(s) for s in planned_specs(kit, {"seed": 5})] == [kit.key(s) for s in planned_specs(kit, {})]


def test_bad_plans_are_refused_naming_the_field(kit):
    with pytest.raises(ConfigError, match="c7_fraction"):
        plan(kit, {"c7_fraction": 0.5})
    with pytest.raises(ConfigError, match="refresh_domain"):
        plan(kit, {"refresh_domain": "cw"})  # the last stage: nothing comes after it to damage it
    with pytest.raises(ConfigError, match="before B"):
        plan(kit, {"rollback_pair": "qa,math"})
    with pytest.raises(ConfigError, match="refresh_budgets"):
        plan(kit, {"refresh_budgets": "2.5"})
    with pytest.raises(ConfigError, match="unknown parameter 'rollback_budget'"):
        Params.from_values(rollback_budget=3)
    with pytest.raises(ConfigError, match="needs objective"):
        RollbackScores(Base(), Base(), "math", "qa", "first_order", (0.1,))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("rollback-run")
    return Kit(RunConfig.from_params(run_dir=str(run_dir), warmup_steps=20, data_eval_size=6, model_hidden_size=32,
                                     model_num_layers=1, model_num_heads=2, model_intermediate_size=64))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_rollback_sweep_scores_models_in_memory_and_leaves_the_stored_weights_alone(tiny):
    objective = ObjectiveBatch(Base(), "cw", prompts=4, samples=2, min_score=0.0)
    moved = GradientSteps(Base(), objective, steps=2, lr=0.05)
    tiny.get(moved, progress=False)
    files = {spec: tiny.weights_file(spec) for spec in (Base(), moved)}
    before = {spec: _digest(path) for spec, path in files.items()}
    spec = RollbackScores(moved, Base(), "cw", "math", "first_order", (0.01, 1.0), objective=objective,
                          gradient_at=moved)
    artifact = tiny.get(spec, progress=False)
    assert {spec: _digest(path) for spec, path in files.items()} == before
    items = rollback_items(tiny, spec)
    full = items[items["fraction"] == 1.0].sort_values(["domain", "item"]).reset_index(drop=True)
    reference = tiny.item_results(Base())[["domain", "item", "score"]].sort_values(["domain", "item"])
    assert full["score"].tolist() == reference["score"].tolist()  # everything rolled back: the reference model
    total = sum(t.numel() for _, t in tiny.weights(Base()))
    budgets = {row["fraction"]: row for row in artifact.metrics["budgets"]}
    assert budgets[0.01]["count"] == budget_count(0.01, dict(tiny.weights(Base())))
    assert budgets[1.0]["count"] == total and budgets[0.01]["chosen"] == budgets[0.01]["count"]
    assert budgets[1.0]["norm"] > budgets[0.01]["norm"] > 0
    # the first-order rule promises a loss decrease
    assert budgets[0.01]["predicted_change"] < 0
    json.dumps(artifact.metrics)  # the manifest is plain JSON
    step = tiny.get(RollbackScores(moved, Base(), "cw", "math", "gradient_step", (0.01,), objective=objective,
                                   gradient_at=moved), progress=False).metrics["budgets"][0]
    assert step["norm"] == pytest.approx(budgets[0.01]["norm"], rel=1e-4)  # an equal-norm step
    assert {spec: _digest(path) for spec, path in files.items()} == before


def test_a_second_pair_with_another_a_brings_its_own_objective(kit):
    p = plan(kit, {"second_rollback_pair": "code,qa"})
    keys = [kit.key(s) for s in p.specs()]
    objective = p.rollbacks[("code,qa", "first_order")].objective
    assert objective.domain == "code" and kit.key(objective.source) == kit.key(kit.chain_specs()[0])
    assert keys.index(kit.key(objective)) < keys.index(kit.key(p.rollbacks[("code,qa", "first_order")]))
