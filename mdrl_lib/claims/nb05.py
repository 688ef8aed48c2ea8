"""Claims C6 (a real refresh recovers selectively) and C7 (rollback), introduced in notebook
``05_refresh_vs_rollback``.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from mdrl_lib.claims._format import _interval, _share
from mdrl_lib.claims.record import ClaimCheck

C6_REFRESH_STATEMENT = ("After a later domain damaged A, a short refresh on A recovers A selectively: A rises, the "
                        "other domains hold, and the refresh does more than further training on A would.")
C6_REFRESH_PAPER = ("Code -> Math -> QA -> CW, then a brief Re-Math refresh: Math 57.66 -> 66.04 (peak 66.49), "
                    "average 64.25 -> 66.39 at best")
C6_COLLATERAL = 0.02  # no other domain may fall by more than this (about one evaluation standard error)
C7_STATEMENT = ("Training-free rollback of a sparse set of proxy conflict coordinates (A-B pair) partially restores "
                "A, beyond random coordinates and the largest changes of the same count.")
C7_PAPER = "Math-QA pair: partial restoration of Math; selection rule and numbers not published"


def check_c6_refresh(drop: Mapping[str, float], recovery: Mapping[str, float], others: Mapping[str, Mapping[str, float]],
                     excess: Mapping[str, float], *, domain: str, steps: int, control_gain: Mapping[str, float] | None = None,
                     collateral: float = C6_COLLATERAL, name: str = "refresh-selective") -> ClaimCheck:
    """C6 on the real (GRPO) refresh of notebook ``05_refresh_vs_rollback``.

    Each argument is a paired change on the same held-out items, a mapping with ``diff``, ``ci_low`` and
    ``ci_high`` (a 95% interval, e.g. a row of :func:`mdrl_lib.recovery.paired_changes`): ``drop``, A at the
    chain's end minus A at theta_A* (its own stage's end); ``recovery``, A after the refresh minus A at the
    chain's end; ``others``, each other domain's change over the refresh; ``excess``, the refresh's gain on A
    minus the gain the same steps give from theta_A* (``control_gain``, reported), per item
    (:func:`mdrl_lib.recovery.difference_in_changes`).

    Rule, fixed before notebook 05 was first run: not testable (``None``) when A's drop is not significant
    (its interval reaches 0 or above): there is nothing to recover. Otherwise supported when (a) A's recovery
    interval lies above 0, (b) no other domain falls by more than ``collateral`` (point estimates), and (c)
    the excess over the control lies above 0 (the refresh restores, not merely trains A further).
    """
    others = dict(others)
    fall = -float(drop["diff"])
    share = float(recovery["diff"]) / fall if fall > 0 else math.nan
    worst = min(others, key=lambda d: others[d]["diff"]) if others else None
    figures: dict[str, Any] = {"domain": domain, "steps": steps, "drop": drop["diff"], "drop_ci_high": drop["ci_high"],
                               "recovery": recovery["diff"], "recovery_ci_low": recovery["ci_low"],
                               "recovered_share": share, "excess": excess["diff"], "excess_ci_low": excess["ci_low"],
                               "worst_other": worst, "worst_other_change": others[worst]["diff"] if worst else None,
                               "collateral": collateral}
    if control_gain is not None:
        figures["control_gain"] = control_gain["diff"]
        figures["control_gain_ci_high"] = control_gain.get("ci_high")
    measured = (f"{domain}: chain end minus theta_A* {_interval(drop)}; a {steps}-step refresh {_interval(recovery)} "
                f"({_share(share)} of the drop); others: " + ", ".join(f"{d} {v['diff']:+.3f}" for d, v in others.items())
                + f"; excess over the same steps from theta_A* {_interval(excess)}")
    baseline = (f"the same {steps} {domain} steps from theta_A* (gain "
                f"{'n/a' if control_gain is None else format(control_gain['diff'], '+.3f')}); the other domains' "
                f"collateral (tolerance {collateral})")
    if not drop["ci_high"] < 0:
        return ClaimCheck(claim="C6", name=name, statement=C6_REFRESH_STATEMENT, paper=C6_REFRESH_PAPER,
                          measured=measured, baseline=baseline, supported=None,
                          why=f"not testable: {domain} did not fall significantly over the later stages "
                              f"({_interval(drop)}), so there is nothing to recover", figures=figures)
    recovers = recovery["ci_low"] > 0
    holds = all(v["diff"] >= -collateral for v in others.values())
    restores = excess["ci_low"] > 0
    why = (f"(a) recovery interval {'above' if recovers else 'not above'} 0; (b) "
           + (f"the worst other domain, {worst}, moved {others[worst]['diff']:+.3f} "
              f"({'>=' if holds else '<'} -{collateral})" if worst else "no other domain")
           + f"; (c) excess over the control {'above' if restores else 'not above'} 0 ({_interval(excess)})")
    return ClaimCheck(claim="C6", name=name, statement=C6_REFRESH_STATEMENT, paper=C6_REFRESH_PAPER,
                      measured=measured, baseline=baseline, supported=bool(recovers and holds and restores), why=why,
                      figures=figures)


def check_c7(drop: Mapping[str, float], recovery: Mapping[str, float], over_controls: Mapping[str, Mapping[str, float]],
             *, pair: Sequence[str], rule: str, fraction: float, count: int,
             others: Mapping[str, Mapping[str, float]] | None = None, name: str | None = None) -> ClaimCheck:
    """C7 on one rollback of notebook ``05_refresh_vs_rollback``, at a budget fixed in advance.

    Paired changes on the same items (mappings with ``diff``, ``ci_low``, ``ci_high``): ``drop``, A at the
    chain's end minus A before B's stage; ``recovery``, A after the rollback minus A at the chain's end;
    ``over_controls``, A after the rollback minus A after each control of the same count (``random``,
    ``magnitude``); ``others`` (reported), every other domain's change over the rollback.

    Rule, fixed before notebook 05 was first run: not testable (``None``) when A's drop is not significant
    (its interval reaches 0 or above). Otherwise supported when (a) A's recovery interval lies above 0 and
    (b) for every control, the interval of the rollback's advantage over it lies above 0. "Partially" is
    reported (the recovered share of the drop), not judged.
    """
    a, b = pair
    fall = -float(drop["diff"])
    share = float(recovery["diff"]) / fall if fall > 0 else math.nan
    figures: dict[str, Any] = {"pair": f"{a},{b}", "rule": rule, "fraction": fraction, "count": count,
                               "drop": drop["diff"], "drop_ci_high": drop["ci_high"], "recovery": recovery["diff"],
                               "recovery_ci_low": recovery["ci_low"], "recovered_share": share}
    for control, gap in over_controls.items():
        figures[f"over_{control}"] = gap["diff"]
        figures[f"over_{control}_ci_low"] = gap["ci_low"]
    measured = (f"{a}: chain end minus before {b}'s stage {_interval(drop)}; rolling back {count} coordinates "
                f"({fraction:g} of all) by {rule}: {_interval(recovery)} ({_share(share)} of the drop); over "
                + ", ".join(f"{c} {_interval(g)}" for c, g in over_controls.items()))
    if others:
        measured += "; others: " + ", ".join(f"{d} {v['diff']:+.3f}" for d, v in others.items())
    baseline = f"{', '.join(over_controls)} coordinates of the same count ({count})"
    name = name or f"rollback-{a}-{b}"
    if not drop["ci_high"] < 0:
        return ClaimCheck(claim="C7", name=name, statement=C7_STATEMENT, paper=C7_PAPER, measured=measured,
                          baseline=baseline, supported=None,
                          why=f"not testable: {a} did not fall significantly after {b}'s stage ({_interval(drop)})",
                          figures=figures)
    if not over_controls:
        raise ValueError("C7 needs at least one control of the same count")
    recovers = recovery["ci_low"] > 0
    beats = {c: g["ci_low"] > 0 for c, g in over_controls.items()}
    why = (f"(a) recovery interval {'above' if recovers else 'not above'} 0; (b) "
           + "; ".join(f"over {c}: {'above' if ok else 'not above'} 0" for c, ok in beats.items()))
    return ClaimCheck(claim="C7", name=name, statement=C7_STATEMENT, paper=C7_PAPER, measured=measured,
                      baseline=baseline, supported=bool(recovers and all(beats.values())), why=why, figures=figures)
