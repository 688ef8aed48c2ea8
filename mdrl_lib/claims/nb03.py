"""Claims C5 (second-order damage in a conflict subspace) and C6's theorem, introduced in notebook
``03_perturbation_theory``.

Both are theory checks: each record carries its premises (measured by :mod:`mdrl_lib.perturbation`'s premise
functions against the rules file's ``[premises] theory_*`` thresholds), and a failed premise makes the verdict
"not testable here" (:class:`~mdrl_lib.claims.record.ClaimCheck`).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import pandas as pd

from mdrl_lib.claims.record import ClaimCheck, premises_table, premises_text  # noqa: F401 (premises_table: the notebook reads it here)
from mdrl_lib.claims.rules import rule

# ------------------------------------------------------------------------------------------- C5

C5_STATEMENT = ("Later-domain damage is mainly second-order and concentrated in a low-dimensional shared "
                "conflict subspace.")
C5_PAPER = ("derivation only: Delta_{B->A} ~= g_A^T delta_B + 1/2 delta_B^T H_A delta_B with the first-order "
            "term suppressed near theta_A*, and the dominant term 1/2 (P_S delta_B)^T H_A (P_S delta_B); no figure")
C5_RTOL = rule("C5", "rtol")  # how far the quadratic prediction may be off when the notebook narrates where it holds
C5_MIN_SHARE = rule("C5", "min_share")  # the top-r subspace must carry at least this share of the whole second-order damage
C5_SECOND_ORDER_SHARE = rule("C5", "second_order_share")  # "mainly second order": the second-order term's share of the terms
LOCALITY_RTOL = rule("premises", "theory_locality_rtol")  # the locality premise's tolerance (C5 and C6's theorem)


def second_order_share(measured: float, first: float, second: float) -> float:
    """``|second| / (|first| + |second| + |measured - first - second|)``: the second-order term's share of the
    magnitudes of the three parts of the measured damage (first order, second order, the remainder the quadratic
    model misses). Above 1/2 the damage is *mainly* second order. Introduced in ``03_perturbation_theory``."""
    parts = abs(first) + abs(second) + abs(measured - first - second)
    return abs(second) / parts if parts > 0 else math.nan


def check_c5(stage: Mapping[str, float], shares: pd.DataFrame, *, r: int, coordinates_part: float = 1.0,
             nonshared_parts: Sequence[float] = (), premises: Sequence[Mapping] = (),
             local: Mapping[str, float] | None = None, path: pd.DataFrame | None = None,
             pair: tuple[str, str] = ("A", "B"), min_share: float = C5_MIN_SHARE,
             min_second_order: float = C5_SECOND_ORDER_SHARE, name: str = "second-order-subspace",
             regime: str = "default LM", caveats: Sequence[str] | None = None,
             what: str = "B's stage at the run's rate") -> ClaimCheck:
    """C5 judged on B's stage at the run's own rate (the default-rate stage), its premises measured first.

    Inputs: ``stage``, the row ``t = 1`` of :func:`mdrl_lib.perturbation.taylor_terms` for that stage's displacement
    ``delta_B`` (keys ``measured``, ``first_order``, ``second_order``, ``predicted``); ``shares``, its
    :func:`~mdrl_lib.perturbation.captured_share` table on the shared-route coordinates (columns ``r``, ``top``,
    ``random_mean``, ``random_max``; random subspaces of those coordinates, at least 10 draws); ``coordinates_part``,
    the part of the whole second-order term those coordinates hold (``delta_S^T H_A delta_S / delta_B^T H_A
    delta_B``); ``nonshared_parts``, the same part for sets of *non-shared* MLP channels of the same count (the
    matched control, :class:`~mdrl_lib.perturbation.TheoryPremises`); ``premises``, premise dicts (locality along
    the stage, damage, objective valid: built by :func:`mdrl_lib.recipes.nb03.c5_inputs`); ``local`` (reported, not
    judged), the same ``t = 1`` row for the local-regime stage, where the expansion holds by construction;
    ``path`` (reported), the :class:`~mdrl_lib.perturbation.PathAlong` table of the stage: ``g_A^T delta_B`` split
    over B's checkpoints, with each segment's cosine to ``g_A``; ``pair``: (A, B) names for the caveat; ``name``,
    ``regime`` (the ladder's rung, :data:`~mdrl_lib.claims.record.REGIMES`), ``caveats`` (default: one pair, one
    world seed) and ``what`` (the displacement in words) label the record, so that one rule judges every rung.

    Rule, fixed before the confirmation seeds run:

    - premises (a failed one gives "not testable here"): locality, damage, objective valid;
    - not testable (``None``) when the measured damage is not positive (B did not hurt A's loss);
    - (a) mainly second order: :func:`second_order_share` above ``min_second_order``;
    - (b) concentration: the top-``r`` subspace carries at least ``min_share`` of the *whole* second-order damage
      (``top * coordinates_part``), more than every random ``r``-dimensional subspace of the same coordinates, and
      the shared-route coordinates hold more of the whole term than every set of non-shared channels of the same
      count (the subspace must be special *because* it lies on the shared routes);
    - supported when (a) and (b) hold. ``tested="mechanism"``: the second-order term and the subspace are judged.
    """
    for key in ("measured", "first_order", "second_order", "predicted"):
        if key not in stage:
            raise KeyError(f"stage lacks {key!r}; give the t = 1 row of taylor_terms")
    missing = {"r", "top", "random_mean", "random_max"} - set(shares.columns)
    if missing:
        raise ValueError(f"shares lacks column(s) {sorted(missing)}; give the table of captured_share")
    if r not in set(shares["r"].astype(int)):
        raise ValueError(f"r={r} is not in the shares table (r = 1..{int(shares['r'].max())})")
    measured, first, second = (float(stage[k]) for k in ("measured", "first_order", "second_order"))
    predicted = float(stage["predicted"])
    row = shares.set_index(shares["r"].astype(int)).loc[r]
    top, random_mean, random_max = float(row["top"]), float(row["random_mean"]), float(row["random_max"])
    rel = abs(predicted - measured) / abs(measured) if measured != 0 else math.inf
    share2 = second_order_share(measured, first, second)
    whole = top * float(coordinates_part)
    controls = [float(x) for x in nonshared_parts]
    control_max = max(controls) if controls else math.nan
    control_mean = sum(controls) / len(controls) if controls else math.nan
    figures: dict[str, Any] = {"measured": measured, "first_order": first, "second_order": second,
                               "remainder": measured - predicted, "relative_error": rel, "second_order_share": share2,
                               "r": r, "top_share": top, "random_share_mean": random_mean,
                               "random_share_max": random_max, "coordinates_part": float(coordinates_part),
                               "share_of_whole": whole, "nonshared_part_mean": control_mean,
                               "nonshared_part_max": control_max, "nonshared_draws": len(controls),
                               "min_share": min_share, "min_second_order": min_second_order}
    measured_text = (f"{what}, t = 1: measured {measured:.3g}, first-order {first:.3g}, "
                     f"second-order {second:.3g}, remainder {measured - predicted:.3g} (quadratic error {rel:.0%}; "
                     f"second order's share {share2:.2f}); rank-{r} conflict subspace: {top:.2f} of the second-order "
                     f"damage on the shared-route coordinates (random subspaces max {random_max:.3g}), which hold "
                     f"{coordinates_part:.3g} of the whole term (non-shared channel sets of the same size: mean "
                     f"{control_mean:.3g}, max {control_max:.3g}): {whole:.3g} of the whole")
    if path is not None and len(path) > 1:
        moved = path[path["step"] > 0]
        cos = moved["cosine"].abs()
        figures.update(path_first_order=float(moved["first_order"].iloc[-1]), path_cosine_max=float(cos.max()),
                       path_cosine_mean=float(cos.mean()))
        measured_text += (f"; g_A^T delta_B over {len(moved)} segments of B's path sums to "
                          f"{figures['path_first_order']:.3g}, segment cosines with g_A at most {cos.max():.3g}")
    if local is not None:
        lm, lf, ls = (float(local[k]) for k in ("measured", "first_order", "second_order"))
        figures.update(local_measured=lm, local_first_order=lf, local_second_order=ls,
                       local_second_order_share=second_order_share(lm, lf, ls),
                       local_relative_error=abs(lf + ls - lm) / abs(lm) if lm else None)
        measured_text += (f"; local stage (its own record judges it): measured {lm:.3g}, first "
                          f"{lf:.3g}, second {ls:.3g}")
    baseline = (f"the first-order term g_A^T delta_B and the remainder; random {r}-dimensional subspaces of the same "
                f"coordinates; {len(controls)} sets of non-shared MLP channels of the same count")
    caveats = list(caveats) if caveats is not None else [f"one pair ({pair[0]} -> {pair[1]}) and one world seed"]
    if not measured > 0:
        return ClaimCheck(claim="C5", name=name, statement=C5_STATEMENT, paper=C5_PAPER,
                          measured=measured_text, baseline=baseline, supported=None,
                          why=f"not testable: B's stage did not raise L_A (measured change {measured:.3g})",
                          figures=figures, premises=list(premises), tested="mechanism", caveats=caveats,
                          regime=regime)
    mainly = share2 > min_second_order
    part_a = (f"(a) second order's share of the terms {share2:.2f} {'>' if mainly else '<='} {min_second_order}")
    special = bool(controls) and coordinates_part > control_max
    concentrated = whole >= min_share and top > random_max and special
    part_b = (f"(b) rank-{r} subspace carries {whole:.3g} of the whole second-order damage "
              f"({'>=' if whole >= min_share else '<'} {min_share}), {'above' if top > random_max else 'not above'} "
              f"every random subspace ({random_max:.3g}); the shared-route coordinates hold {coordinates_part:.3g} of "
              f"the whole term, {'above' if special else 'not above'} every non-shared set of the same size "
              f"(max {control_max:.3g})")
    return ClaimCheck(claim="C5", name=name, statement=C5_STATEMENT, paper=C5_PAPER,
                      measured=measured_text, baseline=baseline, supported=bool(mainly and concentrated),
                      why=f"{part_a}; {part_b}", figures=figures, premises=list(premises), tested="mechanism",
                      caveats=caveats, regime=regime)


# ------------------------------------------------------------------------------------------- C6

C6_STATEMENT = ("A short refresh contracts the harmful component (theory: gradient steps on A shrink "
                "||P_S(theta_t - theta_A*)|| at least as fast as (1 - alpha mu_A)^t).")
C6_PAPER = ("Theorem 1: ||P_S(theta_t - theta_A*)|| <= (1 - alpha mu_A)^t ||P_S delta_B|| under curvature >= mu_A on S, "
            "weak back-flow and plain gradient steps; Math 57.66 -> 66.04 after a brief Re-Math refresh")


def check_c6_theory(distance_s: Sequence[float], mu: float, alpha: float, *, name: str = "gd-contraction",
                    drift_corrected: Sequence[float] | None = None, premises: Sequence[Mapping] = (),
                    regime: str = "default LM", caveats: Sequence[str] | None = None) -> ClaimCheck:
    """C6's theorem on one plain gradient-descent refresh.

    Inputs: ``distance_s``, ``||P_S(theta_t - theta_A*)||`` for ``t = 0..T`` (the ``distance_s`` column of
    :func:`mdrl_lib.perturbation.gd_refresh`); ``mu``, the smallest curvature of ``L_A`` on ``S`` (e.g. the
    first value of :func:`mdrl_lib.perturbation.curvature_on_subspace`); ``alpha``, the constant rate;
    ``drift_corrected`` (reported only), the same distance measured against the gradient-descent path
    started at ``theta_A*`` itself rather than against the fixed point ``theta_A*``; ``premises``: the theorem's
    premises as measured (stationarity total and on S, locality, curvature on S, back-flow, plain GD, damage:
    built by :func:`mdrl_lib.recipes.nb03.c6_theory_inputs`); a failed one gives "not testable here"; ``regime``:
    the ladder's rung (:data:`~mdrl_lib.claims.record.REGIMES`); ``caveats``: default one pair, one world seed and
    plain GD on L_A rather than the kit's RL refresh.

    Rule, fixed before it was applied to a seed other than 0: not testable (``None``) when ``mu <= 0``
    (no positive curvature on ``S``: the theorem does not apply), when ``alpha mu >= 2`` (the rate is too
    large for any contraction) or when ``distance_s[0] == 0``; otherwise supported when the measured ratio
    ``distance_s[T] / distance_s[0]`` is at most the bound's ratio ``|1 - alpha mu|^T``.
    ``tested="mechanism"``: the contraction itself is measured.
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
    common = {"claim": "C6", "name": name, "statement": C6_STATEMENT, "paper": C6_PAPER, "measured": measured,
              "baseline": baseline, "premises": list(premises), "tested": "mechanism", "regime": regime,
              "caveats": list(caveats) if caveats is not None else
              ["one pair and one world seed; plain GD on L_A, not the kit's RL refresh"]}
    if mu <= 0 or alpha * mu >= 2 or not distances[0] > 0:
        reason = ("mu <= 0: no positive curvature on S, the theorem does not apply" if mu <= 0 else
                  "alpha mu >= 2: the rate is too large for the bound to contract" if alpha * mu >= 2 else
                  "the damaged point has no component on S")
        return ClaimCheck(**common, supported=None, why=f"not testable: {reason}", figures=figures)
    ok = ratio <= bound
    why = f"measured ratio {ratio:.4f} {'<=' if ok else '>'} the bound's {bound:.4f}"
    if figures.get("drift_corrected_ratio") is not None:
        drift_ok = figures["drift_corrected_ratio"] <= bound
        why += (f" (reported, not judged: against the GD path from theta_A* the ratio is "
                f"{figures['drift_corrected_ratio']:.4f}, {'within' if drift_ok else 'beyond'} the bound)")
    return ClaimCheck(**common, supported=bool(ok), why=why, figures=figures)


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
    share = second_order_share(at_far["measured"], at_far["first_order"], at_far["second_order"])
    first_line = (f"Default rate (the run's own stage, judged): B moved the weights by {displacement:.1%} of their "
                  f"norm. At t = 1 the measured damage is {at_far['measured']:.3g}, the quadratic prediction "
                  f"{at_far['predicted']:.3g} ({at_far['relative_error']:.0%} off): {locality}; the second-order "
                  f"term is {share:.2f} of the terms. The quadratic picture holds up to t = "
                  f"{quadratic_validity(far, rtol=rtol)} on the segment"
                  + (f"; along B's training it is first more than {rtol:.0%} off at step {int(off.min())}."
                     if len(off) else "."))
    dominant = "second" if abs(at_local["second_order"]) > abs(at_local["first_order"]) else "first"
    second_line = (f"Local regime (reported beside: so small a step keeps the expansion valid by construction): at "
                   f"t = 1 the measured damage is {at_local['measured']:.3g}; first order "
                   f"{at_local['first_order']:.3g}, second order {at_local['second_order']:.3g} ({dominant} "
                   f"dominates); quadratic prediction {at_local['relative_error']:.1%} off.")
    return f"{first_line}\n{second_line}"


def tracking_text(tracking: Mapping[str, Mapping], a_title: str) -> str:
    """One line per regime saying whether L_A tracks A's held-out score along B's checkpoints, from
    :func:`~mdrl_lib.perturbation.objective_tracking` results keyed by regime name."""
    lines = []
    for name, t in tracking.items():
        rho, p, agree = t["rank_correlation"], t["p_value"], t["sign_agreement"]
        if not t["segments"] or not math.isfinite(rho):  # A's score did not move: there is nothing to track
            lines.append(f"{name}: {a_title}'s held-out score does not move over the {t['k']} checkpoints (no segment "
                         f"changes it), so whether L_A tracks it cannot be measured here.")
            continue
        verdict = ("tracks" if (p <= rule("premises", "theory_objective_alpha") and
                                agree > rule("premises", "theory_objective_sign_agreement")) else "does not track")
        lines.append(f"{name}: L_A {verdict} {a_title}'s held-out score over {t['k']} checkpoints (Spearman rho "
                     f"{rho:.2f}, one-sided p {p:.3g}; opposite moves in {agree:.0%} of {t['segments']} segments).")
    return "\n".join(lines)


def _failed(check: ClaimCheck) -> str:
    failed = check.failed_premises
    return f" Failed premises: {premises_text(failed)}." if failed else " Every premise holds."


def agreement_text(c5: ClaimCheck, c6: Sequence[ClaimCheck], *, displacement: float, coordinates: int,
                   real: pd.DataFrame, b_title: str, refresh_steps: int) -> str:
    """Where notebook 03's run agrees with the paper and where it does not, one line per point, from the checks'
    figures and premises: ``c5`` (:func:`check_c5` with ``local`` and ``path``), ``c6`` (:func:`check_c6_theory`
    with ``drift_corrected``); ``displacement``, the default-rate stage's ``||delta_B|| / ||theta_A*||``;
    ``coordinates``, the number of shared-route coordinates; ``real``, the table of L_A and distances at theta_A*,
    after B and after the real refresh (rows in that order)."""
    f5 = c5.figures
    mainly = f5["second_order_share"] > f5["min_second_order"]
    lines = [f"C5 ({c5.verdict}), second order at the run's rate ({'agrees' if mainly else 'disagrees'}): B moved "
             f"the weights by {displacement:.1%}; the measured damage {f5['measured']:.3g} splits into first order "
             f"{f5['first_order']:.3g}, second order {f5['second_order']:.3g} and a remainder {f5['remainder']:.3g} the "
             f"quadratic model misses (second order's share {f5['second_order_share']:.2f}; the prediction is "
             f"{f5['relative_error']:.0%} off)." + _failed(c5)]
    if f5.get("local_measured") is not None:
        lines.append(f"C5, local stage (judged in its own record, [local LM]): damage {f5['local_measured']:.3g} = first "
                     f"{f5['local_first_order']:.3g} + second {f5['local_second_order']:.3g} (second order's share "
                     f"{f5['local_second_order_share']:.2f}), where a small step keeps the expansion close.")
    if f5.get("path_first_order") is not None:
        lines.append(f"C5, the link to C3: g_A^T δ_B = {f5['path_first_order']:.3g} summed over B's segments, each "
                     f"nearly orthogonal to g_A (|cosine| at most {f5['path_cosine_max']:.3g}, mean "
                     f"{f5['path_cosine_mean']:.3g}): B's steps follow B's gradients, nearly orthogonal to A's, so the "
                     f"first-order term stays small although ‖g_A‖ is not.")
    r, beats_random = f5["r"], f5["top_share"] > f5["random_share_max"]
    special = f5["coordinates_part"] > (f5["nonshared_part_max"] if f5["nonshared_part_max"] is not None else math.inf)
    lines.append(f"C5, subspace: on the {coordinates} shared-route coordinates the top-{r} eigenvectors carry "
                 f"{f5['top_share']:.2f} of the second-order damage there (random {r}-dim subspaces at most "
                 f"{f5['random_share_max']:.3g}{'' if beats_random else ': no better'}); these coordinates hold "
                 f"{f5['coordinates_part']:.1%} of the whole term against {f5['nonshared_part_mean']:.1%} (max "
                 f"{f5['nonshared_part_max']:.1%}) for non-shared channel sets of the same size: the shared routes "
                 f"{'do' if special else 'do not'} hold more of the damage than other channels, and the subspace "
                 f"carries {f5['share_of_whole']:.1%} of the whole.")
    for check in c6:
        f6 = check.figures
        lines.append(f"C6 theory, {check.name} ({check.verdict}): ‖P_S(θ_t − θ_A*)‖ ratio {f6['measured_ratio']:.4f} "
                     f"after {f6['steps']} steps against the bound's {f6['bound_ratio']:.4f} (α μ = "
                     f"{f6['alpha_mu']:.2g}); against the GD path from θ_A*: {f6['drift_corrected_ratio']:.4f}."
                     + _failed(check))
    start, after, refreshed = (real.iloc[i] for i in range(3))
    lines.append(f"Real refresh: L_A {after['L_A']:.4f} after {b_title} -> {refreshed['L_A']:.4f} after "
                 f"{refresh_steps} GRPO steps (θ_A*: {start['L_A']:.4f}); distance to θ_A* {after['‖θ − θ_A*‖']:.3g} -> "
                 f"{refreshed['‖θ − θ_A*‖']:.3g}, on S {after['on S: ‖P_S(θ − θ_A*)‖']:.3g} -> "
                 f"{refreshed['on S: ‖P_S(θ − θ_A*)‖']:.3g}. Its premise 'plain GD' fails (Adam, decaying rate): "
                 f"the theorem says nothing about it.")
    return "\n".join(lines)
