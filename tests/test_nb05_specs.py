"""Notebook 05's analysis specs (mdrl_lib.recovery): ConflictBasis caches notebook 03's conflict subspace and
gives back exactly what conflict_subspace computes; RollbackChanges caches a sweep's paired changes exactly.
Keys follow every input that changes the result and nothing else."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from mdrl_lib.config import ConfigError, RunConfig
from mdrl_lib.kit import Kit
from mdrl_lib.recovery import (CHANGE_COLUMNS, ConflictBasis, RollbackChanges, RollbackScores, conflict_subspace,
                               deltas, paired_changes, sweep_changes)
from mdrl_lib.specs import Base, GradientSteps, ObjectiveBatch, Stage

TINY = dict(warmup_steps=20, data_eval_size=6, model_hidden_size=32, model_num_layers=1, model_num_heads=2,
            model_intermediate_size=64)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return Kit(RunConfig.from_params(run_dir=str(tmp_path_factory.mktemp("nb05-specs")), **TINY))


@pytest.fixture(scope="module")
def objective():
    return ObjectiveBatch(Base(), "cw", prompts=4, samples=2, min_score=0.0)


def basis_spec(batch, **changes):
    fields = dict(model=Base(), objective=batch, domain_a="cw", domain_b="math", route_fraction=0.5,
                  route_prompts=6, rank=2, seed=0)
    return ConflictBasis(**{**fields, **changes})


def test_the_conflict_basis_key_follows_each_input_and_nothing_else(tmp_path, objective):
    kit = Kit(RunConfig.from_params(run_dir=str(tmp_path), rl_steps=3, rl_refresh_steps=7))
    same_run = Kit(RunConfig.from_params(run_dir=str(tmp_path), rl_steps=3, rl_refresh_steps=9))
    spec = basis_spec(objective)
    other = {"model": Stage(Base(), "math"), "objective": dataclasses.replace(objective, prompts=5),
             "domain_a": "qa", "domain_b": "code", "route_fraction": 0.3, "route_prompts": 7, "rank": 3, "seed": 1}
    keys = {name: kit.key(basis_spec(objective, **{name: value})) for name, value in other.items()}
    assert len(set(keys.values()) | {kit.key(spec)}) == len(other) + 1
    assert kit.key(basis_spec(objective)) == kit.key(spec) == same_run.key(spec)  # refresh steps are not its input
    assert [kit.key(s) for s in spec.inputs()] == [kit.key(Base()), kit.key(objective)]
    with pytest.raises(ConfigError, match="route_fraction"):
        basis_spec(objective, route_fraction=0.8)
    with pytest.raises(ConfigError, match="rank"):
        basis_spec(objective, rank=0)
    with pytest.raises(ConfigError, match="domain"):
        basis_spec(objective, domain_b="poetry")


def test_the_stored_conflict_subspace_is_the_one_computed(tiny, objective):
    spec = basis_spec(objective)
    artifact = tiny.get(spec, progress=False)
    stored = tiny.open(spec)
    model, tokenizer = tiny.load(Base(), placement="analysis")
    examples = [tiny.splits(d).train[:6] for d in ("cw", "math")]
    direct = conflict_subspace(model, tokenizer, tiny.objective(objective).loss, *examples, route_fraction=0.5, rank=2,
                               seed=0)
    assert torch.equal(stored.index, direct.index) and torch.equal(stored.basis, direct.basis)
    assert np.array_equal(stored.eigenvalues, direct.eigenvalues) and stored.channels == direct.channels
    assert stored.space.names == direct.space.names and stored.space.offsets == direct.space.offsets
    assert stored.space.numel == direct.space.numel
    assert torch.allclose(stored.basis.T @ stored.basis, torch.eye(2, dtype=torch.float64), atol=1e-10)
    assert artifact.metrics["coordinates"] == len(stored.index) and artifact.metrics["channels"] == len(stored.channels)
    # distances: zero at theta_A* itself, and overall >= routes >= subspace for any difference
    weights = dict(tiny.weights(Base()))
    assert set(stored.distances(deltas(weights, weights)).values()) == {0.0}
    generator = torch.Generator().manual_seed(0)
    noise = {n: torch.randn(t.shape, generator=generator) for n, t in weights.items()}
    d = stored.distances(noise)
    assert d["overall"] >= d["routes"] >= d["subspace"] > 0
    # a difference along the first basis vector lies in S: all three distances equal its length, 2
    vector = torch.zeros(stored.space.numel, dtype=torch.float64)
    vector[stored.index] = 2 * stored.basis[:, 0]
    along = dict(zip(stored.space.names, stored.space.unflatten(vector)))
    assert stored.distances(along) == pytest.approx({"overall": 2.0, "routes": 2.0, "subspace": 2.0})


def test_the_rollback_changes_key_follows_its_sweep_baseline_and_bootstrap(tmp_path):
    kit = Kit(RunConfig.from_params(run_dir=str(tmp_path), rl_steps=3))
    sweep = RollbackScores(Stage(Base(), "math"), Base(), "math", "qa", "random", (0.1, 1.0))
    spec = RollbackChanges(sweep, Stage(Base(), "math"))
    variants = [RollbackChanges(dataclasses.replace(sweep, seed=1), sweep.current),
                RollbackChanges(sweep, Base()), RollbackChanges(sweep, sweep.current, n_boot=500),
                RollbackChanges(sweep, sweep.current, seed=3)]
    assert len({kit.key(s) for s in [spec, *variants]}) == 5
    assert kit.key(RollbackChanges(sweep, Stage(Base(), "math"))) == kit.key(spec)
    assert [s.kind for s in spec.inputs()] == ["rollback", "scores"]


def test_rollback_changes_round_trip_exactly(tiny):
    objective = ObjectiveBatch(Base(), "cw", prompts=4, samples=2, min_score=0.0)
    moved = GradientSteps(Base(), objective, steps=2, lr=0.05)
    sweep = RollbackScores(moved, Base(), "cw", "math", "random", (0.5, 1.0))
    spec = RollbackChanges(sweep, moved, n_boot=200)
    artifact = tiny.get(spec, progress=False)
    table = tiny.open(spec)
    expected = sweep_changes(tiny.item_results(moved)[["domain", "item", "score"]], tiny.open(sweep), n_boot=200)
    pd.testing.assert_frame_equal(table, expected, check_exact=True)
    assert list(table.columns) == list(CHANGE_COLUMNS) and artifact.metrics["rows"] == len(table) == 8
    # the full rollback is the reference model: its changes are those from `moved` to the base
    full = table[table["fraction"] == 1.0].drop(columns="fraction").reset_index(drop=True)
    direct = paired_changes(tiny.item_results(moved), tiny.item_results(Base()), n_boot=200)
    pd.testing.assert_frame_equal(full, direct[list(CHANGE_COLUMNS[1:])], check_exact=True)


def test_sweep_changes_stacks_the_paired_change_of_each_budget():
    """Two budgets of a 0/1 domain on four items: the changes are the hand-counted mean differences."""
    baseline = pd.DataFrame({"domain": "math", "item": [0, 1, 2, 3], "score": [1.0, 0.0, 0.0, 1.0]})
    sweep = pd.DataFrame({"fraction": [0.1] * 4 + [0.5] * 4, "domain": "math", "item": [3, 2, 1, 0] * 2,
                          "score": [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]})
    table = sweep_changes(baseline, sweep, n_boot=100)
    assert table["fraction"].tolist() == [0.1, 0.5]
    assert table["before"].tolist() == [0.5, 0.5] and table["after"].tolist() == [1.0, 0.0]
    assert table["diff"].tolist() == [0.5, -0.5]
    assert (table["ci_low"] <= table["diff"]).all() and (table["diff"] <= table["ci_high"]).all()
