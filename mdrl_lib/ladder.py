"""Notebook 03's ladder: the same theory checks (C5, C6's theorem) on four rungs, from a world where the premises
hold by construction to the toy LM where they break.

Introduced in notebook ``03_perturbation_theory``. The rungs (:data:`mdrl_lib.claims.record.REGIMES`):

1. ``quadratic``: :mod:`mdrl_lib.quadratic`'s world, exact by construction (S spans H_A's strong directions and is
   invariant under it; theta_A* is A's minimum).
2. ``controlled``: :mod:`mdrl_lib.controlled`'s two-task network, built so that the premises can hold and measured
   with the LM's functions.
3. ``local LM``: the toy LM's small-rate B stage.
4. ``default LM``: the toy LM's B stage at the run's rate.

This module turns the first two rungs' measurements into the arguments of
:func:`mdrl_lib.claims.nb03.check_c5` and :func:`~mdrl_lib.claims.nb03.check_c6_theory` (the LM rungs' come from
:mod:`mdrl_lib.recipes.nb03`), with their premises measured against the rules file's ``[premises]`` thresholds, and
sets the four rungs side by side (:func:`ladder_table`).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from mdrl_lib.claims.record import REGIMES, ClaimCheck, premise
from mdrl_lib.claims.rules import rule


def _thresholds() -> dict[str, float]:
    return {"stationarity": rule("premises", "theory_stationarity_max"),
            "locality": rule("premises", "theory_locality_rtol"), "mu": rule("premises", "theory_mu_min"),
            "backflow": rule("premises", "theory_backflow_max"),
            "alpha_lambda": rule("premises", "theory_alpha_lambda_max"),
            "damage": rule("premises", "damage_min_standard_errors"),
            "objective_alpha": rule("premises", "theory_objective_alpha"),
            "objective_sign": rule("premises", "theory_objective_sign_agreement")}


# ------------------------------------------------------------------------------------------ the quadratic rung


def quadratic_rung_inputs(world, *, draws: int = 10, seed: int = 0, bound: float = 0.5,
                          max_steps: int = 10_000) -> tuple[dict, dict]:
    """(C5's, C6's) check arguments on a :class:`~mdrl_lib.quadratic.QuadraticWorld`: S is the world's own basis
    (H_A's ``rank`` strong directions, by construction); the "shared coordinates" are A's curvature support, held
    against ``draws`` seeded sets of as many coordinates outside it; the refresh is plain GD at ``alpha = 1 /
    lambda_max`` run until the bound ``|1 - alpha mu|^t`` is at most ``bound``. Premises: stationarity (total and on
    S), locality (exact but measured), curvature on S, back-flow, plain GD, and damage (B's update raises L_A: the
    world has no held-out items, so the premise is the sign of the change). Introduced in notebook 03."""
    from mdrl_lib import perturbation as pt

    limits = _thresholds()
    r = world.basis.shape[1]
    table = world.taylor_table([0.25, 0.5, 0.75, 1.0])
    h, delta = world.h_a, world.delta_b
    total = float(delta @ h @ delta)
    support = np.zeros(world.dim)
    support[world.curvature_support] = 1.0
    coordinates_part = float((delta * support) @ h @ (delta * support)) / total
    outside = np.setdiff1d(np.arange(world.dim), world.curvature_support)
    rng = np.random.default_rng(seed)
    nonshared = []
    for _ in range(draws):
        mask = np.zeros(world.dim)
        mask[rng.choice(outside, size=min(len(outside), len(world.curvature_support)), replace=False)] = 1.0
        nonshared.append(float((delta * mask) @ h @ (delta * mask)) / total)
    project = world.basis @ world.basis.T
    on_s = project @ delta
    g = world.gradient_a(world.theta_a)
    measured = float(table.iloc[-1]["measured"])
    segment = table.assign(relative_error=(table["predicted"] - table["measured"]).abs() / table["measured"].abs())
    curvature = pt.curvature_premise(world.mu, minimum=limits["mu"])
    backflow = pt.backflow_premise(float(np.linalg.norm(project @ h @ (delta - on_s))),
                                   float(np.linalg.norm(project @ h @ on_s)), max_ratio=limits["backflow"])
    locality = pt.locality_premise(segment, rtol=limits["locality"])
    damage = premise("damage: B's update raises L_A (the world has no items; the sign of the change)", measured, 0.0,
                     measured > 0)
    stationarity = pt.stationarity_premises(float(np.linalg.norm(g)), float(np.linalg.norm(project @ g)),
                                            float(np.linalg.norm(h @ delta)), world.mu, float(np.linalg.norm(on_s)),
                                            max_ratio=limits["stationarity"])
    shares = world.captured_share(r, n_random=draws, seed=seed)
    c5 = {"stage": table.iloc[-1].to_dict(), "shares": shares, "r": r, "coordinates_part": coordinates_part,
          "nonshared_parts": nonshared, "premises": [locality, damage], "name": "second-order-subspace-quadratic",
          "regime": "quadratic", "what": "the quadratic world's update delta_B",
          "caveats": ["premises true by construction: L_A is exactly quadratic, S is H_A's strong directions",
                      "S is the world's basis, not found from routes"]}
    alpha = 1.0 / world.max_curvature
    steps = pt.steps_to_bound(alpha, world.mu, bound, max_steps)
    refresh = world.refresh(alpha, steps)
    c6 = {"distance_s": refresh["distance_s"].tolist(), "mu": world.mu, "alpha": alpha,
          "name": "gd-contraction-quadratic", "regime": "quadratic",
          "premises": [*stationarity, curvature, backflow, locality,
                       pt.plain_gd_premise("gd", "constant", alpha * world.max_curvature,
                                           max_alpha_lambda=limits["alpha_lambda"]), damage],
          "caveats": ["premises true by construction: S is invariant under H_A"]}
    return c5, c6


# ----------------------------------------------------------------------------------------- the controlled rung


def controlled_rung_inputs(result: Mapping[str, Any]) -> tuple[dict, dict]:
    """(C5's, C6's) check arguments from a :class:`~mdrl_lib.controlled.ControlledRung`'s measurements, with every
    premise the LM rungs measure: stationarity (total and on S), locality (at t = 1 and at B's checkpoints),
    curvature on S, back-flow, plain GD, damage (A's held-out per-item score, paired) and the objective (L_A
    against A's held-out score along B's checkpoints). Introduced in notebook 03."""
    from mdrl_lib import perturbation as pt

    limits = _thresholds()
    segment = pd.DataFrame(result["segment"])
    along = pd.DataFrame(result["along"])
    locality = pt.locality_premise(segment, along, rtol=limits["locality"])
    damage = pt.damage_premise(result["before"], result["after"], min_standard_errors=limits["damage"])
    objective = pt.objective_premises(along["L_A"], along["score"], alpha=limits["objective_alpha"],
                                      min_sign_agreement=limits["objective_sign"])
    stationarity = pt.stationarity_premises(result["grad_norm"], result["grad_s_norm"], result["h_delta_norm"],
                                            result["mu"], result["delta_s_norm"], max_ratio=limits["stationarity"])
    refresh = result["refresh"]
    world = result["world"]
    design = (f"designed so the premises can hold: A's inputs reach B's own channels at scale {world['leak']:g}, "
              f"theta_A* a Newton minimum of L_A (||g_A|| = {result['grad_norm']:.1e}), so the first-order term is "
              f"zero by construction")
    c5 = {"stage": segment.iloc[-1].to_dict(), "shares": pd.DataFrame(result["shares"]), "r": result["rank"],
          "coordinates_part": result["coordinates_part"], "nonshared_parts": result["nonshared_parts"],
          "premises": [locality, damage, *objective], "name": "second-order-subspace-controlled",
          "regime": "controlled",
          "what": f"B's stage in the controlled network ({world['b_steps']} GD steps at {result['b_rate']:g}, the "
                  f"largest of the grid within {world['locality_target']:g} locality)",
          "caveats": [design, f"one world seed ({world['seed']}) of a {result['parameters']}-coordinate network"]}
    c6 = {"distance_s": refresh["distance_s"], "mu": result["mu"], "alpha": refresh["alpha"],
          "name": "gd-contraction-controlled", "regime": "controlled",
          "premises": [*stationarity, locality, pt.curvature_premise(result["mu"], minimum=limits["mu"]),
                       pt.backflow_premise(result["backflow"], result["curvature_term"],
                                           max_ratio=limits["backflow"]),
                       pt.plain_gd_premise("gd", "constant", refresh["alpha"] * result["lambda_max"],
                                           max_alpha_lambda=limits["alpha_lambda"]), damage],
          "caveats": [design, f"plain GD run until the bound reached {world['gd_bound']:g} ({refresh['steps']} steps)"]}
    return c5, c6


# ------------------------------------------------------------------------------------------- side by side


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def ladder_table(checks: Sequence[ClaimCheck]) -> pd.DataFrame:
    """The rungs side by side, from their C5 and C6 (theory) checks: one row per regime present, in ladder order,
    with ``premises held`` (``held/measured`` over both checks, each premise once), ``failed premises``, C5's
    ``measured damage``, ``first order``, ``second order``, ``quadratic error`` (|predicted - measured| / |measured|
    at t = 1), ``top-R share`` (of the second-order damage on the searched coordinates) beside ``random max``, the
    ``shared part`` of the whole term beside the ``non-shared max``, C6's ``GD ratio`` beside the ``bound``, and both
    verdicts. A regime with several C6 checks takes its last. Introduced in notebook 03."""
    by_regime: dict[str, dict[str, ClaimCheck]] = {}
    for check in checks:
        if check.regime and check.claim in ("C5", "C6"):
            by_regime.setdefault(check.regime, {})[check.claim] = check
    rows = []
    for regime in REGIMES:
        if regime not in by_regime:
            continue
        pair = by_regime[regime]
        premises = {p["name"]: p for c in pair.values() for p in c.premises}
        c5, c6 = pair.get("C5"), pair.get("C6")
        f5, f6 = (c5.figures if c5 else {}), (c6.figures if c6 else {})
        rows.append({"regime": regime,
                     "premises held": f"{sum(p['holds'] for p in premises.values())}/{len(premises)}",
                     "failed premises": "; ".join(p["name"].split(":")[0] for p in premises.values()
                                                  if not p["holds"]) or "none",
                     "measured damage": _num(f5.get("measured")), "first order": _num(f5.get("first_order")),
                     "second order": _num(f5.get("second_order")), "quadratic error": _num(f5.get("relative_error")),
                     "top-R share": _num(f5.get("top_share")), "random max": _num(f5.get("random_share_max")),
                     "shared part": _num(f5.get("coordinates_part")),
                     "non-shared max": _num(f5.get("nonshared_part_max")),
                     "GD ratio": _num(f6.get("measured_ratio")), "bound": _num(f6.get("bound_ratio")),
                     "C5 verdict": c5.verdict if c5 else "not run", "C6 verdict": c6.verdict if c6 else "not run"})
    return pd.DataFrame(rows)


def ladder_text(table: pd.DataFrame) -> str:
    """What the ladder shows, one line per rung from a :func:`ladder_table`: premises held (and which failed), how
    far the quadratic model is off, the top-R share against random subspaces, the GD ratio against the bound, and
    both verdicts; then one line naming the rungs where both checks could be judged. Introduced in notebook 03."""
    lines = []
    for row in table.to_dict("records"):
        failed = "" if row["failed premises"] == "none" else f" (failed: {row['failed premises']})"
        lines.append(f"[{row['regime']}] premises {row['premises held']}{failed}; quadratic model off by "
                     f"{row['quadratic error']:.1%} at t = 1; top-R share {row['top-R share']:.3g} vs random max "
                     f"{row['random max']:.3g}; GD ratio {row['GD ratio']:.3g} vs bound {row['bound']:.3g}. "
                     f"C5: {row['C5 verdict']}; C6: {row['C6 verdict']}.")
    judged = [r["regime"] for r in table.to_dict("records")
              if "not testable" not in r["C5 verdict"] and "not testable" not in r["C6 verdict"]]
    lines.append("Both checks judged on: " + (", ".join(judged) if judged else "no rung") + "; elsewhere a premise "
                 "failed and the verdict is 'not testable here' (the rule's verdict is kept in the record).")
    return "\n".join(lines)
