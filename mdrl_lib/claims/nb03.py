"""Claims C5 (second-order damage in a conflict subspace) and C6's theorem, introduced in notebook
``03_perturbation_theory``.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import pandas as pd

from mdrl_lib.claims.record import ClaimCheck

# ------------------------------------------------------------------------------------------- C5

C5_STATEMENT = ("Later-domain damage is mainly second-order and concentrated in a low-dimensional shared "
                "conflict subspace.")
C5_PAPER = ("derivation only: Delta_{B->A} ~= g_A^T delta_B + 1/2 delta_B^T H_A delta_B with the first-order "
            "term suppressed near theta_A*, and the dominant term 1/2 (P_S delta_B)^T H_A (P_S delta_B); no figure")
C5_RTOL = 0.1  # the quadratic prediction must be within this fraction of the measured damage at t = 1
C5_MIN_SHARE = 0.5  # the top-r subspace must carry at least this share of the second-order damage on its coordinates


def check_c5(local: Mapping[str, float], shares: pd.DataFrame, *, r: int, coordinates_part: float = 1.0,
             far: Mapping[str, float] | None = None, rtol: float = C5_RTOL,
             min_share: float = C5_MIN_SHARE) -> ClaimCheck:
    """C5 from the Taylor terms of a local-regime displacement and the conflict subspace's captured share.

    Inputs: ``local``, the row ``t = 1`` of :func:`mdrl_lib.perturbation.taylor_terms` for a displacement
    ``delta_B`` small enough to be local (keys ``measured``, ``first_order``, ``second_order``,
    ``predicted``); ``shares``, the table of :func:`mdrl_lib.perturbation.captured_share` (columns ``r``,
    ``top``, ``random_mean``, ``random_std``, ``random_max``): share of ``delta_B``'s second-order damage
    on the shared-route coordinates carried by the top-``r`` Hessian eigenvectors, against random
    ``r``-dimensional subspaces of the same coordinates; ``coordinates_part``, the part of the *full*
    second-order term that those coordinates hold, ``delta_S^T H_A delta_S / delta_B^T H_A delta_B`` (1 when
    the subspace was sought among all coordinates), so that ``top * coordinates_part`` is the top-``r``
    subspace's share of the whole second-order damage; ``far`` (reported only), the same row for the
    default-rate stage, far from the local regime.

    Rule, fixed in the kit's code before it was applied to a seed other than 0:

    - not testable (``None``) when the measured local damage is not positive (B did not hurt A);
    - (a) second order: at ``t = 1`` the second-order term alone is closer to the measured damage than
      the first-order term alone, ``|measured - second| < |measured - first|``, and the quadratic
      prediction (first + second) is within ``rtol`` of the measured damage;
    - (b) concentration: at ``r`` the top-``r`` subspace carries at least ``min_share`` of the *whole*
      second-order damage (``top * coordinates_part``; a subspace that is dominant only among a few
      coordinates holding little of the damage does not count), *and* its share is larger than the largest
      share of any random subspace of the same dimension and coordinates;
    - supported when (a) and (b) hold.
    """
    for key in ("measured", "first_order", "second_order", "predicted"):
        if key not in local:
            raise KeyError(f"local lacks {key!r}; give the t = 1 row of taylor_terms")
    missing = {"r", "top", "random_mean", "random_max"} - set(shares.columns)
    if missing:
        raise ValueError(f"shares lacks column(s) {sorted(missing)}; give the table of captured_share")
    if r not in set(shares["r"].astype(int)):
        raise ValueError(f"r={r} is not in the shares table (r = 1..{int(shares['r'].max())})")
    measured, first, second = (float(local[k]) for k in ("measured", "first_order", "second_order"))
    predicted = float(local["predicted"])
    row = shares.set_index(shares["r"].astype(int)).loc[r]
    top, random_mean, random_max = float(row["top"]), float(row["random_mean"]), float(row["random_max"])
    rel = abs(predicted - measured) / abs(measured) if measured != 0 else math.inf
    whole = top * float(coordinates_part)
    figures: dict[str, Any] = {"local_measured": measured, "local_first_order": first, "local_second_order": second,
                               "local_relative_error": rel, "r": r, "top_share": top,
                               "random_share_mean": random_mean, "random_share_max": random_max,
                               "coordinates_part": float(coordinates_part), "share_of_whole": whole,
                               "rtol": rtol, "min_share": min_share}
    measured_text = (f"local regime, t = 1: measured {measured:.3g}, first-order {first:.3g}, second-order "
                     f"{second:.3g} (quadratic error {rel:.1%}); rank-{r} conflict subspace carries {top:.2f} of "
                     f"the second-order damage on its coordinates (random subspaces: mean {random_mean:.3f}, max "
                     f"{random_max:.3f}), which hold {coordinates_part:.3g} of the whole second-order term: "
                     f"{whole:.3g} of the whole")
    if far is not None:
        far_measured = float(far["measured"])
        far_predicted = float(far["first_order"]) + float(far["second_order"])
        figures.update(far_measured=far_measured, far_first_order=float(far["first_order"]),
                       far_second_order=float(far["second_order"]), far_predicted=far_predicted)
        measured_text += (f"; default-rate stage, t = 1: measured {far_measured:.3g} against a quadratic "
                          f"prediction of {far_predicted:.3g}")
    baseline = (f"the first-order term g_A^T delta_B; random {r}-dimensional subspaces of the same coordinates")
    if not measured > 0:
        return ClaimCheck(claim="C5", name="second-order-subspace", statement=C5_STATEMENT, paper=C5_PAPER,
                          measured=measured_text, baseline=baseline, supported=None,
                          why=f"not testable: the local stage did not hurt A (measured change {measured:.3g})",
                          figures=figures)
    closer = abs(measured - second) < abs(measured - first)
    accurate = rel <= rtol
    part_a = (f"(a) second order {'closer' if closer else 'not closer'} to the measured damage than first order, "
              f"quadratic error {rel:.1%} {'<=' if accurate else '>'} {rtol:.0%}")
    concentrated = whole >= min_share and top > random_max
    part_b = (f"(b) rank-{r} subspace carries {whole:.3g} of the whole second-order damage "
              f"({'>=' if whole >= min_share else '<'} {min_share}; {top:.2f} of the part on its coordinates, "
              f"which hold {coordinates_part:.3g}), {'above' if top > random_max else 'not above'} every random "
              f"subspace ({random_max:.3f})")
    return ClaimCheck(claim="C5", name="second-order-subspace", statement=C5_STATEMENT, paper=C5_PAPER,
                      measured=measured_text, baseline=baseline,
                      supported=bool(closer and accurate and concentrated), why=f"{part_a}; {part_b}",
                      figures=figures)


# ------------------------------------------------------------------------------------------- C6

C6_STATEMENT = ("A short refresh contracts the harmful component (theory: gradient steps on A shrink "
                "||P_S(theta_t - theta_A*)|| at least as fast as (1 - alpha mu_A)^t).")
C6_PAPER = ("Theorem 1: ||P_S(theta_t - theta_A*)|| <= (1 - alpha mu_A)^t ||P_S delta_B|| under curvature >= mu_A on S, "
            "weak back-flow and plain gradient steps; Math 57.66 -> 66.04 after a brief Re-Math refresh")


def check_c6_theory(distance_s: Sequence[float], mu: float, alpha: float, *, name: str = "gd-contraction",
                    drift_corrected: Sequence[float] | None = None) -> ClaimCheck:
    """C6's theorem on one plain gradient-descent refresh.

    Inputs: ``distance_s``, ``||P_S(theta_t - theta_A*)||`` for ``t = 0..T`` (the ``distance_s`` column of
    :func:`mdrl_lib.perturbation.gd_refresh`); ``mu``, the smallest curvature of ``L_A`` on ``S`` (e.g. the
    first value of :func:`mdrl_lib.perturbation.curvature_on_subspace`); ``alpha``, the constant rate;
    ``drift_corrected`` (reported only), the same distance measured against the gradient-descent path
    started at ``theta_A*`` itself rather than against the fixed point ``theta_A*``.

    Rule, fixed before it was applied to a seed other than 0: not testable (``None``) when ``mu <= 0``
    (no positive curvature on ``S``: the theorem does not apply), when ``alpha mu >= 2`` (the rate is too
    large for any contraction) or when ``distance_s[0] == 0``; otherwise supported when the measured ratio
    ``distance_s[T] / distance_s[0]`` is at most the bound's ratio ``|1 - alpha mu|^T``.
    """
    distances = [float(x) for x in distance_s]
    if len(distances) < 2:
        raise ValueError("distance_s needs at least two entries (t = 0 and t = T)")
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    steps = len(distances) - 1
    bound = abs(1.0 - alpha * mu) ** steps
    ratio = distances[-1] / distances[0] if distances[0] > 0 else math.nan
    figures: dict[str, Any] = {"steps": steps, "alpha": alpha, "mu": mu, "alpha_mu": alpha * mu,
                               "distance_s_start": distances[0], "distance_s_end": distances[-1],
                               "measured_ratio": ratio, "bound_ratio": bound}
    measured = (f"after {steps} gradient steps at alpha = {alpha:.3g}: ||P_S(theta_t - theta_A*)|| went "
                f"{distances[0]:.3g} -> {distances[-1]:.3g} (ratio {ratio:.4f})")
    if drift_corrected is not None:
        drift = [float(x) for x in drift_corrected]
        if len(drift) != len(distances):
            raise ValueError(f"drift_corrected needs {len(distances)} entries, got {len(drift)}")
        figures["drift_corrected_ratio"] = drift[-1] / drift[0] if drift[0] > 0 else None
        measured += (f"; against gradient descent from theta_A* itself: ratio "
                     f"{figures['drift_corrected_ratio']:.4f}" if drift[0] > 0 else "")
    baseline = f"the theorem's bound |1 - alpha mu|^T = {bound:.4f} with mu = {mu:.3g} (alpha mu = {alpha * mu:.3g})"
    if mu <= 0 or alpha * mu >= 2 or not distances[0] > 0:
        reason = ("mu <= 0: no positive curvature on S, the theorem does not apply" if mu <= 0 else
                  "alpha mu >= 2: the rate is too large for the bound to contract" if alpha * mu >= 2 else
                  "the damaged point has no component on S")
        return ClaimCheck(claim="C6", name=name, statement=C6_STATEMENT, paper=C6_PAPER, measured=measured,
                          baseline=baseline, supported=None, why=f"not testable: {reason}", figures=figures)
    ok = ratio <= bound
    why = f"measured ratio {ratio:.4f} {'<=' if ok else '>'} the bound's {bound:.4f}"
    if figures.get("drift_corrected_ratio") is not None:
        drift_ok = figures["drift_corrected_ratio"] <= bound
        why += (f" (reported, not judged: against the GD path from theta_A* the ratio is "
                f"{figures['drift_corrected_ratio']:.4f}, {'within' if drift_ok else 'beyond'} the bound)")
    return ClaimCheck(claim="C6", name=name, statement=C6_STATEMENT, paper=C6_PAPER, measured=measured,
                      baseline=baseline, supported=bool(ok), why=why, figures=figures)
