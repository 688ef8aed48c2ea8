"""Claims C5 (second-order damage in a conflict subspace) and C6's theorem, introduced in notebook
``03_perturbation_theory``.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import pandas as pd

from mdrl_lib.claims.record import ClaimCheck
from mdrl_lib.claims.rules import rule

# ------------------------------------------------------------------------------------------- C5

C5_STATEMENT = ("Later-domain damage is mainly second-order and concentrated in a low-dimensional shared "
                "conflict subspace.")
C5_PAPER = ("derivation only: Delta_{B->A} ~= g_A^T delta_B + 1/2 delta_B^T H_A delta_B with the first-order "
            "term suppressed near theta_A*, and the dominant term 1/2 (P_S delta_B)^T H_A (P_S delta_B); no figure")
C5_RTOL = rule("C5", "rtol")  # the quadratic prediction must be within this fraction of the measured damage at t = 1
C5_MIN_SHARE = rule("C5", "min_share")  # the top-r subspace must carry at least this share of the second-order damage on its coordinates


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


# ------------------------------------------------------------------------------------ narration


def taylor_text(far: pd.DataFrame, local: pd.DataFrame, far_along: pd.DataFrame, displacement: float,
                rtol: float = C5_RTOL) -> str:
    """What notebook 03's Taylor terms say, in two lines: ``far`` and ``local``, the
    :func:`~mdrl_lib.perturbation.taylor_terms` tables of the default-rate and local B stages; ``far_along``,
    the default-rate stage's table at its checkpoints (columns ``step``, ``relative_error``);
    ``displacement``, that stage's ``||delta_B|| / ||theta_A*||``."""
    from mdrl_lib.perturbation import quadratic_validity

    at_far, at_local = far.iloc[-1], local.iloc[-1]
    off = far_along[(far_along["step"] > 0) & ~(far_along["relative_error"] <= rtol)]["step"]
    locality = "this is far from local" if not at_far["relative_error"] <= rtol else "this is still local"
    first_line = (f"Default rate: B moved the weights by {displacement:.1%} of their norm. At t = 1 the measured "
                  f"damage is {at_far['measured']:.3g}, the quadratic prediction {at_far['predicted']:.3g} "
                  f"({at_far['relative_error']:.0%} off): {locality}. The quadratic picture holds up to t = "
                  f"{quadratic_validity(far, rtol=rtol)} on the segment"
                  + (f"; along B's training it is first more than {rtol:.0%} off at step {int(off.min())}."
                     if len(off) else "."))
    dominant = "second" if abs(at_local["second_order"]) > abs(at_local["first_order"]) else "first"
    second_line = (f"Local regime: at t = 1 the measured damage is {at_local['measured']:.3g}; first order "
                   f"{at_local['first_order']:.3g}, second order {at_local['second_order']:.3g} ({dominant} "
                   f"dominates); quadratic prediction {at_local['relative_error']:.1%} off.")
    return f"{first_line}\n{second_line}"


def agreement_text(c5: ClaimCheck, c6: Sequence[ClaimCheck], *, displacement: float, coordinates: int,
                   real: pd.DataFrame, b_title: str, refresh_steps: int) -> str:
    """Where notebook 03's run agrees with the paper and where it does not, one line per point, from the checks'
    figures: ``c5`` (:func:`check_c5` with ``far``), ``c6`` (:func:`check_c6_theory` with ``drift_corrected``);
    ``displacement``, the default-rate stage's ``||delta_B|| / ||theta_A*||``; ``coordinates``, the number of
    shared-route coordinates; ``real``, the table of L_A and distances at theta_A*, after B and after the
    real refresh (rows in that order)."""
    f5 = c5.figures
    measured, first, second = f5["local_measured"], f5["local_first_order"], f5["local_second_order"]
    closer = abs(measured - second) < abs(measured - first)
    carried = (f"is carried by the second-order term {second:.3g}, not the first {first:.3g}" if closer else
               f"is closer to the first-order term {first:.3g} than to the second-order term {second:.3g}")
    lines = [f"C5, second order ({'agrees' if closer else 'disagrees'}): in the local regime the damage {measured:.3g} "
             f"{carried}; the quadratic prediction is {f5['local_relative_error']:.1%} off."]
    far_error = abs(f5["far_predicted"] - f5["far_measured"]) / abs(f5["far_measured"])
    reach = ("far outside the region where a Taylor expansion at θ_A* describes the loss" if far_error > f5["rtol"]
             else "still within the region where a Taylor expansion at θ_A* describes the loss")
    lines.append(f"C5, the default rate (not judged): the measured damage {f5['far_measured']:.3g} is "
                 f"{f5['far_measured'] / f5['far_predicted']:.2g}x the quadratic prediction {f5['far_predicted']:.3g}. "
                 f"A stage at the run's rate moves the weights by {displacement:.1%}, {reach}.")
    r, beats_random = f5["r"], f5["top_share"] > f5["random_share_max"]
    concentrated = f5["share_of_whole"] >= f5["min_share"] and beats_random
    within = ("within the shared routes the damage is low-dimensional" if beats_random else
              "even within the shared routes the top directions do no better than random ones")
    where = ("most of it lies off the shared MLP routes" if f5["coordinates_part"] < 0.5 else
             "most of it lies on the shared MLP routes")
    lines.append(f"C5, subspace ({'agrees' if concentrated else 'disagrees'}): on the {coordinates} shared-route "
                 f"coordinates, the top-{r} eigenvectors carry {f5['top_share']:.2f} of the local second-order damage "
                 f"there (random {r}-dim subspaces at most {f5['random_share_max']:.3f}): {within}. But these "
                 f"coordinates hold {f5['coordinates_part']:.1%} of the whole second-order term, so the subspace "
                 f"carries {f5['share_of_whole']:.1%} of the damage: {where}.")
    for check in c6:
        f6 = check.figures
        lines.append(f"C6 theory, {check.name} ({check.verdict}): ‖P_S(θ_t − θ_A*)‖ ratio {f6['measured_ratio']:.4f} "
                     f"after {f6['steps']} steps against the bound's {f6['bound_ratio']:.4f} (α μ = "
                     f"{f6['alpha_mu']:.2g}); against the GD path from θ_A*: {f6['drift_corrected_ratio']:.4f}.")
    start, after, refreshed = (real.iloc[i] for i in range(3))
    lines.append(f"Real refresh: L_A {after['L_A']:.4f} after {b_title} -> {refreshed['L_A']:.4f} after "
                 f"{refresh_steps} GRPO steps (θ_A*: {start['L_A']:.4f}); distance to θ_A* {after['‖θ − θ_A*‖']:.3g} -> "
                 f"{refreshed['‖θ − θ_A*‖']:.3g}, on S {after['on S: ‖P_S(θ − θ_A*)‖']:.3g} -> "
                 f"{refreshed['on S: ‖P_S(θ − θ_A*)‖']:.3g}.")
    return "\n".join(lines)
