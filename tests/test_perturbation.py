"""Perturbation theory library: parameter vectors, HVPs against explicit Hessians and finite differences,
eigsh on known spectra, Taylor terms, captured shares and the refresh contraction (closed forms)."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.func import functional_call

from mdrl_lib import perturbation as pt
from mdrl_lib.perturbation import ParameterSpace


# ---------------------------------------------------------------------------------------------- models
class TinyMLP(nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.inner = nn.Linear(3, 4).double()
        self.outer = nn.Linear(4, 2).double()

    def forward(self, x):
        return self.outer(torch.tanh(self.inner(x)))


def mlp_loss_fn(seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(8, 2, generator=gen, dtype=torch.float64)
    return lambda model: ((model(x) - y) ** 2).mean()


class Quadratic(nn.Module):
    """L(theta) = 1/2 (theta - a)^T H (theta - a) + c^T (theta - a), one flat parameter."""

    def __init__(self, h: torch.Tensor, a: torch.Tensor, c: torch.Tensor | None = None):
        super().__init__()
        self.theta = nn.Parameter(a.clone())
        self.h, self.a = h, a
        self.c = torch.zeros_like(a) if c is None else c

    def loss(self):
        d = self.theta - self.a
        return 0.5 * d @ self.h @ d + self.c @ d


def quad_loss(model):
    return model.loss()


def explicit_hessian(loss_fn, model, space):
    """The dense Hessian over an unmasked space, by torch.autograd.functional.hessian through
    functional_call (the reference the HVP is checked against)."""
    assert space.mask is None

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self):
            return loss_fn(self.inner)

    wrap = Wrap()

    def f(vec):
        tensors = space.unflatten(vec)
        return functional_call(wrap, {f"inner.{n}": t for n, t in zip(space.names, tensors)}, ())

    return torch.autograd.functional.hessian(f, space.get(model))


def random_orthogonal(n, seed):
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return q


def tiny_qwen(seed: int = 0):
    transformers = pytest.importorskip("transformers")
    config = transformers.Qwen2Config(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                                      tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = transformers.Qwen2ForCausalLM(config).double().eval()
    model.set_attn_implementation("eager")
    gen = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(4, 50, (4, 10), generator=gen)  # unpadded: every sequence the same length
    return model, (lambda m: m(input_ids=ids, labels=ids).loss)


# ----------------------------------------------------------------------------------- ParameterSpace
def test_space_layout_roundtrip_and_errors():
    model = TinyMLP()
    space = ParameterSpace.from_model(model)
    assert space.names == ("inner.weight", "inner.bias", "outer.weight", "outer.bias")
    assert space.offsets == (0, 12, 16, 24) and space.numel == space.dim == 26
    theta = space.get(model)
    assert torch.equal(theta[:12], model.inner.weight.detach().reshape(-1))
    assert torch.equal(space.flatten(space.unflatten(theta)), theta)
    with pytest.raises(KeyError, match="valid names: inner.weight"):
        ParameterSpace.from_model(model, ["inner.wieght"])
    with pytest.raises(TypeError):
        ParameterSpace.from_model(model, "inner.weight")
    with pytest.raises(ValueError, match=r"shape \(26,\)"):
        space.set(model, torch.zeros(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="no coordinate"):
        space.restrict(torch.zeros(26, dtype=torch.bool))


def test_masked_space_set_get_touch_only_masked_coordinates():
    model = TinyMLP()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    weight_mask = torch.zeros(4, 3, dtype=torch.bool)
    weight_mask[1, 2] = weight_mask[3, 0] = True
    space = ParameterSpace.from_model(model, ["inner.weight", "outer.bias"],
                                      mask={"inner.weight": weight_mask, "outer.bias": torch.tensor([False, True])})
    assert space.dim == 3
    assert space.coordinate_names() == [("inner.weight", 5), ("inner.weight", 9), ("outer.bias", 1)]
    values = torch.tensor([10.0, 20.0, 30.0], dtype=torch.float64)
    with pt.displaced(model, space, values):
        assert model.inner.weight[1, 2] == 10 and model.inner.weight[3, 0] == 20 and model.outer.bias[1] == 30
        assert torch.equal(space.get(model), values)
        changed = (model.inner.weight != before["inner.weight"]).sum() + (model.outer.bias != before["outer.bias"]).sum()
        assert int(changed) == 3
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name])  # restored bit for bit
    with pt.restored_afterwards(model, space):
        space.add_(model, values, scale=0.5)
        assert model.inner.weight[1, 2] == before["inner.weight"][1, 2] + 5
        assert model.outer.bias[1] == before["outer.bias"][1] + 15 and model.outer.bias[0] == before["outer.bias"][0]
    assert torch.equal(model.inner.weight, before["inner.weight"])
    pieces = space.unflatten(values)
    assert pieces[0][1, 2] == 10 and pieces[0].abs().sum() == 30 and pieces[1].tolist() == [0.0, 30.0]
    with pytest.raises(ValueError, match=r"shape \(4, 3\)"):
        space.restrict({"inner.weight": torch.ones(3, dtype=torch.bool)})


# ---------------------------------------------------------------------------------------- gradients, HVPs
def test_gradient_matches_autograd_and_restores_requires_grad():
    model = TinyMLP()
    model.outer.weight.requires_grad_(False)
    loss_fn = mlp_loss_fn()
    space = ParameterSpace.from_model(model)
    g = pt.gradient(loss_fn, model, space)
    model.outer.weight.requires_grad_(True)
    expected = torch.autograd.grad(loss_fn(model), list(model.parameters()))
    assert torch.allclose(g, torch.cat([e.reshape(-1) for e in expected]), rtol=0, atol=1e-14)
    # parameters the loss does not reach get exact zeros (allow_unused), also in a masked space
    only_bias = pt.gradient(lambda m: 2 * m.outer.bias.sum(), model, space)
    assert only_bias[:24].eq(0).all() and only_bias[24:].eq(2).all()
    masked = space.restrict(torch.arange(26) % 2 == 0)
    assert pt.gradient(lambda m: 2 * m.outer.bias.sum(), model, masked).tolist() == [0.0] * 12 + [2.0]


def test_mlp_hvp_equals_explicit_hessian_and_finite_differences():
    model = TinyMLP()
    loss_fn = mlp_loss_fn()
    space = ParameterSpace.from_model(model)
    hessian = explicit_hessian(loss_fn, model, space)
    assert torch.allclose(hessian, hessian.T, atol=1e-12)
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        v = torch.randn(space.dim, generator=gen, dtype=torch.float64)
        exact = pt.hvp(loss_fn, model, space, v)
        assert torch.allclose(exact, hessian @ v, rtol=0, atol=1e-12 * float((hessian @ v).norm()))
        fd = pt.finite_difference_hvp(loss_fn, model, space, v, eps=1e-4)
        assert float((fd - exact).norm() / exact.norm()) < 1e-7
    check = pt.hvp_check(loss_fn, model, space, eps=1e-4)
    assert check["relative_error"] < 1e-7 and check["cosine"] > 1 - 1e-12


def test_masked_hvp_is_the_restricted_hessian():
    model = TinyMLP()
    loss_fn = mlp_loss_fn()
    full = ParameterSpace.from_model(model)
    hessian = explicit_hessian(loss_fn, model, full)
    gen = torch.Generator().manual_seed(4)
    mask = torch.rand(full.numel, generator=gen) < 0.4
    space = full.restrict(mask)
    idx = mask.nonzero().squeeze(1)
    v = torch.randn(space.dim, generator=gen, dtype=torch.float64)
    assert torch.allclose(pt.hvp(loss_fn, model, space, v), hessian[idx][:, idx] @ v, rtol=0, atol=1e-12)
    assert torch.allclose(pt.gradient(loss_fn, model, space), pt.gradient(loss_fn, model, full)[idx], atol=0)


def test_hessian_operator_reuses_graph_and_refuses_changed_weights():
    model = TinyMLP()
    model.requires_grad_(False)  # frozen weights (as after loading for analysis) must work too
    loss_fn = mlp_loss_fn()
    space = ParameterSpace.from_model(model)
    operator = pt.hessian_operator(loss_fn, model, space, reuse_graph=True)
    gen = torch.Generator().manual_seed(5)
    for _ in range(2):
        v = torch.randn(space.dim, generator=gen, dtype=torch.float64)
        assert torch.allclose(operator(v), pt.hvp(loss_fn, model, space, v), rtol=0, atol=1e-13)
    assert operator.calls == 2
    x = np.random.default_rng(0).standard_normal(space.dim)
    assert np.allclose(operator.numpy_matvec(x), pt.hvp(loss_fn, model, space, torch.from_numpy(x)).numpy(), atol=1e-13)
    with torch.no_grad():
        model.inner.bias.add_(0.1)
    with pytest.raises(RuntimeError, match="weights changed"):
        operator(v)


def test_hvp_of_a_function_linear_in_the_space_is_zero():
    model = TinyMLP()
    space = ParameterSpace.from_model(model, ["outer.bias"])
    linear = lambda m: m.outer.bias.sum() * 3.0  # noqa: E731
    out = pt.hvp(linear, model, space, torch.ones(2, dtype=torch.float64))
    assert torch.equal(out, torch.zeros(2, dtype=torch.float64))
    with pytest.raises(TypeError, match="scalar"):
        pt.gradient(lambda m: m.outer.bias * 2, model, space)


def test_tiny_qwen_hvp_matches_explicit_hessian_and_finite_differences():
    """Qwen2 computes RMSNorm and the attention softmax in float32 even in a float64 model, so the
    agreement here is at float32 level (measured 4e-8 and 4e-5); the MLP test above is the exact one."""
    model, loss_fn = tiny_qwen()
    small = ParameterSpace.from_model(model, ["model.layers.0.self_attn.q_proj.weight", "model.norm.weight"])
    hessian = explicit_hessian(loss_fn, model, small)
    gen = torch.Generator().manual_seed(6)
    v = torch.randn(small.dim, generator=gen, dtype=torch.float64)
    exact = pt.hvp(loss_fn, model, small, v)
    assert float((exact - hessian @ v).norm() / (hessian @ v).norm()) < 1e-6
    # every parameter (tied embedding included once): against central differences of the gradient
    everything = ParameterSpace.from_model(model)
    assert "lm_head.weight" not in everything.names
    check = pt.hvp_check(loss_fn, model, everything, eps=1e-3, seed=7)
    assert check["relative_error"] < 3e-4, check


# ---------------------------------------------------------------------------------------------- eigsh
@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
def test_top_eigenpairs_recovers_a_known_spectrum(which):
    n = 60
    spectrum = torch.cat([torch.tensor([9.0, 7.0, 5.0, -8.0, -6.0], dtype=torch.float64),
                          torch.linspace(-1, 1, n - 5, dtype=torch.float64)])
    q = random_orthogonal(n, 0)
    matrix = (q * spectrum) @ q.T
    values, vectors = pt.top_eigenpairs(lambda x: matrix.numpy() @ x, n, 3, which=which, seed=1, tol=1e-12)
    expected = {"LA": [9.0, 7.0, 5.0], "SA": [-8.0, -6.0, -1.0], "LM": [9.0, -8.0, 7.0]}[which]
    assert np.allclose(values, expected, atol=1e-9)
    assert np.allclose(vectors.T @ vectors, np.eye(3), atol=1e-9)
    assert np.allclose(matrix.numpy() @ vectors, vectors * values, atol=1e-8)
    again = pt.top_eigenpairs(lambda x: matrix.numpy() @ x, n, 3, which=which, seed=1, tol=1e-12)
    assert np.array_equal(values, again[0]) and np.array_equal(vectors, again[1])  # seeded: deterministic


def test_top_eigenpairs_tiny_dense_path_and_errors():
    matrix = np.diag([3.0, 1.0, 2.0])
    values, vectors = pt.top_eigenpairs(lambda x: torch.from_numpy(matrix @ x), 3, 3)
    assert np.allclose(values, [3.0, 2.0, 1.0]) and np.allclose(np.abs(vectors[0, 0]), 1.0)
    with pytest.raises(ValueError, match="which must be one of"):
        pt.top_eigenpairs(lambda x: x, 3, 1, which="BE")
    with pytest.raises(ValueError, match="exceeds"):
        pt.top_eigenpairs(lambda x: x, 3, 4)
    rng = np.random.default_rng(0)
    spread = np.linspace(1, 2, 50)
    noisy = lambda x: spread * x + 1e-3 * rng.standard_normal(50)  # noqa: E731
    with pytest.raises(RuntimeError, match="raise tol"):
        pt.top_eigenpairs(noisy, 50, 3, tol=0.0, maxiter=3)


def test_restricted_operator_spectrum_via_hessian_operator():
    """eigsh on P H P of a masked space returns the eigenvalues of the Hessian's sub-block."""
    n = 40
    q = random_orthogonal(n, 2)
    h = (q * torch.linspace(-2, 5, n, dtype=torch.float64)) @ q.T
    model = Quadratic(h, torch.zeros(n, dtype=torch.float64))
    mask = torch.zeros(n, dtype=torch.bool)
    mask[::3] = True
    space = ParameterSpace.from_model(model, mask=mask)
    op = pt.hessian_operator(quad_loss, model, space)
    block = h[mask][:, mask].numpy()
    expected = np.linalg.eigvalsh(block)
    values, _ = pt.top_eigenpairs(op.numpy_matvec, space.dim, 2, tol=1e-12)
    assert np.allclose(values, expected[::-1][:2], atol=1e-9)
    assert math.isclose(pt.smallest_curvature(op, tol=1e-12), expected[0], abs_tol=1e-9)


# --------------------------------------------------------------------------------------- Taylor terms
def test_taylor_terms_are_exact_on_a_quadratic_and_restore_weights():
    n = 12
    q = random_orthogonal(n, 3)
    h = (q * torch.linspace(0.5, 3, n, dtype=torch.float64)) @ q.T
    gen = torch.Generator().manual_seed(8)
    a, c, delta = (torch.randn(n, generator=gen, dtype=torch.float64) for _ in range(3))
    model = Quadratic(h, a, c)
    space = ParameterSpace.from_model(model)
    theta_a = a + 0.3 * torch.randn(n, generator=gen, dtype=torch.float64)
    start = space.get(model)
    table = pt.taylor_terms(quad_loss, model, space, theta_a, delta, [-1.0, 0.5, 2.0])
    assert torch.equal(space.get(model), start)
    g = h @ (theta_a - a) + c
    for row in table.itertuples():
        assert math.isclose(row.first_order, row.t * float(g @ delta), rel_tol=1e-12)
        assert math.isclose(row.second_order, 0.5 * row.t ** 2 * float(delta @ h @ delta), rel_tol=1e-12)
        assert math.isclose(row.measured, row.predicted, rel_tol=1e-10, abs_tol=1e-12)
    assert pt.quadratic_validity(table, rtol=1e-8) == 2.0


def test_taylor_error_is_third_order_on_a_cubic():
    """L = sum(theta^3)/6 + |theta|^2/2 at theta_a: the quadratic prediction misses exactly t^3 sum(d^3)/6."""
    class Cubic(nn.Module):
        def __init__(self):
            super().__init__()
            self.theta = nn.Parameter(torch.tensor([0.2, -0.1, 0.3], dtype=torch.float64))

    loss_fn = lambda m: (m.theta ** 3).sum() / 6 + 0.5 * (m.theta ** 2).sum()  # noqa: E731
    model = Cubic()
    space = ParameterSpace.from_model(model)
    delta = torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)
    ts = [0.01, 0.1, 0.5, 1.0]
    table = pt.taylor_terms(loss_fn, model, space, space.get(model), delta, ts)
    third = float((delta ** 3).sum()) / 6
    assert np.allclose(table["measured"] - table["predicted"], [t ** 3 * third for t in ts], rtol=1e-8, atol=1e-15)
    expected = max(t for t in ts if all(abs(u ** 3 * third) <= 0.05 * abs(m)
                                        for u, m in zip(ts, table["measured"]) if u <= t))
    assert pt.quadratic_validity(table, rtol=0.05) == expected


def test_quadratic_validity_hand_table():
    table = pd.DataFrame({"t": [0.0, 0.1, -0.1, 0.2, 0.4, 0.8],
                          "measured": [0.0, 1.0, 1.0, 2.0, 4.0, 8.0],
                          "predicted": [0.0, 1.05, 0.96, 2.1, 5.0, 8.1]})
    assert pt.quadratic_validity(table, rtol=0.06) == 0.2  # 0.4 fails (25%), so 0.8 does not count
    assert pt.quadratic_validity(table, rtol=0.01) is None
    with pytest.raises(KeyError, match="predicted"):
        pt.quadratic_validity(table.drop(columns="predicted"))


# ------------------------------------------------------------------------------------- captured share
def test_captured_share_is_one_inside_the_subspace_and_matches_hand_computation():
    n = 30
    lam = torch.linspace(10, 1, n, dtype=torch.float64)
    q = random_orthogonal(n, 4)
    h = (q * lam) @ q.T
    hvp_fn = lambda v: h @ v  # noqa: E731
    values, vectors = pt.top_eigenpairs(lambda x: h.numpy() @ x, n, 4, tol=1e-12)
    gen = torch.Generator().manual_seed(9)
    coeffs = torch.randn(n, generator=gen, dtype=torch.float64)
    inside = torch.from_numpy(vectors[:, :2]) @ coeffs[:2]
    table = pt.captured_share(inside, vectors, hvp_fn, n_random=3)
    assert list(table["r"]) == [1, 2, 3, 4]
    assert np.allclose(table["top"][1:], 1.0, atol=1e-10)
    delta = q @ coeffs  # general delta: share(r) = sum_{i<=r} lam_i c_i^2 / sum lam_i c_i^2
    table = pt.captured_share(delta, vectors, hvp_fn, n_random=0)
    hand = torch.cumsum(lam * coeffs ** 2, 0)[:4] / (lam * coeffs ** 2).sum()
    assert np.allclose(table["top"], hand.numpy(), atol=1e-10)
    assert table["random_mean"].isna().all()


def test_captured_share_random_baseline_has_the_right_mean():
    """With H = I the share of a random r-subspace is |P delta|^2/|delta|^2, whose mean is r/n."""
    n, draws = 20, 400
    gen = torch.Generator().manual_seed(10)
    delta = torch.randn(n, generator=gen, dtype=torch.float64)
    basis = torch.eye(n, dtype=torch.float64)[:, :3]
    table = pt.captured_share(delta, basis, lambda v: v, n_random=draws, seed=11)
    for row in table.itertuples():
        assert abs(row.random_mean - row.r / n) < 4 * row.random_std / math.sqrt(draws)
        assert 0 <= row.random_min <= row.random_max <= 1
    again = pt.captured_share(delta, basis, lambda v: v, n_random=draws, seed=11)
    pd.testing.assert_frame_equal(table, again)


# ------------------------------------------------------------------------------------ refresh contraction
def test_gd_refresh_attains_the_contraction_bound_on_a_quadratic():
    """H has eigenvalue mu on S and others off it (S invariant): ||P_S(theta_t - a)|| = (1 - alpha mu)^t x0."""
    n, k, mu, alpha = 16, 3, 2.0, 0.1
    q = random_orthogonal(n, 5)
    spectrum = torch.cat([torch.full((k,), mu, dtype=torch.float64), torch.linspace(0.01, 5, n - k, dtype=torch.float64)])
    h = (q * spectrum) @ q.T
    basis = q[:, :k]
    gen = torch.Generator().manual_seed(12)
    a = torch.randn(n, generator=gen, dtype=torch.float64)
    delta = torch.randn(n, generator=gen, dtype=torch.float64)
    model = Quadratic(h, a)
    space = ParameterSpace.from_model(model)
    table = pt.gd_refresh(quad_loss, model, space, a + delta, a, basis, alpha=alpha, steps=25)
    assert torch.equal(space.get(model), a)  # restored
    x0 = float((basis.T @ delta).norm())
    bound = pt.contraction_bound(mu, alpha, table["step"].to_numpy(), x0)
    assert np.allclose(table["distance_s"], bound, rtol=1e-12)
    assert np.allclose(pt.curvature_on_subspace(lambda v: h @ v, basis), [mu] * k, atol=1e-12)
    # the full distance follows the whole spectrum: (I - alpha H)^t delta
    d = delta.clone()
    for t in range(26):
        assert math.isclose(table["distance"][t], float(d.norm()), rel_tol=1e-12)
        d = d - alpha * h @ d
    losses = table["loss"].to_numpy()
    assert np.all(np.diff(losses) < 0)


def test_gd_refresh_on_a_coordinate_mask_and_bound_helpers():
    n, mu, alpha = 8, 0.5, 0.4
    h = torch.diag(torch.tensor([mu, mu, mu, 3.0, 2.0, 1.0, 0.2, 0.1], dtype=torch.float64))
    a = torch.zeros(n, dtype=torch.float64)
    delta = torch.arange(1, n + 1, dtype=torch.float64)
    model = Quadratic(h, a)
    space = ParameterSpace.from_model(model)
    mask = torch.tensor([True] * 3 + [False] * 5)
    table = pt.gd_refresh(quad_loss, model, space, a + delta, a, mask, alpha=alpha, steps=5)
    assert np.allclose(table["distance_s"], (1 - alpha * mu) ** np.arange(6) * float(delta[:3].norm()), rtol=1e-12)
    masked = ParameterSpace.from_model(model, mask=mask)
    assert math.isclose(pt.smallest_curvature(pt.hessian_operator(quad_loss, model, masked)), mu, rel_tol=1e-12)
    assert pt.contraction_bound(1.0, 0.5, 3, 8.0) == 1.0
    assert pt.contraction_bound(1.0, 1.5, 3, 8.0) == 1.0  # |1 - alpha mu|: a norm bound stays positive
    with pytest.raises(ValueError, match="alpha"):
        pt.gd_refresh(quad_loss, model, space, a, a, mask, alpha=0.0, steps=1)
    with pytest.raises(ValueError, match=r"shape \(8,\)"):
        pt.gd_refresh(quad_loss, model, space, a, a, torch.ones(3, dtype=torch.bool), alpha=0.1, steps=1)


# ------------------------------------------------------------------------------------------ benchmark
def test_hvp_benchmark_runs_on_the_toy_model(tmp_path, capsys):
    """benchmarks/hvp.py end to end, one round, toy model: its table and its HVP checks (no timing claim)."""
    import json

    from tests.script_runner import ROOT, load_script

    threads = torch.get_num_threads()
    try:
        bench = load_script(ROOT / "benchmarks" / "hvp.py")
        assert bench.main(["--quick", "--repeats", "1", "--fd-eps", "1e-2", "--json", str(tmp_path / "r.json")]) == 0
    finally:
        torch.set_num_threads(threads)
    assert "hvp/grad" in capsys.readouterr().out
    (row,) = json.loads((tmp_path / "r.json").read_text())
    assert row["model"] == "toy" and row["params"] == 335_488 and row["tokens"] == 768
    assert row["reuse_vs_fresh"] < 1e-6 and row["fd_rel_err@0.01"] < 1e-2


# ---------------------------------------------------------------------- notebook 03's stored tables
def test_a_stored_table_round_trips_exactly(tmp_path):
    frame = pd.DataFrame({"step": [0, 20], "measured": [0.1 + 0.2, float("nan")], "relative_error": [math.inf, 1e-300]})
    pt.write_table(tmp_path / "t.json", frame)
    back = pt.read_table(tmp_path / "t.json")
    assert list(back.columns) == list(frame.columns) and back["step"].dtype == frame["step"].dtype
    assert back["measured"][0] == 0.1 + 0.2 and math.isnan(back["measured"][1])
    assert back["relative_error"].tolist() == [math.inf, 1e-300]


def test_the_summary_tables_read_the_last_row_and_the_closed_form_bound():
    segment = pd.DataFrame({"t": [0.5, 1.0], "measured": [1.0, 2.0], "first_order": [0.5, 1.0],
                            "second_order": [0.5, 0.5], "predicted": [1.0, 1.5], "relative_error": [0.0, 0.25]})
    summary = pt.taylor_summary({"far": segment}, rtol=0.1)
    assert summary.loc["far", "measured"] == 2.0 and summary.loc["far", "quadratic within 10% up to t"] == 0.5
    shares = {"local": {"shares": pd.DataFrame({"r": [1, 2], "top": [0.2, 0.7], "random_max": [0.1, 0.3]}),
                        "coordinates_part": 0.4}}
    row = pt.share_summary(shares, rank=2).loc["local"].tolist()
    assert row == [0.7, 0.3, 0.4]
    contraction = {"to_fixed": [2.0, 1.5, 1.0], "to_path": [2.0, 1.0, 0.5], "mu": 2.0, "alpha": 0.1}
    curves = pt.contraction_curves(contraction)
    bound = curves[curves["curve"].str.startswith("bound")]
    assert bound["distance"].tolist() == pytest.approx([2.0, 1.6, 1.28])
    assert curves.groupby("curve").size().tolist() == [3, 3, 3]
    table = pt.contraction_table({"local": contraction})
    assert table.loc["local"].tolist() == pytest.approx([2.0, 1.0, 0.5, 1.28])
    assert list(table.columns)[1] == "after 2 steps (to θ_A*)"
    deltas = {"b": torch.tensor([3.0, 4.0])}
    assert pt.displacement_table(deltas, torch.tensor([0.0, 10.0])).loc["b"].tolist() == [5.0, 0.5]


def test_dense_hessian_is_every_hessian_vector_product_stacked():
    from mdrl_lib.perturbation import ParameterSpace, dense_hessian, hvp

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
    x = torch.randn(20, 3, dtype=torch.float64)

    def loss(m):
        return (m(x) ** 2).mean()

    mask = {"0.weight": torch.rand(4, 3) > 0.5, "2.weight": torch.ones(1, 4, dtype=torch.bool)}
    space = ParameterSpace.from_model(model, ["0.weight", "2.weight"], mask=mask)
    matrix = dense_hessian(loss, model, space)
    assert matrix.shape == (space.dim, space.dim) and torch.equal(matrix, matrix.T)
    for i in range(space.dim):
        unit = torch.zeros(space.dim, dtype=torch.float64)
        unit[i] = 1.0
        assert torch.allclose(matrix[:, i], hvp(loss, model, space, unit), atol=1e-12)
