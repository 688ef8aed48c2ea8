"""A two-domain quadratic world where the perturbation theory is exact: the playground of notebook 03's widget.

Introduced in notebook ``03_perturbation_theory``. Domain A's loss is
``L_A(theta) = 1/2 (theta - a)^T H_A (theta - a)`` with ``H_A = U diag(lambda) U^T + eps I``: a few
strong curvature directions ``U`` living on a small set of coordinates (A's *curvature support*) plus a
small curvature ``eps`` everywhere. Domain B's update ``delta_B`` is sparse; ``overlap`` sets the share
of its coordinates that fall inside A's curvature support. Everything is pure numpy and seeded; each
ingredient has its own random stream, so moving ``overlap`` swaps coordinates of ``delta_B`` in and out
of the support without redrawing the rest.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True, eq=False)
class QuadraticWorld:
    """Domain A's quadratic loss and domain B's sparse update (build with :func:`make_quadratic_world`).

    Shapes: ``h_a`` (dim, dim); ``a``, ``theta_a``, ``delta_b`` (dim,); ``basis`` (dim, rank) orthonormal,
    zero outside ``curvature_support``; ``spectrum`` (rank,) descending. ``theta_a`` is A's checkpoint:
    ``a`` itself unless the world was built with a ``residual`` (then A's gradient there is not zero).
    """

    h_a: np.ndarray
    a: np.ndarray
    theta_a: np.ndarray
    delta_b: np.ndarray
    basis: np.ndarray
    spectrum: np.ndarray
    eps: float
    curvature_support: np.ndarray
    b_support: np.ndarray

    @property
    def dim(self) -> int:
        return self.a.shape[0]

    @property
    def overlap(self) -> float:
        """Realised share of B's support inside A's curvature support."""
        return float(np.isin(self.b_support, self.curvature_support).mean())

    @property
    def mu(self) -> float:
        """Smallest curvature of ``H_A`` on ``S = span(basis)``: ``min(lambda) + eps``."""
        return float(self.spectrum.min() + self.eps)

    @property
    def max_curvature(self) -> float:
        """Largest eigenvalue of ``H_A`` (``alpha <= 1 / max_curvature`` keeps every direction contracting)."""
        return float(self.spectrum.max() + self.eps)

    # -- A's loss and the Taylor terms of B's damage --------------------------------------------------
    def loss_a(self, theta: np.ndarray) -> float:
        d = np.asarray(theta, dtype=np.float64) - self.a
        return 0.5 * float(d @ self.h_a @ d)

    def gradient_a(self, theta: np.ndarray) -> np.ndarray:
        return self.h_a @ (np.asarray(theta, dtype=np.float64) - self.a)

    def damage(self, t: float = 1.0) -> float:
        """``L_A(theta_a + t delta_b) - L_A(theta_a)``, exactly."""
        return self.loss_a(self.theta_a + t * self.delta_b) - self.loss_a(self.theta_a)

    def first_order(self, t: float = 1.0) -> float:
        """``t g_A^T delta_b`` with ``g_A`` at ``theta_a``."""
        return t * float(self.gradient_a(self.theta_a) @ self.delta_b)

    def second_order(self, t: float = 1.0) -> float:
        """``t^2 / 2 delta_b^T H_A delta_b``."""
        return 0.5 * t * t * float(self.delta_b @ self.h_a @ self.delta_b)

    def subspace_second_order(self, t: float = 1.0) -> float:
        """The theory's dominant term ``t^2 / 2 (P_S delta_b)^T H_A (P_S delta_b)``, ``S = span(basis)``."""
        p = self.basis @ (self.basis.T @ self.delta_b)
        return 0.5 * t * t * float(p @ self.h_a @ p)

    def taylor_table(self, ts) -> pd.DataFrame:
        """Columns ``t, measured, first_order, second_order, predicted, subspace_second_order`` (the
        measured damage equals ``predicted`` up to rounding: the world is exactly quadratic)."""
        rows = [{"t": float(t), "measured": self.damage(t), "first_order": self.first_order(t),
                 "second_order": self.second_order(t), "predicted": self.first_order(t) + self.second_order(t),
                 "subspace_second_order": self.subspace_second_order(t)} for t in ts]
        return pd.DataFrame(rows)

    # -- conflict subspace -------------------------------------------------------------------------------
    def top_eigenpairs(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``r`` largest eigenvalues of ``H_A`` (descending) and their eigenvectors ``(dim, r)`` (dense)."""
        if not 1 <= r <= self.dim:
            raise ValueError(f"r must be in 1..{self.dim}, got {r}")
        values, vectors = np.linalg.eigh(self.h_a)
        return values[::-1][:r].copy(), vectors[:, ::-1][:, :r].copy()

    def captured_share(self, r_max: int, n_random: int = 20, seed: int = 0) -> pd.DataFrame:
        """Share of ``delta_b^T H_A delta_b`` carried by ``delta_b``'s projection on the top-``r``
        eigenvectors, ``r = 1..r_max``, against random ``r``-dimensional subspaces of the whole space
        (nested leading columns of a seeded Gaussian's QR factor). Same columns as
        :func:`mdrl_lib.perturbation.captured_share`."""
        if n_random < 0:
            raise ValueError(f"n_random must be >= 0, got {n_random}")
        _, top = self.top_eigenpairs(r_max)
        total = float(self.delta_b @ self.h_a @ self.delta_b)

        def shares(q: np.ndarray) -> np.ndarray:
            c = q.T @ self.delta_b
            gram = q.T @ self.h_a @ q
            return np.array([float(c[:r] @ gram[:r, :r] @ c[:r]) / total for r in range(1, r_max + 1)])

        rng = np.random.default_rng(seed)
        random = np.array([shares(np.linalg.qr(rng.standard_normal((self.dim, r_max)))[0])
                           for _ in range(n_random)]).reshape(n_random, r_max)
        nan = np.full(r_max, np.nan)
        return pd.DataFrame({
            "r": np.arange(1, r_max + 1), "top": shares(top),
            "random_mean": random.mean(0) if n_random else nan,
            "random_std": random.std(0, ddof=1) if n_random > 1 else nan,
            "random_min": random.min(0) if n_random else nan,
            "random_max": random.max(0) if n_random else nan,
        })

    # -- refresh -----------------------------------------------------------------------------------------
    def refresh(self, alpha: float, steps: int) -> pd.DataFrame:
        """Gradient descent on ``L_A`` from the damaged point ``theta_a + delta_b`` at rate ``alpha``.

        Rows ``step = 0..steps``: ``loss`` (``L_A``), ``distance_s = ||P_S(theta_t - a)||`` against
        ``bound = |1 - alpha mu|^t ||P_S(theta_0 - a)||``, and ``distance_complement`` (the slow,
        ``eps``-curvature part off ``S``). ``S`` is invariant under ``H_A``, so there is no back-flow and
        the bound holds whenever ``alpha <= 1 / max_curvature``; it is attained if every ``lambda`` is equal.
        """
        if alpha <= 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        theta = self.theta_a + self.delta_b
        rows = []
        x0 = None
        for step in range(steps + 1):
            diff = theta - self.a
            inside = self.basis @ (self.basis.T @ diff)
            x0 = float(np.linalg.norm(inside)) if x0 is None else x0
            rows.append({"step": step, "loss": self.loss_a(theta), "distance_s": float(np.linalg.norm(inside)),
                         "bound": abs(1.0 - alpha * self.mu) ** step * x0,
                         "distance_complement": float(np.linalg.norm(diff - inside))})
            theta = theta - alpha * self.gradient_a(theta)
        return pd.DataFrame(rows)


def make_quadratic_world(dim: int = 200, rank: int = 4, support: int = 20, b_support: int = 20,
                         overlap: float = 0.5, curvature: tuple[float, float] = (5.0, 1.0), eps: float = 0.01,
                         delta_scale: float = 0.3, residual: float = 0.0, seed: int = 0) -> QuadraticWorld:
    """Build a :class:`QuadraticWorld`.

    ``support`` coordinates carry A's ``rank`` strong curvature directions, with eigenvalues spaced
    geometrically from ``curvature[0]`` down to ``curvature[1]`` (plus ``eps`` on every coordinate).
    ``delta_b`` has ``b_support`` nonzero coordinates (Gaussian, scale ``delta_scale``), of which
    ``round(overlap * b_support)`` lie in A's curvature support. ``residual`` moves A's checkpoint
    off its minimum by that much (Gaussian per coordinate), making the first-order term nonzero.
    """
    checks = [(dim >= 2, f"dim must be >= 2, got {dim}"),
              (1 <= rank <= support, f"rank must be in 1..support={support}, got {rank}"),
              (support < dim, f"support must be < dim={dim}, got {support}"),
              (1 <= b_support <= dim, f"b_support must be in 1..dim={dim}, got {b_support}"),
              (0.0 <= overlap <= 1.0, f"overlap must be in [0, 1], got {overlap}"),
              (min(curvature) > 0, f"curvature values must be positive, got {curvature}"),
              (eps >= 0, f"eps must be >= 0, got {eps}"),
              (delta_scale > 0, f"delta_scale must be positive, got {delta_scale}"),
              (residual >= 0, f"residual must be >= 0, got {residual}")]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    shared = int(round(overlap * b_support))
    if shared > support or b_support - shared > dim - support:
        raise ValueError(f"cannot place {shared} of B's {b_support} coordinates inside a support of {support} "
                         f"and {b_support - shared} outside it (dim {dim}); change overlap, support or b_support")
    support_rng, curvature_rng, b_rng, point_rng = (np.random.default_rng(s)
                                                    for s in np.random.SeedSequence(seed).spawn(4))
    curvature_support = np.sort(support_rng.choice(dim, size=support, replace=False))
    outside = np.setdiff1d(np.arange(dim), curvature_support)
    q, _ = np.linalg.qr(curvature_rng.standard_normal((support, rank)))
    basis = np.zeros((dim, rank))
    basis[curvature_support] = q
    spectrum = np.geomspace(curvature[0], curvature[1], rank) if rank > 1 else np.array([float(curvature[0])])
    spectrum = np.sort(spectrum)[::-1]
    h_a = (basis * spectrum) @ basis.T + eps * np.eye(dim)
    h_a = 0.5 * (h_a + h_a.T)
    # fixed orders for B's coordinates, so that changing overlap swaps coordinates one at a time
    inside_order = b_rng.permutation(curvature_support)
    outside_order = b_rng.permutation(outside)
    inside_values = b_rng.standard_normal(b_support) * delta_scale
    outside_values = b_rng.standard_normal(b_support) * delta_scale
    b_coords = np.concatenate([inside_order[:shared], outside_order[:b_support - shared]])
    delta_b = np.zeros(dim)
    delta_b[inside_order[:shared]] = inside_values[:shared]
    delta_b[outside_order[:b_support - shared]] = outside_values[:b_support - shared]
    a = point_rng.standard_normal(dim)
    theta_a = a + residual * point_rng.standard_normal(dim)
    return QuadraticWorld(h_a=h_a, a=a, theta_a=theta_a, delta_b=delta_b, basis=basis, spectrum=spectrum,
                          eps=float(eps), curvature_support=curvature_support, b_support=np.sort(b_coords))


def sweep_overlap(overlaps, t: float = 1.0, **world_kwargs) -> pd.DataFrame:
    """Damage and its terms as B's overlap with A's curvature support varies (everything else fixed by
    the seed). Columns: ``overlap, damage, first_order, second_order, subspace_second_order``."""
    rows = []
    for overlap in overlaps:
        world = make_quadratic_world(overlap=float(overlap), **world_kwargs)
        rows.append({"overlap": world.overlap, "damage": world.damage(t), "first_order": world.first_order(t),
                     "second_order": world.second_order(t), "subspace_second_order": world.subspace_second_order(t)})
    return pd.DataFrame(rows)


# ---- the algebra, checked by sympy ---------------------------------------------------------------


def symbolic_taylor_and_step() -> dict:
    """For ``L(x) = 1/2 (x - a)^T H (x - a)`` with a symbolic symmetric 2x2 ``H``: the remainder
    ``L(theta + delta) - L(theta) - g^T delta - 1/2 delta^T H delta`` (``remainder``, 0: the expansion is exact)
    and ``(theta - alpha g - a) - (I - alpha H)(theta - a)`` (``gd_step``, [0, 0]: one gradient step multiplies
    the displacement from ``a`` by ``I - alpha H``)."""
    import sympy as sp

    t1, t2, a1, a2, d1, d2, h11, h12, h22, alpha = sp.symbols("theta1 theta2 a1 a2 delta1 delta2 h11 h12 h22 alpha",
                                                              real=True)
    H = sp.Matrix([[h11, h12], [h12, h22]])
    theta, a, delta = sp.Matrix([t1, t2]), sp.Matrix([a1, a2]), sp.Matrix([d1, d2])
    half = sp.Rational(1, 2)
    L_theta, L_moved = ((half * (x - a).T * H * (x - a))[0] for x in (theta, theta + delta))
    g = H * (theta - a)  # the gradient of L at theta
    remainder = sp.expand(L_moved - L_theta - (g.T * delta)[0] - half * (delta.T * H * delta)[0])
    gd_step = sp.simplify((theta - alpha * g - a) - (sp.eye(2) - alpha * H) * (theta - a))
    return {"remainder": remainder, "gd_step": list(gd_step)}


def symbolic_contraction() -> dict:
    """The contraction step by step: the ``eigenvalues`` of one gradient step on S in ``H_S``'s eigenbasis,
    ``I - alpha diag(lambda1, lambda2)``; ``|1 - alpha lambda|`` at ``lambda = mu`` (``at_mu``, for alpha = 1/10,
    mu = 2) and at ``lambda = 1/alpha`` (``at_top``, 0); and the S-component of a displacement ``(x_S, x_perp)``
    after one step when a coupling ``c`` joins S to its complement (``s_component``: the term in ``c x_perp``
    is the back-flow)."""
    import sympy as sp

    alpha, lam1, lam2, mu, xs, xp, hs, hp, c = sp.symbols("alpha lambda1 lambda2 mu x_S x_perp h_S h_perp c", real=True)
    step_s = sp.eye(2) - alpha * sp.diag(lam1, lam2)  # one GD step on S, in H_S's eigenbasis
    coupled = sp.Matrix([[hs, c], [c, hp]])
    x_next = (sp.eye(2) - alpha * coupled) * sp.Matrix([xs, xp])  # displacement from the minimum, (S, complement)
    return {"eigenvalues": list(step_s.eigenvals()),
            "at_mu": sp.simplify(sp.Abs(1 - alpha * mu).subs({alpha: sp.Rational(1, 10), mu: 2})),
            "at_top": sp.simplify(1 - alpha * (1 / alpha)), "s_component": sp.expand(x_next[0])}



def contraction_margin():
    """The one-direction contraction margin, symbolically: ``(1 - alpha mu)^2 - (1 - alpha lambda)^2`` for a
    direction of curvature ``lambda``, and its factorisation ``alpha (lambda - mu) (2 - alpha lambda - alpha mu)``.
    A gradient step contracts that direction at least as fast as the bound exactly where the margin is >= 0,
    i.e. ``mu <= lambda <= 2/alpha - mu``; for ``alpha <= 1/lambda_max`` and every ``lambda >= mu`` it holds.
    Returns ``{"margin", "factored", "symbols": (alpha, mu, lambda)}`` (sympy expressions).
    Introduced in notebook ``03_perturbation_theory``."""
    import sympy as sp

    alpha, mu, lam = sp.symbols("alpha mu lambda", real=True)
    margin = (1 - alpha * mu) ** 2 - (1 - alpha * lam) ** 2
    return {"margin": margin, "factored": sp.factor(margin), "symbols": (alpha, mu, lam)}


def contraction_holds(eigenvalues, alpha: float, mu: float, *, vectors: int = 200, seed: int = 0) -> dict:
    """Does one gradient step contract by the theorem's factor: ``||(I - alpha H) v|| <= (1 - alpha mu) ||v||`` for
    ``H = Q diag(eigenvalues) Q^T`` (``Q`` a seeded random rotation, so ``H`` is a general symmetric matrix), checked
    two ways that can each fail: over a grid, the symbolic margin of :func:`contraction_margin` at every eigenvalue
    (``grid_min``, must be >= 0), and over ``vectors`` seeded random vectors plus ``H``'s eigenvectors, the worst
    ratio ``||(I - alpha H) v|| / ((1 - alpha mu) ||v||)`` (``worst_ratio``, must be <= 1). Holds for eigenvalues in
    ``[mu, 1/alpha]``; fails when ``H`` is indefinite (an eigenvalue below ``mu``, e.g. negative) or when
    ``alpha > 2 / lambda_max``. Returns ``{"holds", "grid_min", "worst_ratio", "factor"}``.
    Introduced in notebook ``03_perturbation_theory``."""
    import sympy as sp

    values = np.asarray(eigenvalues, dtype=np.float64).reshape(-1)
    if values.size < 1 or alpha <= 0:
        raise ValueError(f"need at least one eigenvalue and alpha > 0, got {values.size} and {alpha}")
    sym = contraction_margin()
    margin = sp.lambdify(sym["symbols"], sym["factored"], "numpy")
    grid_min = float(np.min(margin(alpha, mu, values)))
    rng = np.random.default_rng(seed)
    n = values.size
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    h = (q * values) @ q.T
    step = np.eye(n) - alpha * h
    probes = np.concatenate([q, rng.standard_normal((n, vectors))], axis=1)
    factor = 1.0 - alpha * mu
    ratios = np.linalg.norm(step @ probes, axis=0) / (abs(factor) * np.linalg.norm(probes, axis=0))
    worst = float(ratios.max())
    tol = 1e-9
    return {"holds": bool(grid_min >= -tol and worst <= 1 + tol and factor >= 0), "grid_min": grid_min,
            "worst_ratio": worst, "factor": factor}


def contraction_cases(mu: float = 0.5, lam_max: float = 4.0, dim: int = 6, seed: int = 0) -> pd.DataFrame:
    """The contraction step checked by :func:`contraction_holds` in three cases (one row each): eigenvalues spread
    over ``[mu, lam_max]`` at ``alpha = 1/lam_max`` (the theorem's premises: must hold); the same with one eigenvalue
    made negative (``H`` indefinite: must fail); and the first spectrum at ``alpha = 2.2/lam_max`` (beyond the
    stable rate: must fail). Columns ``case``, ``alpha``, ``lambda_min``, ``lambda_max``, ``holds``, ``grid_min``,
    ``worst_ratio``. Introduced in notebook ``03_perturbation_theory``."""
    spread = np.linspace(mu, lam_max, dim)
    indefinite = spread.copy()
    indefinite[0] = -mu
    rows = []
    for case, values, alpha in (("premises hold: μ ≤ λ ≤ 1/α", spread, 1.0 / lam_max),
                                ("H indefinite (one λ < 0)", indefinite, 1.0 / lam_max),
                                ("α = 2.2 / λ_max", spread, 2.2 / lam_max)):
        result = contraction_holds(values, alpha, mu, seed=seed)
        rows.append({"case": case, "alpha": alpha, "lambda_min": float(values.min()),
                     "lambda_max": float(values.max()), "holds": result["holds"], "grid_min": result["grid_min"],
                     "worst_ratio": result["worst_ratio"]})
    return pd.DataFrame(rows)

# ---- notebook 03's figures and widget ------------------------------------------------------------


def explore_world(b_support: int = 20, overlap: float = 0.5, top_curvature: float = 5.0, alpha: float = 0.15,
                  residual: float = 0.0, seed: int = 0) -> None:
    """Draw, in a world of :func:`make_quadratic_world`, the damage along theta_A + t delta_B against its Taylor
    terms, and the GD refresh's distance on S against the bound (notebook 03's widget)."""
    import matplotlib.pyplot as plt

    from mdrl_lib.plots import plot_contraction, plot_taylor_terms

    world = make_quadratic_world(b_support=b_support, overlap=overlap, curvature=(top_curvature, 1.0),
                                 residual=residual, seed=seed)
    table = world.taylor_table(np.linspace(0, 1, 11))
    refresh = world.refresh(alpha, 30)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    plot_taylor_terms(table, title=f"Damage along θ_A* + t δ_B (overlap {world.overlap:.2f})", ax=axes[0])
    axes[0].plot(table["t"], table["subspace_second_order"], ls="-.", color="purple", label="½ (P_S δ)ᵀH(P_S δ)")
    axes[0].legend(fontsize=8)
    curves = pd.concat([
        refresh.assign(distance=refresh["distance_s"], curve="GD: ||P_S(θ_t − a)||"),
        refresh.assign(distance=refresh["bound"], curve=f"bound (1 − αμ)^t, μ = {world.mu:.2f}"),
        refresh.assign(distance=refresh["distance_complement"], curve="GD: off S (curvature ε)")])
    plot_contraction(curves[curves["distance"] > 0], title=f"GD refresh at α = {alpha:.2f} "
                     f"(1/λ_max = {1 / world.max_curvature:.2f})", ax=axes[1], ylabel="distance to a")
    plt.tight_layout()
    plt.show()


def world_sliders() -> dict:
    """The sliders of :func:`explore_world`'s widget, by argument name (ipywidgets, no continuous update)."""
    from ipywidgets import FloatSlider, IntSlider

    still = {"continuous_update": False}
    return {"b_support": IntSlider(value=20, min=2, max=100, step=2, description="B's support", **still),
            "overlap": FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="overlap", **still),
            "top_curvature": FloatSlider(value=5.0, min=1.0, max=20.0, step=0.5, description="top λ", **still),
            "alpha": FloatSlider(value=0.15, min=0.01, max=0.5, step=0.01, description="α", **still),
            "residual": FloatSlider(value=0.0, min=0.0, max=0.5, step=0.05, description="residual", **still)}


def plot_overlap_sweep(seed: int = 0):
    """The exact damage and the subspace term as B's overlap with A's curvature support goes from 0 to 1
    (:func:`sweep_overlap`, same sparsity throughout); returns the axes."""
    import matplotlib.pyplot as plt

    sweep = sweep_overlap(np.linspace(0, 1, 11), seed=seed)
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for column, label in (("damage", "damage (exact)"), ("subspace_second_order", "½ (P_S δ)ᵀH(P_S δ)")):
        ax.plot(sweep["overlap"], sweep[column], marker="o", markersize=4, label=label)
    ax.set(xlabel="share of B's coordinates on A's curvature support", ylabel="damage to A",
           title="Same sparsity, different overlap")
    ax.legend(fontsize=8)
    return ax
