"""Notebook 01's recipe: its plan of cached analyses, and the tables and claim inputs it assembles from them (on a
kit whose artifacts are made by hand, so nothing is trained)."""
from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from mdrl_lib import plots
from mdrl_lib.claims import C1_COLUMNS, check_c1, check_c2
from mdrl_lib.config import RunConfig
from mdrl_lib.domains.base import DOMAIN_NAMES
from mdrl_lib.edits import (DenseControlSparsity, EditSparsity, NeuronMagnitudes, RoundedScores, SparsityTables,
                            random_jaccard_expectation)
from mdrl_lib.kit import Kit
from mdrl_lib.recipes import nb01 as recipe
from mdrl_lib.specs import Base, Scores, Stage


def test_the_recipe_imports_neither_pandas_nor_torch():
    code = "import sys, mdrl_lib.recipes.nb01; print('pandas' in sys.modules, 'torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split() == [
        "False", "False"]


def test_the_plan_holds_every_analysis_the_notebook_opens(tmp_path):
    kit = Kit(RunConfig.from_params(run_dir=str(tmp_path), seed=3))
    params = recipe.Params(run_dir=str(tmp_path), seed=3, rate_grid="2e-4,1e-5,1e-6")
    entries = recipe.plan(kit, params)
    main = [e for e in entries if not isinstance(e, tuple)]
    grid = [spec for run, spec in (e for e in entries if isinstance(e, tuple)) if run == recipe.GRID_RUN]
    assert len(main) + len(grid) == len(entries)
    keys = [kit.key(s) for s in main]
    assert len(keys) == len(set(keys))
    for d in DOMAIN_NAMES:
        stage = Stage(Base(), d)
        analyses = (EditSparsity(Base(), stage), DenseControlSparsity(Base(), stage, seed=3),
                    NeuronMagnitudes(Base(), stage))
        for spec in analyses:
            assert kit.key(spec) in keys
    assert kit.key(NeuronMagnitudes(Base(), Stage(Base(), "math", rl_seed=1))) in keys
    assert kit.key(EditSparsity(Base(), Stage(Base(), "math", rl_seed=1))) not in keys  # C2 needs only magnitudes
    assert kit.key(RoundedScores(Base())) in keys
    assert {type(s).__name__ for s in grid} == {"Stage", "Scores", "EditSparsity", "DenseControlSparsity"}
    assert {s.after.lr for s in grid if isinstance(s, DenseControlSparsity)} == set(params.rates)
    assert all(s.seed == 3 for s in grid if isinstance(s, DenseControlSparsity))
    fewer = recipe.plan(kit, recipe.Params(run_dir=str(tmp_path), seed=3, second_seed_domains="", rate_grid="1e-5"))
    assert len(fewer) == len(entries) - 3 - 4 * 2
    assert not any(getattr(getattr(e, "after", None), "rl_seed", 0) for e in fewer if not isinstance(e, tuple))


# ---------------------------------------------------------------------------------- a kit of hand-made artifacts


def tables(share: float, relative_l2: float = 0.01) -> SparsityTables:
    """Tables of one tensor of 1000 entries: ``share`` unchanged in both precisions."""
    rows = pd.DataFrame([{"tensor": "w", "module": "w", "layer": 0, "precision": p, "entries": 1000,
                          "unchanged": round(share * 1000), "delta_sq": relative_l2 ** 2, "before_sq": 1.0}
                         for p in ("fp32", "bf16")]).astype({"layer": "Int64"})
    return SparsityTables(rows, pd.DataFrame())


def items(scores: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"domain": d, "item": i, "score": float(s)} for d, values in scores.items()
                         for i, s in enumerate(values)])


class HandKit:
    """A kit whose artifacts are given, by the real kit's keys (nothing is built)."""

    def __init__(self, config, artifacts):
        self.real, self.config, self.artifacts = Kit(config), config, artifacts

    def open(self, spec):
        return self.artifacts[self.real.key(spec)]

    def item_results(self, spec):
        return self.open(Scores(spec))

    def scores_of(self, spec):
        return self.item_results(spec).groupby("domain", as_index=False)["score"].mean()

    def get(self, spec):
        return SimpleNamespace(metrics=self.artifacts[("metrics", self.real.key(spec))])


def magnitudes(order):
    """Two layers of 10 neurons ranked by ``order`` (best first), as NeuronMagnitudes opens them."""
    values = torch.zeros(20)
    values[list(order)] = torch.arange(len(order), 0, -1, dtype=torch.float32)
    layers = {"layers.0": values[:10], "layers.1": values[10:]}
    return {"fp32": layers, "bf16": layers}


BASE_SCORES = {d: [0.0] * 4 + [1.0] * 4 for d in DOMAIN_NAMES}


@pytest.fixture
def hand(tmp_path, monkeypatch):
    params = recipe.Params(run_dir=str(tmp_path), top_fraction=0.2, rate_grid="1e-4,1e-6")
    config, grid_config = params.config, recipe.grid_config(params)
    main, grid = Kit(config), Kit(grid_config)
    artifacts = {main.key(Scores(Base())): items(BASE_SCORES),
                 main.key(RoundedScores(Base())): items({**BASE_SCORES, "math": [0.0] * 6 + [1.0] * 2})}
    orders = {"math": [0, 1, 2, 3], "code": [0, 1, 10, 11], "qa": [5, 6, 7, 8], "cw": [0, 5, 12, 13]}
    for i, d in enumerate(DOMAIN_NAMES):
        stage = Stage(Base(), d)
        artifacts[main.key(Scores(stage))] = items({**BASE_SCORES, d: [1.0] * (5 + i) + [0.0] * (3 - i)})
        artifacts[main.key(EditSparsity(Base(), stage))] = tables(0.1 * (i + 1))
        artifacts[main.key(DenseControlSparsity(Base(), stage))] = tables(0.05)
        artifacts[main.key(NeuronMagnitudes(Base(), stage))] = magnitudes(orders[d])
    seed1 = Stage(Base(), "math", rl_seed=1)
    artifacts[main.key(NeuronMagnitudes(Base(), seed1))] = magnitudes([0, 1, 2, 4])
    artifacts[main.key(Scores(seed1))] = items({**BASE_SCORES, "math": [1.0] * 8})
    grid_artifacts = {}
    for rate, share, gained in ((1e-4, 0.2, 8), (1e-6, 0.9, 3)):
        stage = recipe.grid_stage(params, rate)
        grid_artifacts[grid.key(EditSparsity(Base(), stage))] = tables(share, relative_l2=rate)
        grid_artifacts[grid.key(DenseControlSparsity(Base(), stage))] = tables(share - 0.01)
        grid_artifacts[grid.key(Scores(stage))] = items({**BASE_SCORES, "math": [0.0] * (8 - gained) + [1.0] * gained})
        grid_artifacts[("metrics", grid.key(stage))] = {"log": {"rewards": [0.0] * 10 + [0.5] * 5 + [1.0] * 10}}
    grid_kit = HandKit(grid_config, grid_artifacts)
    monkeypatch.setattr(recipe, "grid_kit", lambda p: grid_kit)
    return HandKit(config, artifacts), params


def test_the_default_regime_takes_each_experts_share_in_the_runs_precision_and_its_gain(hand):
    kit, params = hand
    inputs = recipe.c1_inputs(kit, params, "default")
    experts = inputs["experts"]
    assert inputs["name"] == "default-regime" and tuple(experts.columns) == C1_COLUMNS + ("dense_share",)
    assert inputs["seeds"] == 1 and experts["dense_share"].tolist() == pytest.approx([0.05] * 4)
    assert list(experts["expert"]) == list(DOMAIN_NAMES)
    assert experts["share"].tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert experts["gain"].tolist() == pytest.approx([1 / 8, 2 / 8, 3 / 8, 4 / 8])  # i + 1 of the 4 zeros now 1
    assert set(experts["regime"]) == {recipe.default_regime(params.config)} == {"fp32, lr 0.0002, 200 steps"}
    assert check_c1(**inputs).supported is False  # 40% unchanged at most


def test_the_paper_regime_measures_each_rate_from_the_rounded_base(hand):
    kit, params = hand
    inputs = recipe.c1_inputs(kit, params, "paper")
    experts = inputs["experts"]
    assert list(experts["regime"]) == ["bf16, lr 0.0001, 60 steps", "bf16, lr 1e-06, 60 steps"]
    assert experts["share"].tolist() == pytest.approx([0.2, 0.9])
    assert experts["dense_share"].tolist() == pytest.approx([0.19, 0.89])  # each rate's dense control
    # the rounded base scores 2 of 8 on Math (the plain base 4): rate 1e-6's 3 of 8 is a gain of 1/8 over it
    assert experts["gain"].tolist() == pytest.approx([6 / 8, 1 / 8])
    check = check_c1(**inputs)  # 1e-6 is sparse (0.9) but its 1/8 gain is not significant; a dense edit rounds to 0.89
    assert check.verdict == "not supported" and check.tested == "outcome"
    assert any("0.9 vs 0.89" in c and "rounding of a dense edit" in c for c in check.caveats)
    with pytest.raises(ValueError, match="unknown regime 'other'"):
        recipe.c1_inputs(kit, params, "other")


def test_the_grid_table_and_its_curves(hand):
    kit, params = hand
    table, curves, gains = recipe.grid_results(kit, params)
    assert list(table.index) == [1e-4, 1e-6]
    assert table.loc[1e-6, "unchanged, dense control in bf16"] == pytest.approx(0.89)
    assert table.loc[1e-4, "relative L2 of δ (fp32)"] == pytest.approx(1e-4)
    assert (table["reward, first 10 steps"] == 0.0).all() and (table["reward, last 10 steps"] == 1.0).all()
    assert len(curves) == 6 and set(curves["weights"]) == {"fp32 master", "bf16 checkpoint", "dense control, bf16"}
    assert gains["gain"].tolist() == pytest.approx(table["held-out gain"].tolist())
    assert recipe.rounding_gain(kit, params).gain == pytest.approx(-2 / 8)


def test_c2_inputs_are_the_top_neuron_jaccards_by_hand(hand):
    kit, params = hand
    inputs = recipe.c2_inputs(kit, params)  # k = 4 of 20
    assert inputs["cross_domain"]["code-math"] == pytest.approx(2 / 6)
    assert inputs["cross_domain"]["math-qa"] == 0.0 and inputs["cross_domain"]["code-cw"] == pytest.approx(1 / 7)
    assert inputs["same_domain"] == pytest.approx({"math": 3 / 5})
    assert inputs["random_expectation"] == pytest.approx(random_jaccard_expectation(20, 4))
    assert inputs["fraction"] == 0.2 and len(inputs["cross_domain"]) == 6
    assert check_c2(**inputs).figures["mean_same_domain"] == pytest.approx(0.6)


def test_the_scores_the_notebook_shows(hand, capsys):
    kit, params = hand
    scores = recipe.held_out_scores(kit)
    assert list(scores.index) == ["base", "Code expert", "Math expert", "QA expert", "CW expert"]
    assert scores.loc["Math expert", "Math"] == pytest.approx(6 / 8) and scores.loc["base", "QA"] == 0.5
    assert recipe.seed_scores(kit, params).iloc[0].tolist() == pytest.approx([6 / 8, 1.0])
    assert set(recipe.neuron_magnitudes(kit, params)["fp32"]) == {*DOMAIN_NAMES, "math (RL seed 1)"}
    import matplotlib

    matplotlib.use("Agg")
    pairs = recipe.reference_pairs(params)
    plots.overlap_drawer(recipe.neuron_magnitudes(kit, params)["fp32"], pairs, seed=0)(0.2)
    assert capsys.readouterr().out.startswith("top 20% = 4 of 20 neurons; mean Jaccard: cross-domain ")
