"""Claim checks C5 and C6 (theory) on hand-made numbers."""
import pandas as pd
import pytest

from mdrl_lib.claims import C5_MIN_SHARE, check_c5, check_c6_theory
from mdrl_lib.claims.nb03 import agreement_text, taylor_text
from mdrl_lib.perturbation import contraction_bound

LOCAL = {"measured": 1.34e-6, "first_order": -1.7e-7, "second_order": 1.53e-6, "predicted": 1.36e-6}


def _shares(top, random_max, random_mean=0.0):
    return pd.DataFrame({"r": [1, 2, 3], "top": top, "random_mean": [random_mean] * 3, "random_std": [0.01] * 3,
                         "random_max": random_max})


# ---- C5 ---------------------------------------------------------------------------------------------

CONTROLS = [0.001] * 10  # non-shared channel sets' part of the whole second-order term


def test_c5_supported_when_second_order_and_concentrated():
    check = check_c5(LOCAL, _shares([0.3, 0.6, 0.9], [0.01, 0.02, 0.03]), r=3, nonshared_parts=CONTROLS)
    assert check.supported is True and check.claim == "C5" and check.tested == "mechanism"
    assert check.figures["top_share"] == 0.9 and check.figures["random_share_max"] == 0.03
    assert check.figures["relative_error"] == pytest.approx(0.02 / 1.34)
    assert "0.9 of the whole second-order damage (>= 0.5" in check.why


def test_c5_first_order_dominating_is_not_support():
    first = {"measured": 1.0, "first_order": 0.95, "second_order": 0.05, "predicted": 1.0}
    check = check_c5(first, _shares([0.3, 0.6, 0.9], [0.01, 0.02, 0.03]), r=3, nonshared_parts=CONTROLS)
    assert check.supported is False and "second order's share of the terms 0.05 <= 0.5" in check.why


def test_c5_a_large_remainder_is_not_second_order():
    far = {"measured": 0.32, "first_order": 0.003, "second_order": 0.01, "predicted": 0.013}
    check = check_c5(far, _shares([0.3, 0.6, 0.9], [0.01, 0.02, 0.03]), r=3, nonshared_parts=CONTROLS)
    assert check.supported is False and check.figures["second_order_share"] == pytest.approx(0.01 / 0.32)


def test_c5_share_must_reach_the_minimum_and_beat_every_random_subspace():
    low = check_c5(LOCAL, _shares([0.1, 0.2, C5_MIN_SHARE - 0.01], [0.0, 0.0, 0.0]), r=3, nonshared_parts=CONTROLS)
    assert low.supported is False and "(< 0.5" in low.why
    beaten = check_c5(LOCAL, _shares([0.3, 0.6, 0.9], [0.01, 0.02, 0.95]), r=3, nonshared_parts=CONTROLS)
    assert beaten.supported is False and "not above every random" in beaten.why
    at_r1 = check_c5(LOCAL, _shares([0.3, 0.6, 0.9], [0.01, 0.02, 0.03]), r=1, nonshared_parts=CONTROLS)
    assert at_r1.supported is False and at_r1.figures["top_share"] == 0.3
    uncontrolled = check_c5(LOCAL, _shares([0.3, 0.6, 0.9], [0.01, 0.02, 0.03]), r=3)
    assert uncontrolled.supported is False  # without the non-shared control the subspace is not shown special


def test_c5_not_testable_without_damage_and_bad_inputs_are_named():
    healed = dict(LOCAL, measured=-1e-7)
    assert check_c5(healed, _shares([0.3, 0.6, 0.9], [0.0] * 3), r=3).supported is None
    with pytest.raises(KeyError, match="predicted"):
        check_c5({"measured": 1.0, "first_order": 0.0, "second_order": 1.0}, _shares([1] * 3, [0] * 3), r=3)
    with pytest.raises(ValueError, match="r=5"):
        check_c5(LOCAL, _shares([0.3, 0.6, 0.9], [0.0] * 3), r=5)


def test_c5_reports_the_local_stage_and_the_path():
    local = {"measured": 3.5e-5, "first_order": -3.5e-5, "second_order": 7e-5}
    path = pd.DataFrame({"step": [0, 20, 40], "first_order": [0.0, -0.02, -0.019], "cosine": [0.0, -0.012, 0.004]})
    check = check_c5(LOCAL, _shares([0.3, 0.6, 0.9], [0.01] * 3), r=3, local=local, path=path,
                     nonshared_parts=CONTROLS)
    assert check.figures["local_second_order_share"] == pytest.approx(7 / 10.5)
    assert check.figures["path_first_order"] == -0.019 and check.figures["path_cosine_max"] == 0.012
    assert "local stage (its own record judges it)" in check.measured


# ---- C6 (theory) ------------------------------------------------------------------------------------

def test_c6_exact_geometric_contraction_meets_the_bound():
    mu, alpha = 2.0, 0.1
    path = [contraction_bound(mu, alpha, t, 1.0) for t in range(11)]  # exactly the bound: counts as support
    check = check_c6_theory(path, mu, alpha)
    assert check.supported is True and check.figures["bound_ratio"] == pytest.approx(0.8 ** 10)
    faster = check_c6_theory([1.0, 0.5, 0.1], mu, alpha)
    assert faster.supported is True


def test_c6_growth_or_slow_contraction_is_not_support():
    check = check_c6_theory([2.0e-4, 2.1e-4, 2.7e-4], mu=0.002, alpha=0.08, drift_corrected=[2e-4, 1.9e-4, 1.8e-4])
    assert check.supported is False and check.figures["measured_ratio"] == pytest.approx(1.35)
    assert check.figures["drift_corrected_ratio"] == pytest.approx(0.9)
    slow = check_c6_theory([1.0, 0.95, 0.9], mu=2.0, alpha=0.1)  # bound 0.64
    assert slow.supported is False


def test_c6_not_testable_without_curvature_or_component():
    assert check_c6_theory([1.0, 0.5], mu=-0.1, alpha=0.1).supported is None
    assert check_c6_theory([1.0, 0.5], mu=30.0, alpha=0.1).supported is None
    none = check_c6_theory([0.0, 0.0], mu=1.0, alpha=0.1)
    assert none.supported is None and none.figures["measured_ratio"] is None  # nan is recorded as None
    with pytest.raises(ValueError, match="two entries"):
        check_c6_theory([1.0], mu=1.0, alpha=0.1)
    with pytest.raises(ValueError, match="drift_corrected"):
        check_c6_theory([1.0, 0.5], mu=1.0, alpha=0.1, drift_corrected=[1.0])


# ---- the GD path the C6 check reads -----------------------------------------------------------------

def test_gd_trajectory_follows_the_closed_form_on_a_quadratic():
    import torch

    from mdrl_lib.perturbation import ParameterSpace, gd_trajectory

    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 1, bias=False).double()
    h = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 0.2]], dtype=torch.float64)
    a = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)

    def loss(model):
        d = model.weight.reshape(-1) - a
        return 0.5 * d @ h @ d

    space = ParameterSpace.from_model(layer)
    before = space.get(layer)
    start = torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64)
    path = gd_trajectory(loss, layer, space, start, alpha=0.3, steps=4)
    step = torch.eye(3, dtype=torch.float64) - 0.3 * h
    for t, theta in enumerate(path):
        assert torch.allclose(theta - a, torch.linalg.matrix_power(step, t) @ (start - a))
    assert torch.equal(space.get(layer), before)  # the model's weights are restored
    with pytest.raises(ValueError, match="alpha"):
        gd_trajectory(loss, layer, space, start, alpha=0.0, steps=1)


def test_captured_shares_equal_captured_share_for_each_delta_and_share_the_products():
    import torch

    from mdrl_lib.perturbation import captured_share, captured_shares

    gen = torch.Generator().manual_seed(1)
    m = torch.randn(12, 12, generator=gen, dtype=torch.float64)
    h = m @ m.T / 12
    calls = []

    def hvp_fn(v):
        calls.append(1)
        return h @ v

    values, vectors = torch.linalg.eigh(h)
    top = vectors.flip(1)[:, :4]
    deltas = {"x": torch.randn(12, generator=gen, dtype=torch.float64),
              "y": torch.randn(12, generator=gen, dtype=torch.float64)}
    together = captured_shares(deltas, top, hvp_fn, n_random=3, seed=2)
    assert len(calls) == (1 + 3) * 4 + 2
    for name, delta in deltas.items():
        alone = captured_share(delta, top, lambda v: h @ v, n_random=3, seed=2)
        pd.testing.assert_frame_equal(together[name], alone)
    # the top-r share is the closed form sum_{i<=r} lambda_i c_i^2 / delta^T H delta
    c = top.T @ deltas["x"]
    expected = (values.flip(0)[:4] * c ** 2).cumsum(0) / (deltas["x"] @ h @ deltas["x"])
    assert together["x"]["top"].to_numpy() == pytest.approx(expected.numpy())


def test_c5_a_subspace_dominant_only_on_few_coordinates_is_not_support():
    shares = _shares([0.3, 0.6, 1.03], [0.0, 0.0, 0.0004])
    check = check_c5(LOCAL, shares, r=3, coordinates_part=0.007, nonshared_parts=CONTROLS)
    assert check.supported is False and check.figures["share_of_whole"] == pytest.approx(1.03 * 0.007)
    assert check_c5(LOCAL, shares, r=3, coordinates_part=0.6, nonshared_parts=CONTROLS).supported is True


# ---- the narration of notebook 03 -----------------------------------------------------------------------

def _segment(measured, first, second):
    """A two-point Taylor table whose t = 1 row holds the given terms (exact at t = 1/2)."""
    return pd.DataFrame({"t": [0.5, 1.0], "measured": [first / 2 + second / 4, measured],
                         "first_order": [first / 2, first], "second_order": [second / 4, second], "predicted": [first / 2 + second / 4, first + second],
                         "relative_error": [0.0, abs(first + second - measured) / abs(measured)]})


def test_the_taylor_text_says_which_term_dominates_and_where_the_quadratic_fails():
    far, local = _segment(0.048, 0.0004, 0.037), _segment(0.00122, 0.00104, 0.000177)
    along = pd.DataFrame({"step": [0, 20, 40], "relative_error": [float("nan"), 0.05, 0.3]})
    text = taylor_text(far, local, along, displacement=0.027)
    first, second = text.splitlines()
    assert first.startswith("Default rate (the run's own stage, judged): B moved the weights by 2.7% of their norm.")
    assert "(22% off): this is far from local" in first and "holds up to t = 0.5 on the segment" in first
    assert first.endswith("first more than 10% off at step 40.")
    assert "(first dominates)" in second
    near = taylor_text(_segment(1.0, 0.1, 0.95), _segment(1.0, 0.1, 0.9), along.iloc[:2], displacement=0.001)
    assert "this is still local" in near and "(second dominates)" in near and near.splitlines()[0].endswith("segment.")


def _c5(measured=1.0, first=0.2, second=0.9, share=0.9, random_max=0.1, part=1.0, controls=(0.1,) * 10):
    stage = {"measured": measured, "first_order": first, "second_order": second, "predicted": first + second}
    local = {"measured": 3.5e-5, "first_order": -3.5e-5, "second_order": 7e-5}
    path = pd.DataFrame({"step": [0, 20], "first_order": [0.0, first], "cosine": [0.0, 0.01]})
    return check_c5(stage, _shares([0.3, 0.6, share], [0.0, 0.0, random_max]), r=3, coordinates_part=part,
                    nonshared_parts=list(controls), local=local, path=path)


def _real():
    return pd.DataFrame({"L_A": [0.1, 0.3, 0.2], "‖θ − θ_A*‖": [0.0, 1.0, 1.2],
                         "on S: ‖P_S(θ − θ_A*)‖": [0.0, 0.02, 0.03]}, index=["start", "after", "refresh"])


def test_the_agreement_text_follows_the_checks():
    c6 = check_c6_theory([1.0, 0.5], mu=1.0, alpha=0.1, name="gd-contraction-local", drift_corrected=[1.0, 0.4])
    agree = agreement_text(_c5(), [c6], displacement=0.02, coordinates=100, real=_real(), b_title="QA", refresh_steps=5)
    lines = agree.splitlines()
    assert lines[0].startswith("C5 (supported), second order at the run's rate (agrees)") and "Every premise holds" in lines[0]
    assert lines[1].startswith("C5, local stage (judged in its own record, [local LM])")
    assert lines[2].startswith("C5, the link to C3: g_A^T δ_B = 0.2")
    assert "the shared routes do hold more" in lines[3]
    assert lines[4].startswith("C6 theory, gd-contraction-local (supported)") and "0.4000" in lines[4]
    assert lines[5].startswith("Real refresh: L_A 0.3000 after QA -> 0.2000 after 5 GRPO steps (θ_A*: 0.1000)")
    disagree = agreement_text(_c5(first=0.95, second=0.05, part=0.01, random_max=0.95, controls=(0.5,) * 10), [c6],
                              displacement=0.001, coordinates=100, real=_real(), b_title="QA", refresh_steps=5)
    lines = disagree.splitlines()
    assert lines[0].startswith("C5 (not supported), second order at the run's rate (disagrees)")
    assert ": no better" in lines[3] and "do not hold more" in lines[3]
