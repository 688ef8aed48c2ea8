"""Notebook 03's theory premises (mdrl_lib.perturbation), the derivation's inequality check
(mdrl_lib.quadratic) and the new C5 / C6-theory records: each premise on a case where it must hold and one where
it must fail, the first-order split over a path, the Lanczos Ritz bound."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from mdrl_lib import perturbation as pt
from mdrl_lib import quadratic
from mdrl_lib.claims.nb03 import check_c5, check_c6_theory, premises_table, second_order_share


# ---- stationarity ----------------------------------------------------------------------------------

def test_drift_ratio_is_the_stationary_point_offset_on_a_quadratic():
    # L = 1/2 mu x^2 - g x on S (1-d): the stationary point is g / mu; theta_A* = 0, delta_s = 2
    mu, g, delta = 0.5, 0.1, 2.0
    ratio = pt.drift_ratio(g, mu, delta)
    assert ratio == pytest.approx((g / mu) / delta)  # offset of the true minimum in units of ||P_S delta||
    assert pt.drift_ratio(g, 0.0, delta) == math.inf and pt.drift_ratio(g, mu, 0.0) == math.inf


def test_stationarity_premises_hold_at_a_minimum_and_fail_when_drift_dominates():
    holds = pt.stationarity_premises(1e-4, 1e-5, 1.0, mu=0.5, delta_s_norm=0.1, max_ratio=0.1)
    assert [p["holds"] for p in holds] == [True, True]
    fails = pt.stationarity_premises(3.61, 0.278, 3.12, mu=0.6, delta_s_norm=0.0346, max_ratio=0.1)
    assert [p["holds"] for p in fails] == [False, False]
    assert fails[1]["value"] == pytest.approx(0.278 / (0.6 * 0.0346))


# ---- locality ----------------------------------------------------------------------------------------

def _segment(measured, predicted):
    return pd.DataFrame({"t": [0.5, 1.0], "measured": [measured / 4, measured], "predicted": [predicted / 4, predicted]})


def test_locality_holds_for_an_exact_quadratic_and_fails_far_away():
    world = quadratic.make_quadratic_world(residual=0.1, seed=1)
    exact = world.taylor_table([0.5, 1.0])
    along = pd.DataFrame({"step": [0, 10, 20], "measured": [0.0, exact["measured"][0], exact["measured"][1]],
                          "predicted": [0.0, exact["predicted"][0], exact["predicted"][1]]})
    premise = pt.locality_premise(exact, along, rtol=0.1)
    assert premise["holds"] and premise["value"] == pytest.approx(0.0, abs=1e-9)
    far = pt.locality_premise(_segment(0.0967, 0.0156), rtol=0.1)
    assert not far["holds"] and far["value"] == pytest.approx((0.0967 - 0.0156) / 0.0967)


def test_locality_along_the_path_is_relative_to_the_largest_change():
    along = pd.DataFrame({"step": [0, 1, 2], "measured": [0.0, 1e-9, 1.0], "predicted": [0.0, 2e-9, 0.95]})
    error = pt.locality_error(_segment(1.0, 0.95), along)
    assert error["along"] == pytest.approx(0.05) and error["t1"] == pytest.approx(0.05)  # no blow-up near 0
    bad = pt.locality_error(_segment(1.0, 0.95), along.assign(predicted=[0.0, 0.5, 0.95]))
    assert bad["along"] == pytest.approx(0.5) and bad["worst"] == pytest.approx(0.5)
    with pytest.raises(KeyError, match="predicted"):
        pt.locality_error(pd.DataFrame({"measured": [1.0]}))


# ---- curvature, back-flow, plain GD ----------------------------------------------------------------------

def test_curvature_premise_holds_for_positive_mu_and_fails_for_indefinite_h():
    assert pt.curvature_premise(0.6)["holds"] and not pt.curvature_premise(-0.2)["holds"]
    assert not pt.curvature_premise(0.0)["holds"]  # strictly positive


def test_backflow_is_zero_when_s_is_invariant_and_large_when_coupled():
    # S = first coordinate; H block-diagonal (invariant) or with a coupling c
    delta = np.array([1.0, 2.0])
    p_s = np.diag([1.0, 0.0])
    for c, holds in ((0.0, True), (3.0, False)):
        h = np.array([[2.0, c], [c, 1.0]])
        curvature = np.linalg.norm(p_s @ h @ p_s @ delta)
        backflow = np.linalg.norm(p_s @ h @ (np.eye(2) - p_s) @ delta)
        premise = pt.backflow_premise(backflow, curvature, max_ratio=0.1)
        assert premise["holds"] is holds
        assert premise["value"] == pytest.approx(abs(c) * 2.0 / 2.0)


def test_plain_gd_premise_holds_for_the_gd_refresh_and_fails_for_adam_or_a_large_rate():
    assert pt.plain_gd_premise("gd", "constant", 1.0)["holds"]
    assert not pt.plain_gd_premise("adam", "linear", 1.0)["holds"]  # the kit's real refresh
    assert not pt.plain_gd_premise("gd", "linear", 0.5)["holds"]
    assert not pt.plain_gd_premise("gd", "constant", 1.9)["holds"]
    with pytest.raises(ValueError, match="valid: gd, adam"):
        pt.plain_gd_premise("sgd", "constant", 1.0)


# ---- damage and the objective --------------------------------------------------------------------------

def test_paired_damage_by_hand_and_its_premise():
    before = [1, 1, 1, 1, 0, 1, 1, 1]
    after = [0, 0, 1, 0, 0, 1, 0, 1]
    d = pt.paired_damage(before, after)
    diff = np.array(before) - np.array(after)
    assert d["drop"] == pytest.approx(0.5) and d["se"] == pytest.approx(diff.std(ddof=1) / math.sqrt(8))
    assert d["standard_errors"] == pytest.approx(0.5 / d["se"])
    assert not pt.damage_premise(before, after, min_standard_errors=3.0)["holds"]  # 2.6 SE
    big = pt.damage_premise([1] * 40 + [0] * 10, [0] * 30 + [1] * 10 + [0] * 10, min_standard_errors=3.0)
    assert big["holds"]
    assert pt.paired_damage([1, 0], [1, 0])["standard_errors"] == 0.0
    with pytest.raises(ValueError, match="paired"):
        pt.paired_damage([1, 0, 1], [1, 0])


def test_objective_premises_hold_when_the_loss_mirrors_the_score_and_fail_otherwise():
    loss = [0.07, 0.08, 0.09, 0.10, 0.12, 0.15]
    score = [0.88, 0.87, 0.86, 0.85, 0.84, 0.83]
    tracked = pt.objective_tracking(loss, score)
    assert tracked["rank_correlation"] == pytest.approx(-1.0) and tracked["sign_agreement"] == 1.0
    assert all(p["holds"] for p in pt.objective_premises(loss, score, alpha=0.05, min_sign_agreement=0.5))
    same_way = pt.objective_premises(loss, score[::-1], alpha=0.05, min_sign_agreement=0.5)
    assert not any(p["holds"] for p in same_way)
    flat = pt.objective_tracking(loss, [0.5] * 6)
    assert flat["p_value"] == 1.0 and math.isnan(flat["sign_agreement"])


# ---- the first-order term over a path, the Ritz bound, the non-shared control ---------------------------

def test_first_order_segments_sum_to_the_first_order_term():
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(7, generator=gen, dtype=torch.float64)
    points = [torch.zeros(7, dtype=torch.float64)] + [torch.randn(7, generator=gen, dtype=torch.float64)
                                                      for _ in range(4)]
    table = pt.first_order_segments(g, points)
    assert table["first_order"].iloc[-1] == pytest.approx(float(g @ points[-1]))
    assert table["cosine"].abs().max() <= 1.0
    orthogonal = pt.first_order_segments(torch.tensor([1.0, 0.0]), [torch.zeros(2), torch.tensor([0.0, 3.0])])
    assert orthogonal["cosine"].iloc[0] == 0.0 and orthogonal["first_order"].iloc[0] == 0.0


def test_lanczos_ritz_values_bracket_the_spectrum_and_prove_indefiniteness():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((30, 30)))
    values = np.linspace(-2.0, 10.0, 30)
    h = (q * values) @ q.T
    ritz = pt.lanczos_ritz(lambda v: h @ v, 30, steps=8, seed=1)
    assert len(ritz) == 8 and ritz[0] >= values[0] - 1e-9 and ritz[-1] <= values[-1] + 1e-9
    assert ritz[0] < 0  # a short run already finds the negative curvature
    assert pt.lanczos_ritz(lambda v: h @ v, 30, steps=30, seed=1) == pytest.approx(values, abs=1e-8)
    positive = (q * np.linspace(0.5, 10.0, 30)) @ q.T
    assert pt.lanczos_ritz(lambda v: positive @ v, 30, steps=8)[0] > 0


def test_nonshared_channel_draws_avoid_the_shared_channels():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=32, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=1))
    shared = {("model.layers.0", 1), ("model.layers.1", 5), ("model.layers.1", 6)}
    draws = pt.nonshared_channel_draws(model, shared, draws=10, seed=3)
    assert len(draws) == 10 and all(len(d) == 3 and not (d & shared) for d in draws)
    assert draws == pt.nonshared_channel_draws(model, shared, draws=10, seed=3)  # seeded
    with pytest.raises(ValueError, match="outside"):
        pt.nonshared_channel_draws(model, {(f"model.layers.{i}", c) for i in range(2) for c in range(10)}, 1)


# ---- the derivation's inequality (can fail) ------------------------------------------------------------

def test_contraction_inequality_holds_under_the_premises_and_fails_otherwise():
    import sympy as sp

    margin = quadratic.contraction_margin()
    alpha, mu, lam = margin["symbols"]
    assert sp.simplify(margin["factored"] - alpha * (lam - mu) * (2 - alpha * lam - alpha * mu)) == 0
    cases = quadratic.contraction_cases().set_index("case")
    assert cases["holds"].tolist() == [True, False, False]
    assert cases["worst_ratio"].iloc[0] <= 1 + 1e-9 and (cases["worst_ratio"].iloc[1:] > 1).all()
    # at alpha = 1/lambda_max and equal eigenvalues mu the bound is attained exactly
    tight = quadratic.contraction_holds([0.5] * 4, alpha=0.25, mu=0.5)
    assert tight["holds"] and tight["worst_ratio"] == pytest.approx(1.0)


# ---- the records -----------------------------------------------------------------------------------------

def _shares(top=0.9, random_max=0.01):
    return pd.DataFrame({"r": [1, 2], "top": [0.5, top], "random_mean": [0.0, 0.0], "random_max": [0.0, random_max]})


STAGE = {"measured": 1.0, "first_order": 0.1, "second_order": 0.85, "predicted": 0.95}


def test_c5_is_judged_on_the_stage_with_its_premises_and_the_nonshared_control():
    holds = [pt.curvature_premise(1.0)]
    check = check_c5(STAGE, _shares(), r=2, coordinates_part=0.8, nonshared_parts=[0.1] * 10, premises=holds)
    assert check.verdict == "supported" and check.tested == "mechanism"
    assert check.figures["second_order_share"] == pytest.approx(second_order_share(1.0, 0.1, 0.85))
    beaten = check_c5(STAGE, _shares(), r=2, coordinates_part=0.8, nonshared_parts=[0.1] * 9 + [0.85])
    assert beaten.verdict == "not supported" and "not above every non-shared" in beaten.why
    first = check_c5({**STAGE, "first_order": 0.6, "second_order": 0.35}, _shares(), r=2, coordinates_part=0.8,
                     nonshared_parts=[0.1] * 10)
    assert first.verdict == "not supported" and "share of the terms" in first.why
    far = pt.locality_premise(_segment(0.0967, 0.0156), rtol=0.1)
    untestable = check_c5(STAGE, _shares(), r=2, coordinates_part=0.8, nonshared_parts=[0.1] * 10, premises=[far])
    assert untestable.verdict == "not testable here" and untestable.figures["verdict_if_premises_held"] == "supported"
    assert "locality" in untestable.why
    table = premises_table([untestable])
    assert table["holds"].tolist() == [False] and table[["claim", "check"]].iloc[0].tolist() == [
        "C5", "second-order-subspace"]


def test_c6_theory_records_its_premises():
    bound = [pt.contraction_bound(2.0, 0.1, t, 1.0) for t in range(5)]
    fine = check_c6_theory(bound, 2.0, 0.1, premises=[pt.plain_gd_premise("gd", "constant", 1.0)])
    assert fine.verdict == "supported" and fine.tested == "mechanism"
    adam = check_c6_theory(bound, 2.0, 0.1, premises=[pt.plain_gd_premise("adam", "linear", 1.0)])
    assert adam.verdict == "not testable here" and "plain GD" in adam.why


def test_random_subspaces_at_the_last_rank_only_match_the_full_computation():
    from mdrl_lib.perturbation import captured_shares

    gen = torch.Generator().manual_seed(1)
    m = torch.randn(12, 12, generator=gen, dtype=torch.float64)
    h = m @ m.T / 12
    calls = []

    def hvp_fn(v):
        calls.append(1)
        return h @ v

    top = torch.linalg.eigh(h)[1].flip(1)[:, :4]
    deltas = {"x": torch.randn(12, generator=gen, dtype=torch.float64),
              "y": torch.randn(12, generator=gen, dtype=torch.float64)}
    full = captured_shares(deltas, top, lambda v: h @ v, n_random=10, seed=2)
    cheap = captured_shares(deltas, top, hvp_fn, n_random=10, seed=2, random_last_only=True)
    assert len(calls) == 4 + 10 * 2 + 2  # top gram, one product per draw and displacement, the totals
    for name in deltas:
        assert cheap[name]["top"].tolist() == pytest.approx(full[name]["top"].tolist())
        for column in ("random_mean", "random_max", "random_min"):
            assert cheap[name][column].iloc[-1] == pytest.approx(full[name][column].iloc[-1])
            assert cheap[name][column].iloc[:-1].isna().all()


def test_tracking_text_says_when_the_score_does_not_move():
    from mdrl_lib.claims.nb03 import tracking_text

    moving = {"rank_correlation": -0.9, "p_value": 0.001, "sign_agreement": 0.8, "k": 11, "segments": 9}
    still = {"rank_correlation": float("nan"), "p_value": 1.0, "sign_agreement": float("nan"), "k": 4, "segments": 0}
    text = tracking_text({"default rate": moving, "local": still}, "Math")
    assert "default rate: L_A tracks Math's held-out score over 11 checkpoints" in text
    assert "local: Math's held-out score does not move over the 4 checkpoints" in text and "nan" not in text
