"""Notebook 03's recipe: the analyses it plans for each parameter, and the claim checks' inputs it assembles
from them (read through a stand-in kit that serves canned results)."""
from __future__ import annotations

import pandas as pd
import pytest

from mdrl_lib.config import RunConfig
from mdrl_lib.kit import Kit
from mdrl_lib.recipes import nb03 as recipe


@pytest.fixture
def kit(tmp_path):
    return Kit(RunConfig.from_params(run_dir=str(tmp_path)))


def analysis_keys(kit, **options):
    a = recipe.analyses(recipe.Params(**options))
    return {"hvp": kit.key(a.hvp_check), "routes": kit.key(a.routes), "subspace": kit.key(a.subspace),
            "shares": kit.key(a.shares), "curvature": kit.key(a.curvature),
            **{f"segment {n}": kit.key(s) for n, s in a.segments.items()},
            **{f"along {n}": kit.key(s) for n, s in a.along.items()},
            **{f"gd {n}": kit.key(s) for n, s in a.contraction.items()}}


def test_the_plan_names_every_trained_artifact_and_analysis_once(kit):
    params = recipe.Params()
    planned = recipe.plan(kit, params)
    keys = [kit.key(s) for s in planned]
    assert len(keys) == len(set(keys)) == 6 + 11
    assert set(analysis_keys(kit).values()) <= set(keys)
    s = recipe.specs(params)
    assert s.regimes == {"default rate": s.b_stage, "local": s.local_stage}
    assert params.titles == ("Math", "QA") and recipe.Params(perturbation_pair="code,cw").titles == ("Code", "CW")
    assert not any(kit.store.get(k) for k in keys)  # keys only: nothing was built


@pytest.mark.parametrize("option, value, moved", [
    ("taylor_points", 6, {"segment default rate", "segment local"}),
    ("subspace_rank", 8, {"subspace", "shares", "gd default rate", "gd local"}),
    ("random_subspaces", 7, {"shares"}),
    ("gd_steps", 10, {"gd default rate", "gd local"}),
    ("gd_rate_scale", 1.5, {"gd default rate", "gd local"}),
    ("conflict_route_prompts", 50, {"routes", "subspace", "shares", "gd default rate", "gd local"}),
    ("local_lr", 2e-5, {"segment local", "along local", "shares", "gd local"}),
    ("objective_prompts", 32, {"hvp", "subspace", "shares", "curvature", "segment default rate", "segment local",
                               "along default rate", "along local", "gd default rate", "gd local"}),
    ("real_refresh_steps", 10, set()),
])
def test_each_parameter_moves_the_analyses_it_enters(kit, option, value, moved):
    before, after = analysis_keys(kit), analysis_keys(kit, **{option: value})
    assert {name for name in before if before[name] != after[name]} == moved


class CannedKit:
    """Serves ``kit.open`` from a table of canned results, by spec."""

    def __init__(self, results):
        self.results = results

    def open(self, spec):
        return self.results[spec]


def test_the_claim_inputs_come_from_the_right_regimes():
    params = recipe.Params()
    a = recipe.analyses(params)

    def segment(measured):
        return pd.DataFrame({"t": [0.5, 1.0], "measured": [measured / 4, measured], "first_order": [0.1, 0.2],
                             "second_order": [0.3, 0.4], "predicted": [0.4, 0.6], "relative_error": [0.0, 0.0]})

    shares = [{"shares": pd.DataFrame({"r": [16]}), "coordinates_part": part} for part in (0.25, 0.75)]
    results = {a.segments["default rate"]: segment(1.0), a.segments["local"]: segment(2.0), a.shares: shares,
               a.contraction["default rate"]: {"to_fixed": [1.0, 0.5], "to_path": [1.0, 0.4], "mu": 0.5, "alpha": 0.1},
               a.contraction["local"]: {"to_fixed": [2.0, 1.5], "to_path": [2.0, 1.4], "mu": 0.5, "alpha": 0.1}}
    kit = CannedKit(results)
    c5 = recipe.c5_inputs(kit, params)
    assert c5["local"]["measured"] == 2.0 and c5["far"]["measured"] == 1.0 and c5["r"] == 16
    assert c5["coordinates_part"] == 0.75 and c5["shares"] is shares[1]["shares"]  # the local stage is second
    assert recipe.shares_by_regime(kit, params)["default rate"] is shares[0]
    c6 = recipe.c6_theory_inputs(kit, params)
    assert [i["name"] for i in c6] == ["gd-contraction-local", "gd-contraction-default-rate"]
    assert c6[0] == {"distance_s": [2.0, 1.5], "mu": 0.5, "alpha": 0.1, "name": "gd-contraction-local",
                     "drift_corrected": [2.0, 1.4]}
