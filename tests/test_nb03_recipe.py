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
    a = recipe.analyses(recipe.Params(**{"perturbation_pair": "math,qa", **options}))
    return {"hvp": kit.key(a.hvp_check), "controlled": kit.key(a.controlled), "routes": kit.key(a.routes),
            "subspace": kit.key(a.subspace),
            "shares": kit.key(a.shares), "curvature": kit.key(a.curvature),
            **{f"segment {n}": kit.key(s) for n, s in a.segments.items()},
            **{f"along {n}": kit.key(s) for n, s in a.along.items()},
            **{f"gd {n}": kit.key(s) for n, s in a.contraction.items()},
            **{f"path {n}": kit.key(s) for n, s in a.paths.items()}, "premises": kit.key(a.premises)}


def test_the_plan_names_every_trained_artifact_and_analysis_once(kit):
    params = recipe.Params(perturbation_pair="math,qa")
    planned = recipe.plan(kit, params)
    keys = [kit.key(s) for s in planned]
    assert len(keys) == len(set(keys)) == 6 + 15 + 3  # 15 analyses (14 on the LM, the controlled rung), 3 scorings
    assert set(analysis_keys(kit).values()) <= set(keys)
    s = recipe.specs(params)
    assert s.regimes == {"default rate": s.b_stage, "local": s.local_stage}
    assert params.titles == ("Math", "QA") and recipe.Params(perturbation_pair="code,cw").titles == ("Code", "CW")
    assert not any(kit.store.get(k) for k in keys)  # keys only: nothing was built


def test_an_auto_pair_waits_for_the_chain_and_must_be_settled_first(kit):
    from mdrl_lib import pairs
    from mdrl_lib.config import ConfigError
    from mdrl_lib.plan import Pending

    params = recipe.Params()
    assert params.perturbation_pair == "math,auto"
    with pytest.raises(ConfigError, match="recipe.resolve"):
        params.pair
    planned = recipe.plan(kit, params)
    assert isinstance(planned[-1], Pending) and planned[-1].needs == tuple(planned[:-1])
    assert [kit.key(s) for s in planned[:-1]] == [kit.key(s) for s in pairs.prerequisites(kit, kit.config.order)]
    assert recipe.resolve(kit, params, build=False) is None  # nothing is trained to list a plan
    given = recipe.Params(perturbation_pair="math,qa")
    assert recipe.resolve(kit, given, build=False) is given


@pytest.mark.parametrize("option, value, moved", [
    ("taylor_points", 6, {"segment default rate", "segment local"}),
    ("subspace_rank", 8, {"subspace", "shares", "gd default rate", "gd local", "premises", "controlled"}),
    ("random_subspaces", 12, {"shares", "controlled"}),
    ("nonshared_draws", 12, {"premises", "controlled"}),
    ("gd_steps", 10, {"gd default rate", "gd local"}),
    ("gd_rate_scale", 1.5, {"gd default rate", "gd local"}),
    ("gd_until_bound", 0.5, {"gd default rate", "gd local"}),
    ("conflict_route_prompts", 50, {"routes", "subspace", "shares", "gd default rate", "gd local", "premises"}),
    ("local_lr", 2e-5, {"segment local", "along local", "shares", "gd local", "path local", "premises"}),
    ("objective_prompts", 32, {"hvp", "subspace", "shares", "curvature", "segment default rate", "segment local",
                               "along default rate", "along local", "gd default rate", "gd local",
                               "path default rate", "path local", "premises"}),
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
    params = recipe.Params(perturbation_pair="math,qa")
    a = recipe.analyses(params)

    def segment(measured):
        return pd.DataFrame({"t": [0.5, 1.0], "measured": [measured / 4, measured], "first_order": [0.1, 0.2],
                             "second_order": [0.3, 0.4], "predicted": [measured / 4, measured],
                             "relative_error": [0.0, 0.0]})

    def along(measured):
        return pd.DataFrame({"step": [0, 20], "measured": [0.0, measured], "predicted": [0.0, 0.6]})

    def path(drop):
        table = pd.DataFrame({"step": [0, 20, 40], "L_A": [0.1, 0.2, 0.3], "score": [0.9, 0.8, 0.7],
                              "first_order": [0.0, 0.1, 0.2], "cosine": [0.0, 0.01, 0.02]})
        return {"table": table, "items": {0: [1.0] * 50, 20: [1.0] * 50, 40: [0.0] * drop + [1.0] * (50 - drop)}}

    stage = {"h_delta_norm": 1.0, "delta_s_norm": 0.1, "curvature_term": 1.0, "backflow": 0.05,
             "nonshared_parts": [0.01] * 10}
    premises = {"grad_norm": 0.01, "grad_s_norm": 0.001, "mu": 0.5, "stages": [stage, {**stage, "backflow": 5.0}]}
    shares = [{"shares": pd.DataFrame({"r": [16]}), "coordinates_part": part} for part in (0.25, 0.75)]
    results = {a.segments["default rate"]: segment(1.0), a.segments["local"]: segment(2.0), a.shares: shares,
               a.along["default rate"]: along(0.6), a.along["local"]: along(3.0),
               a.paths["default rate"]: path(20), a.paths["local"]: path(0), a.premises: premises, a.curvature: 10.0,
               a.contraction["default rate"]: {"to_fixed": [1.0, 0.5], "to_path": [1.0, 0.4], "mu": 0.5, "alpha": 0.1},
               a.contraction["local"]: {"to_fixed": [2.0, 1.5], "to_path": [2.0, 1.4], "mu": 0.5, "alpha": 0.1}}
    kit = CannedKit(results)
    c5 = recipe.c5_inputs(kit, params)
    assert c5["stage"]["measured"] == 1.0 and c5["local"]["measured"] == 2.0 and c5["r"] == 16
    assert c5["coordinates_part"] == 0.25 and c5["shares"] is shares[0]["shares"]  # judged: the default-rate stage
    assert [p["holds"] for p in c5["premises"]] == [True, True, True, True]
    c6 = recipe.c6_theory_inputs(kit, params)
    assert [i["name"] for i in c6] == ["gd-contraction-local", "gd-contraction-default-rate"]
    assert c6[0]["distance_s"] == [2.0, 1.5] and c6[0]["drift_corrected"] == [2.0, 1.4]
    local = {p["name"].split(":")[0]: p["holds"] for p in c6[0]["premises"]}
    assert local["weak back-flow"] is False and local["damage"] is False and local["locality"] is False
    assert local["plain GD at a constant rate with α λ_max <= threshold"] is True  # alpha lambda_max = 1
    assert all(p["holds"] for p in c6[1]["premises"])
    with pytest.raises(ValueError, match="valid: default rate, local"):
        recipe.theory_premises(kit, params, "fast")


def test_the_lm_tradeoff_sets_both_stages_on_the_two_premises(kit):
    """lm_tradeoff from canned analyses: each row's figures are the premise functions' on that stage's tables."""
    import numpy as np
    import pandas as pd

    from mdrl_lib import perturbation as pt

    params = recipe.Params(perturbation_pair="math,qa")
    a, s = recipe.analyses(params), recipe.specs(params)
    segment = {"local": pd.DataFrame({"t": [1.0], "measured": [1.0], "predicted": [1.05]}),
               "default rate": pd.DataFrame({"t": [1.0], "measured": [1.0], "predicted": [1.5]})}
    along = {n: pd.DataFrame({"step": [0, 10], "measured": [0.0, 1.0], "predicted": [0.0, 1.0]}) for n in segment}
    items = {"local": {0: [1.0, 0.0] * 50, 60: [1.0, 0.0] * 50},
             "default rate": {0: [1.0] * 100, 200: [1.0] * 60 + [0.0] * 40}}
    results = {a.premises: {"stages": [{"delta_norm": 2.0}, {"delta_norm": 0.5}]}}
    for name in segment:
        results.update({a.segments[name]: segment[name], a.along[name]: along[name],
                        a.paths[name]: {"items": items[name]}})

    class Canned:
        config = kit.config

        def open(self, spec):
            return results[spec]

        def item_results(self, spec):
            qa = {s.expert: [0.0] * 30, s.local_stage: [0.0] * 29 + [1.0], s.b_stage: [1.0] * 30}[spec]
            return pd.DataFrame({"domain": ["qa"] * 30, "score": qa})

    table = recipe.lm_tradeoff(Canned(), params, theta_norm=100.0)
    assert list(table["regime"]) == ["local LM", "default LM"]
    assert list(table["rate"]) == [params.local_lr, kit.config.rl.lr]
    assert np.allclose(table["displacement"], [0.005, 0.02])  # the premises' stages are (default rate, local)
    assert np.allclose(table["locality error"], [0.05, 0.5])
    assert table.loc[0, "damage (paired SEs)"] == 0.0
    assert table.loc[1, "damage (paired SEs)"] == pytest.approx(pt.paired_damage(items["default rate"][0],
                                                                                 items["default rate"][200])["standard_errors"])
    assert table.loc[1, "B's gain"] == pytest.approx(1.0) and table.loc[0, "B's gain"] == pytest.approx(1 / 30)
