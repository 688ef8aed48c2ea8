"""Notebook 02's recipe: its plan under each option, and the claim checks' inputs assembled from the cached
analyses of a tiny kit, against the same numbers computed directly."""
from __future__ import annotations

from collections import Counter
from itertools import combinations

import pytest

from mdrl_lib import routes
from mdrl_lib.claims import check_c3, check_c4
from mdrl_lib.config import RunConfig
from mdrl_lib.domains.base import DOMAIN_NAMES
from mdrl_lib.kit import Kit
from mdrl_lib.recipes import nb02 as recipe
from mdrl_lib.specs import ObjectiveBatch


@pytest.fixture
def kit(tmp_path):
    return Kit(RunConfig.from_params(run_dir=str(tmp_path)))


def params(kit, **options):
    return recipe.Params(run_dir=str(kit.config.run_dir), **{"gradient_pair": "math,qa", **options})


def store_empty(kit, spec):
    """Put an empty artifact under ``spec``'s key (the plan only asks whether it is stored)."""
    kit.store.get_or_create(kit.key(spec), lambda directory: {}, config={}, seed=0)


def test_the_plan_names_every_analysis_once_and_builds_nothing(kit):
    specs = recipe.plan(kit, params(kit))
    keys = [kit.key(s) for s in specs]
    assert len(keys) == len(set(keys)) and not any(kit.store.get(k) for k in keys)
    # three batches per domain at the base, and three for each of the C3 pair's domains at the Math expert
    assert Counter(s.kind for s in specs) == {"base": 1, "scores": 1, "route_activity": 8, "route_ablation": 3,
                                              "route_matched_controls": 1, "objective": 18, "objective_gradient": 18,
                                              "route_gradients": 1, "stage": 1}
    on_routes = next(s for s in specs if s.kind == "route_gradients")
    at_base = {kit.key(s) for s in specs if s.kind == "objective_gradient" and s.at == recipe.Base()}
    assert {kit.key(g) for g in on_routes.gradients} == {kit.key(s) for k, s in recipe.gradient_specs(
        params(kit)).items() if k[1] in recipe.ROUTE_REPLICATES} < at_base  # section 3b reads batches 0 and 1
    assert {kit.key(s) for s in on_routes.inputs()} <= set(keys)  # its inputs are planned too
    after = [s for s in specs if s.kind == "objective_gradient" and s.at != recipe.Base()]
    assert {(s.objective.domain, s.objective.source) for s in after} == {(n, recipe.after_stage())
                                                                         for n in ("math", "qa")}
    moved = recipe.plan(kit, params(kit, route_prompts=50, gradient_samples=8))
    assert len({kit.key(s) for s in moved} & set(keys)) == 3  # only the base, its scores and the Math expert stay


def test_the_ablations_are_the_domains_set_the_pair_and_their_seeded_controls(kit):
    specs = recipe.ablation_specs(params(kit, seed=3, ablation_domain="qa", ablation_mode="mean"))
    assert specs["only"].domains == ("qa",) and specs["shared"].domains == ()
    assert (specs["only control"].control, specs["only control"].seed) == (True, 3)
    assert set(specs) == {"only", "only control", "shared"}  # the shared set's control is activation-matched
    assert {s.mode for s in specs.values()} == {"mean"}
    matched = recipe.matched_controls_spec(params(kit, seed=3, ablation_mode="mean", ablation_pair="qa,math"))
    assert (matched.seed, matched.mode, matched.domains, matched.draws) == (3, "mean", ("qa", "math"), 10)
    assert recipe.ablation_specs(params(kit, ablation_pair="qa,math"))["shared"].domains == ("qa", "math")


def test_the_experts_comparison_follows_compare_experts_and_the_store(kit):
    experts = recipe.expert_specs()
    assert not any(s.kind == "route_updates" for s in recipe.plan(kit, params(kit)))
    assert recipe.if_stored(kit, params(kit)) == list(experts.values())
    spec, skipped = recipe.expert_updates_spec(kit, params(kit))
    assert spec is None and "experts stored: none" in skipped
    yes = recipe.plan(kit, params(kit, compare_experts="yes"))
    assert Counter(s.kind for s in yes)["stage"] == 4
    assert [e.domain for e in next(s for s in yes if s.kind == "route_updates").experts] == list(DOMAIN_NAMES)
    assert recipe.if_stored(kit, params(kit, compare_experts="yes")) == []
    for n in ("qa", "math"):
        store_empty(kit, experts[n])
    updates = next(s for s in recipe.plan(kit, params(kit)) if s.kind == "route_updates")
    assert [e.domain for e in updates.experts] == ["math", "qa"]  # the stored ones, in domain order
    assert kit.key(updates) in {kit.key(s) for s in recipe.if_stored(kit, params(kit))}
    assert recipe.expert_updates_spec(kit, params(kit, compare_experts="no"))[0] is None
    assert recipe.plan(kit, params(kit, compare_experts="no")) == recipe.plan(kit, params(kit))[:-1]


def test_too_many_gradient_prompts_are_refused(kit):
    smallest = min(len(kit.splits(n).train) for n in DOMAIN_NAMES)
    recipe.check_gradient_prompts(kit, params(kit, gradient_prompts=smallest))
    with pytest.raises(ValueError, match=f"at most {smallest}"):
        recipe.check_gradient_prompts(kit, params(kit, gradient_prompts=smallest + 1))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("nb02-recipe")
    return Kit(RunConfig.from_params(run_dir=str(run_dir), warmup_steps=20, data_eval_size=6, model_hidden_size=32,
                                     model_num_layers=2, model_num_heads=2, model_intermediate_size=64))


@pytest.fixture
def tiny_params(tiny, monkeypatch):
    """Small batches that keep every sample (a barely trained base answers few items right)."""
    monkeypatch.setattr(recipe, "objective_batch", lambda p, domain, replicate, at=None: ObjectiveBatch(
        at or recipe.Base(), domain, prompts=p.gradient_prompts, samples=p.gradient_samples, seed=replicate,
        min_score=0.0))
    return recipe.Params(run_dir=str(tiny.config.run_dir), route_prompts=12, route_fraction=0.3, gradient_prompts=3,
                         gradient_samples=2, gradient_pair="math,qa")


def test_c3_inputs_are_the_geometry_of_the_cached_gradients(tiny, tiny_params):
    inputs = recipe.c3_inputs(tiny, tiny_params)
    gradients = {(n, r): tiny.objective(recipe.objective_batch(tiny_params, n, r)).gradient(
        tiny.load(recipe.Base(), placement="analysis")[0]) for n in DOMAIN_NAMES for r in recipe.REPLICATES}
    direct = routes.GradientGeometry.of(gradients, recipe.REPLICATES, embeddings=True)
    assert inputs["pair"] == ("math", "qa")
    assert inputs["global_cosines"] == [c.cosine for c in direct.pair("math", "qa")]
    assert inputs["noise_floor"] == direct.noise_floor("math", "qa")
    assert inputs["module_floors"] == direct.module_floors("math", "qa").to_dict()
    every = {f"model.layers.{i}.{b}" for i in (0, 1) for b in ("self_attn", "mlp")} | {routes.EMBEDDINGS, routes.OTHER}
    assert set(inputs["module_cosines"]) == set(inputs["module_bands"]) == every
    assert inputs["global_without_embeddings"] == direct.global_cosines_without("math", "qa", routes.EMBEDDINGS)
    null = routes.module_cosine_null([(gradients[("math", r)], gradients[("qa", r)]) for r in recipe.REPLICATES],
                                     draws=1000, seed=0)
    assert inputs["module_bands"] == pytest.approx(null.bands(0.95)) and inputs["null_draws"] == 1000
    check = check_c3(**inputs)
    assert check.name == "math-qa-gradients" and check.figures["replicates"] == 3
    assert recipe.c3_inputs(tiny, tiny_params, ("cw", "code"))["pair"] == ("cw", "code")
    table = recipe.pair_table(recipe.gradient_geometry(tiny, tiny_params))
    assert len(table) == len(list(combinations(DOMAIN_NAMES, 2)))
    assert table.loc["Math-QA", "cosine, batch 0"] == inputs["global_cosines"][0]


def test_c4_inputs_hold_the_overlaps_and_the_shared_sets_ablation(tiny, tiny_params):
    inputs = recipe.c4_inputs(tiny, tiny_params)
    sets, sizes = routes.answer_routes(tiny, recipe.Base(), 12, 0.3)
    shared, pair = routes.ablation_channels(sets, "shared")
    assert inputs["pair"] == pair and inputs["shared_channels"] == len(shared) > 0
    assert inputs["overlaps"].equals(routes.pairwise_overlaps(sets, sum(sizes.values())))
    assert inputs["chance"] == routes.chance_jaccard(0.3) and inputs["q"] == 0.3
    assert [c.domain for c in inputs["contrasts"]] == sorted(pair, key=DOMAIN_NAMES.index)
    check = check_c4(**inputs)
    assert check.figures["ablated_pair"] == "-".join(pair)
    study = recipe.ablation_study(tiny, tiny_params)
    shared_name = f"{pair[0]}+{pair[1]} shared"
    assert list(study.channel_sets) == ["math-only", "random, as many as math-only", shared_name]
    matched = study.controls[shared_name]
    assert matched.startswith("activation-matched random") and matched in set(study.scores["checkpoint"])
    assert set(study.scores["checkpoint"]) == {"unablated", *study.channel_sets, matched}
    # the matched control is each item's mean over its draws, scored on the pair's domains only
    assert set(study.scores.loc[study.scores["checkpoint"] == matched, "domain"]) == set(pair)
    draws = study.matched_draws()
    assert len(draws) == 2 * 10 and set(draws["domain"]) == set(pair)
    assert inputs["activation_ratios"] == study.matched.ratios and all(len(v) == 10 for v in study.matched.ratios.values())
    assert study.describe().startswith(f"math-only: {len(study.only)} channels; {shared_name}: "
                                       f"{len(shared)} channels (by layer: ")
    assert len(study.changes()) == len(study.channel_sets) * len(DOMAIN_NAMES) + 2
    assert len(study.contrast_table()) == len(DOMAIN_NAMES) + 2


def test_the_tables_and_figures_the_notebook_shows(tiny, tiny_params):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    activity = recipe.route_activity(tiny, tiny_params)
    sets = {p: recipe.route_sets(by_domain, 0.3) for p, by_domain in activity.items()}
    sizes = recipe.route_size_table(tiny, tiny_params, activity, sets)
    assert list(sizes.index) == ["Code", "Math", "QA", "CW"] and set(sizes["prompts"]) == {12}
    assert (sizes["route size (channels)"] == round(0.3 * 128)).all()
    overlaps = recipe.overlap_table(sets, 128)
    assert len(overlaps) == 12 and overlaps.index[0] == ("prompt", "Code-Math")
    plt.close("all")
    recipe.overlap_explorer(activity)(0.2, "prompt")  # draws (and shows) one matrix
    geometry = recipe.gradient_geometry(tiny, tiny_params)
    grads = recipe.gradients(tiny, tiny_params)
    null = recipe.module_null(grads, "math", "qa", seed=0)
    modules = recipe.module_cosine_table(geometry, "math", "qa", null)
    band = modules["chance band (null of the max, 95%)"]
    bands = recipe.module_bands(null)  # every module, the embeddings and "other" too
    assert set(bands) == set(modules.index) and {routes.OTHER, routes.EMBEDDINGS} <= set(bands)
    assert band.to_dict() == pytest.approx(bands, abs=5e-5)
    assert recipe.embedding_lines(geometry, "math", "qa").startswith("batch 0: global cosine")
    assert {"Math vs Math (noise floor)", "QA vs QA (noise floor)", "cosine (mean)"} <= set(modules.columns)
    lines = recipe.cancellation_lines(geometry, "math", "qa").splitlines()
    first = geometry.pair("math", "qa")[0]
    assert lines[0] == (f"batch 0: global cosine {first.cosine:+.4f} = positive contributions {first.positive:+.4f} "
                        f"+ negative {first.negative:+.4f}; cancellation {first.cancellation:.2f}")
    batches = recipe.batch_table(tiny, tiny_params)
    assert len(batches) == 12 and (batches["sampled"] == 6).all()
    on_routes = recipe.route_gradient_table(tiny, tiny_params)
    rows = tiny.open(recipe.route_gradients_spec(tiny_params))
    assert list(on_routes["shared channels"]) == [r["shared"] for r in rows]
    assert list(on_routes.columns)[:3] == ["shared channels", "on shared channels, batch 0",
                                           "on shared channels, batch 1"]
    table, skipped = recipe.expert_updates(tiny, tiny_params)
    assert table is None and skipped.startswith("Skipped: compare_experts='auto', experts stored: none.")
