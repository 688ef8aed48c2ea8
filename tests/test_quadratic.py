"""The two-domain quadratic world: its curvature, B's support overlap, exact Taylor terms, captured
shares and the refresh against the contraction bound (and against the torch implementation)."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from mdrl_lib import perturbation as pt
from mdrl_lib.quadratic import make_quadratic_world, sweep_overlap


def test_curvature_is_low_rank_plus_diagonal_on_its_support():
    world = make_quadratic_world(dim=60, rank=3, support=10, curvature=(4.0, 1.0), eps=0.02, seed=1)
    assert np.allclose(world.h_a, world.h_a.T)
    assert np.allclose(world.basis.T @ world.basis, np.eye(3), atol=1e-12)
    off_support = np.setdiff1d(np.arange(60), world.curvature_support)
    assert np.all(world.basis[off_support] == 0)
    assert np.allclose(world.spectrum, [4.0, 2.0, 1.0])
    eig = np.sort(np.linalg.eigvalsh(world.h_a))[::-1]
    assert np.allclose(eig[:3], [4.02, 2.02, 1.02]) and np.allclose(eig[3:], 0.02)
    assert math.isclose(world.mu, 1.02) and math.isclose(world.max_curvature, 4.02)


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 1.0])
def test_b_support_overlap_is_what_was_asked(overlap):
    world = make_quadratic_world(dim=80, support=12, b_support=8, overlap=overlap, seed=2)
    assert np.count_nonzero(world.delta_b) == 8
    assert np.array_equal(np.flatnonzero(world.delta_b), world.b_support)
    assert world.overlap == round(overlap * 8) / 8


def test_raising_overlap_moves_one_coordinate_at_a_time():
    low = make_quadratic_world(b_support=10, overlap=0.3, seed=3)
    high = make_quadratic_world(b_support=10, overlap=0.4, seed=3)
    assert np.array_equal(low.h_a, high.h_a) and np.array_equal(low.a, high.a)
    assert np.count_nonzero(low.delta_b != high.delta_b) == 2  # one coordinate in, one out


def test_damage_equals_second_order_exactly_when_the_gradient_is_zero():
    world = make_quadratic_world(seed=4)
    assert np.allclose(world.gradient_a(world.theta_a), 0)
    for t in [0.1, 1.0, 3.0, -2.0]:
        assert world.first_order(t) == 0.0
        assert math.isclose(world.damage(t), world.second_order(t), rel_tol=1e-12)


def test_with_a_residual_damage_is_first_plus_second_order():
    world = make_quadratic_world(residual=0.5, seed=5)
    table = world.taylor_table([0.5, 1.0, 2.0])
    assert (table["first_order"].abs() > 1e-6).all()
    assert np.allclose(table["measured"], table["predicted"], rtol=1e-10, atol=1e-13)
    g = world.h_a @ (world.theta_a - world.a)
    assert np.allclose(table["first_order"], table["t"] * (g @ world.delta_b))


def test_damage_off_the_support_is_only_the_small_diagonal_and_grows_with_overlap():
    none = make_quadratic_world(overlap=0.0, eps=0.01, seed=6)
    assert math.isclose(none.damage(), 0.5 * 0.01 * float(none.delta_b @ none.delta_b), rel_tol=1e-12)
    assert none.subspace_second_order() == 0.0
    table = sweep_overlap([0.0, 0.5, 1.0], eps=0.01, seed=6)
    assert list(table["overlap"]) == [0.0, 0.5, 1.0]
    # one draw need not be monotone (new coordinates can cancel), the average over draws is
    mean = sum(sweep_overlap([0.0, 0.5, 1.0], eps=0.01, seed=s)["damage"] for s in range(30)) / 30
    assert mean.is_monotonic_increasing and mean[2] > 10 * mean[0]
    # the second-order term is the subspace term plus eps/2 |delta|^2 (S is invariant under H_A)
    full = make_quadratic_world(overlap=1.0, eps=0.01, seed=6)
    p = full.basis @ (full.basis.T @ full.delta_b)
    expected = full.subspace_second_order() + 0.5 * 0.01 * float((full.delta_b - p) @ (full.delta_b - p))
    assert math.isclose(full.second_order(), expected, rel_tol=1e-12)


def test_captured_share_top_rank_is_the_subspace_share_and_random_is_lower():
    world = make_quadratic_world(rank=4, overlap=1.0, eps=0.0, seed=7)
    table = world.captured_share(r_max=5, n_random=30, seed=0)
    # with eps = 0 the whole second-order damage lives in the rank-4 curvature subspace
    assert np.allclose(table["top"][3:], 1.0, atol=1e-10)
    assert (table["random_mean"] < 0.2).all()
    values, vectors = world.top_eigenpairs(4)
    c = vectors.T @ world.delta_b
    hand = np.cumsum(values * c ** 2) / float(world.delta_b @ world.h_a @ world.delta_b)
    assert np.allclose(table["top"][:4], hand, atol=1e-12)
    again = world.captured_share(r_max=5, n_random=30, seed=0)
    assert table.equals(again)


def test_refresh_attains_the_bound_when_the_curvature_on_s_is_flat():
    world = make_quadratic_world(rank=3, curvature=(2.0, 2.0), eps=0.05, seed=8)
    table = world.refresh(alpha=0.2, steps=20)
    assert np.allclose(table["distance_s"], table["bound"], rtol=1e-12)
    assert np.allclose(table["distance_complement"],
                       (1 - 0.2 * 0.05) ** table["step"] * table["distance_complement"][0], rtol=1e-12)


def test_refresh_stays_under_the_bound_and_agrees_with_the_torch_refresh():
    world = make_quadratic_world(rank=4, curvature=(5.0, 1.0), residual=0.0, seed=9)
    alpha = 1.0 / world.max_curvature
    table = world.refresh(alpha=alpha, steps=15)
    assert (table["distance_s"] <= table["bound"] * (1 + 1e-12)).all()
    # closed form: each curvature direction k contracts by its own factor 1 - alpha (lambda_k + eps)
    c = world.basis.T @ (world.theta_a + world.delta_b - world.a)
    factors = 1 - alpha * (world.spectrum + world.eps)
    closed = [float(np.linalg.norm(factors ** t * c)) for t in range(16)]
    assert np.allclose(table["distance_s"], closed, rtol=1e-10)

    h, a = torch.from_numpy(world.h_a), torch.from_numpy(world.a)

    class Quadratic(nn.Module):
        def __init__(self):
            super().__init__()
            self.theta = nn.Parameter(a.clone())

    loss_fn = lambda m: 0.5 * (m.theta - a) @ h @ (m.theta - a)  # noqa: E731
    model = Quadratic()
    space = pt.ParameterSpace.from_model(model)
    start = torch.from_numpy(world.theta_a + world.delta_b)
    torch_table = pt.gd_refresh(loss_fn, model, space, start, a, world.basis, alpha=alpha, steps=15)
    assert np.allclose(torch_table["distance_s"], table["distance_s"], rtol=1e-10)
    assert np.allclose(torch_table["loss"], table["loss"], rtol=1e-10)
    assert np.allclose(pt.curvature_on_subspace(lambda v: h @ v, world.basis)[0], world.mu)


def test_seeded_and_validated():
    one, two = make_quadratic_world(seed=10), make_quadratic_world(seed=10)
    assert np.array_equal(one.h_a, two.h_a) and np.array_equal(one.delta_b, two.delta_b)
    assert not np.array_equal(one.delta_b, make_quadratic_world(seed=11).delta_b)
    with pytest.raises(ValueError, match="overlap must be in"):
        make_quadratic_world(overlap=1.5)
    with pytest.raises(ValueError, match="rank must be"):
        make_quadratic_world(rank=30, support=20)
    with pytest.raises(ValueError, match="cannot place"):
        make_quadratic_world(support=5, b_support=20, overlap=1.0)
    with pytest.raises(ValueError, match="alpha"):
        one.refresh(alpha=-1.0, steps=3)


# ---- notebook 03's algebra, figures and widget ----------------------------------------------------------

def test_the_symbolic_checks_find_the_expansion_exact_and_the_back_flow_term():
    import sympy as sp

    from mdrl_lib.quadratic import symbolic_contraction, symbolic_taylor_and_step

    assert symbolic_taylor_and_step() == {"remainder": 0, "gd_step": [0, 0]}
    found = symbolic_contraction()
    alpha, lam1, lam2, xs, xp, hs, c = sp.symbols("alpha lambda1 lambda2 x_S x_perp h_S c", real=True)
    assert set(found["eigenvalues"]) == {1 - alpha * lam1, 1 - alpha * lam2}
    assert found["at_mu"] == sp.Rational(4, 5) and found["at_top"] == 0
    assert sp.expand(found["s_component"] - (xs - alpha * hs * xs - alpha * c * xp)) == 0


def test_the_widget_sliders_are_the_drawing_functions_arguments_at_their_defaults():
    import inspect

    from mdrl_lib.quadratic import explore_world, world_sliders

    sliders = world_sliders()
    parameters = inspect.signature(explore_world).parameters
    assert set(sliders) == set(parameters) - {"seed"}
    assert all(slider.value == parameters[name].default and not slider.continuous_update
               for name, slider in sliders.items())


def test_the_figures_draw_what_they_say():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mdrl_lib.quadratic import explore_world, plot_overlap_sweep

    plt.close("all")
    explore_world(overlap=0.25, seed=3)
    taylor, refresh = plt.gcf().axes
    assert "½ (P_S δ)ᵀH(P_S δ)" in [line.get_label() for line in taylor.get_lines()]
    assert "GD refresh at α = 0.15" in refresh.get_title()
    ax = plot_overlap_sweep(seed=0)
    damage, subspace = ax.get_lines()
    sweep = sweep_overlap(np.linspace(0, 1, 11), seed=0)
    assert np.allclose(damage.get_ydata(), sweep["damage"]) and np.allclose(subspace.get_xdata(), sweep["overlap"])
    plt.close("all")
