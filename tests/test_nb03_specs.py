"""Notebook 03's cached analyses (mdrl_lib.perturbation's specs): what each key covers, and each one built on
a tiny kit, opened, and held against the library call it caches and a property of its result."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mdrl_lib import perturbation as pt
from mdrl_lib.config import ConfigError, RunConfig
from mdrl_lib.kit import Kit
from mdrl_lib.specs import Base, GradientSteps, ObjectiveBatch, Stage


@pytest.fixture
def kit(tmp_path):
    return Kit(RunConfig.from_params(run_dir=str(tmp_path)))


def specs_of(expert=None, stage=None, objective=None, **options):
    """The analyses of one configuration; ``options`` override the defaults below."""
    expert = expert or Stage(Base(), "math")
    stage = stage or Stage(expert, "qa", save_every=20)
    objective = objective or ObjectiveBatch(expert, "math")
    o = {"points": 4, "fraction": 0.2, "prompts": 100, "rank": 16, "seed": 0, "random": 5, "scale": 1.0, "steps": 30,
         **options}
    routes = pt.ConflictRoutes(expert, "math", "qa", fraction=o["fraction"], prompts=o["prompts"])
    subspace = pt.ConflictEigenpairs(routes, objective, rank=o["rank"], seed=o["seed"])
    curvature = pt.TopCurvature(objective, seed=o["seed"])
    return {"hvp": pt.HvpCheck(objective), "segment": pt.TaylorSegment(stage, objective, points=o["points"]),
            "along": pt.TaylorAlong(stage, objective), "routes": routes, "subspace": subspace,
            "shares": pt.CapturedShares(subspace, (stage,), random=o["random"], seed=o["seed"]),
            "curvature": curvature,
            "gd": pt.GDContraction(stage, subspace, curvature, rate_scale=o["scale"], steps=o["steps"])}


def keys(kit, specs):
    return {name: kit.key(spec) for name, spec in specs.items()}


def test_each_key_follows_the_inputs_that_change_its_result_and_nothing_else(kit):
    base = keys(kit, specs_of())
    assert len(set(base.values())) == len(base)
    assert keys(kit, specs_of()) == base  # equal specs, equal keys
    changed = {  # option -> the analyses whose result it changes (and through them, what reads them)
        "points": {"segment"},
        "fraction": {"routes", "subspace", "shares", "gd"},
        "prompts": {"routes", "subspace", "shares", "gd"},
        "rank": {"subspace", "shares", "gd"},
        "seed": {"subspace", "shares", "curvature", "gd"},
        "random": {"shares"},
        "scale": {"gd"},
        "steps": {"gd"},
    }
    for option, value in {"points": 5, "fraction": 0.3, "prompts": 50, "rank": 8, "seed": 1, "random": 6,
                          "scale": 1.5, "steps": 10}.items():
        moved = keys(kit, specs_of(**{option: value}))
        assert {n for n in base if moved[n] != base[n]} == changed[option], option
    other_stage = keys(kit, specs_of(stage=Stage(Stage(Base(), "math"), "qa", save_every=20, lr=1e-5, steps=60)))
    assert {n for n in base if other_stage[n] != base[n]} == {"segment", "along", "shares", "gd"}
    other_objective = keys(kit, specs_of(objective=ObjectiveBatch(Stage(Base(), "math"), "math", prompts=32)))
    assert {n for n in base if other_objective[n] != base[n]} == set(base) - {"routes"}
    assert kit.key(pt.CapturedShares(specs_of()["subspace"], [Stage(Stage(Base(), "math"), "qa", save_every=20)])) \
        == base["shares"]  # a list of stages is the tuple


def test_bad_specs_are_refused_naming_what_is_wrong():
    expert = Stage(Base(), "math")
    objective = ObjectiveBatch(expert, "math")
    with pytest.raises(ConfigError, match="keeps no checkpoints"):
        pt.TaylorAlong(Stage(expert, "qa"), objective)
    with pytest.raises(ConfigError, match="ObjectiveBatch"):
        pt.TaylorSegment(Stage(expert, "qa"), expert)
    with pytest.raises(ConfigError, match="must differ"):
        pt.ConflictRoutes(expert, "math", "math")
    with pytest.raises(ConfigError, match="fraction"):
        pt.ConflictRoutes(expert, "math", "qa", fraction=0.0)
    with pytest.raises(ConfigError, match="eps"):
        pt.HvpCheck(objective, eps=(0.1, -1.0))
    routes = pt.ConflictRoutes(expert, "math", "qa")
    subspace = pt.ConflictEigenpairs(routes, objective)
    with pytest.raises(ConfigError, match="one objective"):
        pt.GDContraction(Stage(expert, "qa"), subspace, pt.TopCurvature(ObjectiveBatch(expert, "math", prompts=8)))
    with pytest.raises(ConfigError, match="at least one stage"):
        pt.CapturedShares(subspace, ())


def test_the_toy_estimates_follow_the_work(kit):
    config = kit.config
    small, large = specs_of(steps=10, rank=4), specs_of(steps=30, rank=16)
    for name in ("subspace", "shares", "gd"):
        assert large[name].toy_seconds(config) > small[name].toy_seconds(config) > 0
    expert = Stage(Base(), "math")
    long_stage = pt.TaylorAlong(Stage(expert, "qa", save_every=20), ObjectiveBatch(expert, "math"))
    short_stage = pt.TaylorAlong(Stage(expert, "qa", save_every=20, steps=60), ObjectiveBatch(expert, "math"))
    assert long_stage.toy_seconds(config) > short_stage.toy_seconds(config)


# ------------------------------------------------------------------------------------ built on a tiny kit


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("nb03-run")
    return Kit(RunConfig.from_params(run_dir=str(run_dir), warmup_steps=20, data_eval_size=6, model_hidden_size=32,
                                     model_num_layers=1, model_num_heads=2, model_intermediate_size=64))


@pytest.fixture(scope="module")
def built(tiny):
    """A tiny world: theta_A* = the base, L_A on CW samples, and a 'B stage' of plain gradient steps on Math's
    objective that keeps its weights after each step (and its first step alone); every analysis of it, built.
    One torch thread, as the kit's builds use: the direct computations below must match bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    objective = ObjectiveBatch(Base(), "cw", prompts=4, samples=2, min_score=0.0)
    objective_b = ObjectiveBatch(Base(), "math", prompts=4, samples=2, min_score=0.0)
    stage = GradientSteps(Base(), objective_b, steps=2, lr=0.05, save_every=1)
    first_step = GradientSteps(Base(), objective_b, steps=1, lr=0.05)
    routes = pt.ConflictRoutes(Base(), "cw", "math", fraction=0.5, prompts=4)
    subspace = pt.ConflictEigenpairs(routes, objective, rank=3, seed=0)
    curvature = pt.TopCurvature(objective)
    specs = {"hvp": pt.HvpCheck(objective), "segment": pt.TaylorSegment(stage, objective, points=2),
             "along": pt.TaylorAlong(stage, objective), "routes": routes, "subspace": subspace,
             "shares": pt.CapturedShares(subspace, (stage, first_step), random=3), "curvature": curvature,
             "gd": pt.GDContraction(stage, subspace, curvature, rate_scale=1.0, steps=3)}
    opened = {name: tiny.open(spec, progress=False) for name, spec in specs.items()}
    expert = pt.load_expert(tiny, objective)
    delta = pt.weights_vector(tiny, expert.space, stage) - expert.theta
    yield {"specs": specs, "opened": opened, "expert": expert, "delta": delta, "stage": stage}
    torch.set_num_threads(threads)


def test_the_hvp_check_agrees_with_finite_differences(built):
    table = built["opened"]["hvp"]
    assert list(table.index) == ["eps = 0.1", "eps = 0.01"]
    assert list(table.columns) == ["relative_error", "hvp_norm", "fd_norm", "cosine"]
    assert (table["relative_error"] < 0.05).all() and (table["cosine"] > 0.99).all()
    assert table["hvp_norm"].nunique() == 1  # the exact product does not depend on the step


def test_the_taylor_segment_is_the_library_call_and_its_terms_scale_as_t_and_t_squared(built):
    expert, table = built["expert"], built["opened"]["segment"]
    assert table["t"].tolist() == [0.5, 1.0]
    assert (table["first_order"] / table["t"]).round(12).nunique() == 1
    assert (table["second_order"] / table["t"] ** 2).round(12).nunique() == 1
    assert table["predicted"].tolist() == (table["first_order"] + table["second_order"]).tolist()
    model64 = expert.model.double()
    try:
        direct = pt.taylor_terms(expert.loss, model64, expert.space, expert.theta.double(), built["delta"].double(),
                                 [0.5, 1.0])
    finally:
        expert.model.float()
    assert direct.equals(table)


def test_the_checkpoints_along_start_at_theta_a_and_end_at_the_segments_end(built):
    along, segment = built["opened"]["along"], built["opened"]["segment"]
    assert along["step"].tolist() == [0, 1, 2]
    assert along.iloc[0][["first_order", "second_order", "measured", "predicted"]].tolist() == [0.0] * 4
    last, end = along.iloc[-1], segment.iloc[-1]
    for column in ("first_order", "second_order", "measured"):
        assert last[column] == pytest.approx(end[column], rel=1e-9, abs=1e-15)


def test_the_routes_share_what_both_use(built):
    routes = built["opened"]["routes"]
    assert set(routes) == {"cw", "math", "shared"}
    assert routes["shared"] == routes["cw"] & routes["math"] and routes["shared"]
    assert len(routes["cw"]) == len(routes["math"]) == round(0.5 * 64)  # the top half of one layer's channels
    assert all(isinstance(layer, str) and isinstance(channel, int) for layer, channel in routes["shared"])


def test_the_eigenpairs_are_eigenpairs_of_the_restricted_hessian(built):
    expert, eigen = built["expert"], built["opened"]["subspace"]
    sub = eigen.restricted(expert.space)
    assert eigen.dim == sub.dim == len(built["opened"]["routes"]["shared"]) * 3 * 32
    assert list(eigen.values) == sorted(eigen.values, reverse=True) and eigen.hvps > 0
    vectors = torch.as_tensor(eigen.vectors)
    assert torch.allclose(vectors.T @ vectors, torch.eye(3, dtype=torch.float64), atol=1e-6)
    for value, vector in zip(eigen.values, vectors.T):
        product = pt.hvp(expert.loss, expert.model, sub, vector.float()).double()
        assert float((product - value * vector).norm()) < 1e-2 * abs(value) + 1e-4
    basis = eigen.basis(expert.space.dim)
    assert torch.equal(basis[eigen.index], vectors) and int((basis.abs().sum(1) > 0).sum()) <= eigen.dim
    mass = eigen.mass(expert.space, k=2)
    assert list(mass.columns) == ["v1", "v2"] and np.allclose(mass.sum().to_numpy(), 1.0)
    assert all(name.startswith("layers.0.mlp.") for name in mass.index)


def test_the_captured_shares_are_the_library_call_for_each_stage_in_order(tiny, built):
    expert, eigen = built["expert"], built["opened"]["subspace"]
    opened = built["opened"]["shares"]
    assert len(opened) == 2
    delta = built["delta"]
    first_step = pt.weights_vector(tiny, expert.space, tiny.checkpoints_along(built["stage"])[1][1]) - expert.theta
    operator = pt.hessian_operator(expert.loss, expert.model, eigen.restricted(expert.space))
    for one, d in zip(opened, (delta, first_step)):  # each alone: the joint products change nothing
        direct = pt.captured_shares({"one": d[eigen.index]}, eigen.vectors, operator, n_random=3, seed=0)["one"]
        assert direct.equals(one["shares"])
        assert direct["r"].tolist() == [1, 2, 3] and (direct["random_min"] <= direct["random_max"]).all()
    operator.release()
    full = pt.hessian_operator(expert.loss, expert.model, expert.space)
    on_routes = torch.zeros_like(delta)
    on_routes[eigen.index] = delta[eigen.index]
    part = pt.quadratic_form(full, on_routes) / pt.quadratic_form(full, delta)
    full.release()
    assert opened[0]["coordinates_part"] == part


def test_lambda_max_bounds_every_rayleigh_quotient(built):
    expert, lam_max = built["expert"], built["opened"]["curvature"]
    operator = pt.hessian_operator(expert.loss, expert.model, expert.space)
    generator = torch.Generator().manual_seed(3)
    for _ in range(3):
        v = torch.randn(expert.space.dim, generator=generator)
        assert pt.quadratic_form(operator, v) / float(v.double() @ v.double()) <= lam_max * (1 + 1e-3)
    operator.release()
    assert lam_max > 0


def test_the_gd_contraction_starts_at_the_displacement_on_s_and_follows_the_library(tiny, built):
    expert, eigen, gd = built["expert"], built["opened"]["subspace"], built["opened"]["gd"]
    assert gd["alpha"] == 1.0 / built["opened"]["curvature"] and gd["mu"] == float(eigen.values.min())
    assert len(gd["to_fixed"]) == len(gd["to_path"]) == 4
    project = eigen.projector(expert.space.dim)
    assert gd["to_fixed"][0] == pytest.approx(float(project(built["delta"].double()).norm()), rel=1e-5)
    assert gd["to_path"][0] == gd["to_fixed"][0]  # both paths start apart by delta_B
    start = expert.theta + built["delta"]
    damaged = pt.gd_trajectory(expert.loss, expert.model, expert.space, start, gd["alpha"], 3)
    assert gd["to_fixed"] == [float(project((theta - expert.theta).double()).norm()) for theta in damaged]
    json.dumps(tiny.get(built["specs"]["gd"]).metrics)


def test_the_tables_the_notebook_shows(tiny, built):
    expert, eigen = built["expert"], built["opened"]["subspace"]
    deltas = {"stage": built["delta"]}
    table = pt.displacement_table(deltas, expert.theta)
    assert table.loc["stage", "‖δ_B‖"] == pytest.approx(float(built["delta"].norm()))
    real = pt.distance_table(tiny, expert, {"θ_A*": Base(), "stage": built["stage"]}, eigen.projector(expert.space.dim),
                             eigen.index)
    assert real.loc["θ_A*"].drop("L_A").tolist() == [0.0, 0.0, 0.0]
    assert real.loc["θ_A*", "L_A"] == pt.loss_value(expert.loss, expert.model)
    assert real.loc["stage", "‖θ − θ_A*‖"] == table.loc["stage", "‖δ_B‖"]
    assert real.loc["stage", "on S: ‖P_S(θ − θ_A*)‖"] == pytest.approx(built["opened"]["gd"]["to_fixed"][0], rel=1e-5)
    checkpoint = tiny.checkpoints_along(built["stage"])[-1][1]
    assert torch.equal(pt.weights_vector(tiny, expert.space, checkpoint),
                       pt.weights_vector(tiny, expert.space, built["stage"]))


def test_the_gd_contraction_can_run_until_its_bound(tiny, built):
    """until_bound: as many steps as the bound needs (at most ``steps``); the same path as the fixed-length run."""
    s = built["specs"]["gd"]
    spec = pt.GDContraction(s.stage, s.subspace, s.curvature, rate_scale=1.0, steps=5, until_bound=0.999)
    assert tiny.key(spec) != tiny.key(s) and "until_bound" in spec.key_fields(tiny)
    assert "until_bound" not in s.key_fields(tiny)
    gd, fixed = tiny.open(spec, progress=False), built["opened"]["gd"]
    steps = pt.steps_to_bound(gd["alpha"], gd["mu"], 0.999, 5)
    assert len(gd["to_fixed"]) == steps + 1
    common = min(len(gd["to_fixed"]), len(fixed["to_fixed"]))
    assert gd["to_fixed"][:common] == fixed["to_fixed"][:common]
    with pytest.raises(ConfigError, match="until_bound"):
        pt.GDContraction(s.stage, s.subspace, s.curvature, until_bound=1.5)
