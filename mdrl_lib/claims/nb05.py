"""Claims C6 (a real refresh recovers selectively) and C7 (rollback), introduced in notebook
``05_refresh_vs_rollback``: the checks, and the notebook's verdicts in words (:func:`drop_text`,
:func:`refresh_budget_text`, :func:`pair_drop_text`, :func:`agreement_text`).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from mdrl_lib.claims._format import _interval, _share
from mdrl_lib.claims.record import ClaimCheck
from mdrl_lib.claims.rules import rule

if TYPE_CHECKING:
    import pandas as pd

C6_REFRESH_STATEMENT = ("After a later domain damaged A, a short refresh on A recovers A selectively: A rises, the "
                        "other domains hold, and the refresh does more than further training on A would.")
C6_REFRESH_PAPER = ("Code -> Math -> QA -> CW, then a brief Re-Math refresh: Math 57.66 -> 66.04 (peak 66.49), "
                    "average 64.25 -> 66.39 at best")
C6_COLLATERAL = rule("C6", "collateral")  # no other domain may fall by more than this (about one evaluation standard error)
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


# ------------------------------------------------------------------- the notebook's verdicts in words


def _num(value: Any, spec: str = "+.3f") -> str:
    """A figure as text; "n/a" where the run could not compute it."""
    return "n/a" if value is None else format(value, spec)


def drop_text(drop: Mapping[str, float], domain: str) -> str:
    """What A's fall from theta_A* to the chain's end (a paired change with ``before``, ``after``, ``diff``,
    ``ci_low``, ``ci_high``) leaves to recover: a significant fall, or not (then the checks are not testable)."""
    from mdrl_lib.domains.base import DOMAIN_TITLES

    title = DOMAIN_TITLES[domain]
    head = (f"{title}: {drop['before']:.3f} -> {drop['after']:.3f}, change {drop['diff']:+.3f} "
            f"[{drop['ci_low']:+.3f}, {drop['ci_high']:+.3f}]: ")
    if drop["ci_high"] < 0:
        return head + "this is what the methods below try to recover."
    return head + (f"not a significant fall, so there is little to recover on this run: the shares of the drop below "
                   f"mean nothing, and the claim checks will say 'not testable'. Look at the chain's matrix: where "
                   f"{title}'s own stage left it decides how much the later stages can take away.")


def refresh_budget_text(summary: pd.DataFrame, domain: str, before: float) -> str:
    """Where the decaying-rate refresh's gain on A saturates (the smallest budget with 90% of the best gain),
    and the gains at a constant rate and of the controls from theta_A* (A at ``before`` there). ``summary``:
    A's change per budget (index) and curve (columns), as :func:`mdrl_lib.recipes.nb05.refresh_summary`."""
    from mdrl_lib.domains.base import DOMAIN_TITLES
    from mdrl_lib.recipes.nb05 import CONTROL_CURVE, refresh_curve

    title = DOMAIN_TITLES[domain]
    gains = summary[refresh_curve("linear")]
    best_steps = int(gains.idxmax())
    first_near = int(gains[gains >= 0.9 * gains.max()].index.min()) if gains.max() > 0 else None
    if first_near is None:
        lines = [f"At the decaying rate no budget raised {title}."]
    elif first_near == int(gains.index.max()):
        lines = [f"At the decaying rate {title} gains most after {best_steps} steps ({gains.max():+.3f}), and no "
                 f"smaller budget gives 90% of that: the recovery has not saturated within the budgets tried."]
    else:
        lines = [f"At the decaying rate {title} gains most after {best_steps} steps ({gains.max():+.3f}); "
                 f"{first_near} steps already give 90% of that, so the recovery saturates there."]
    if refresh_curve("constant") in summary:
        constant = summary[refresh_curve("constant")]
        lines.append(f"At a constant rate: {', '.join(f'{s} steps {v:+.3f}' for s, v in constant.items())}.")
    control = summary[CONTROL_CURVE]
    lines.append(f"The same steps from θ_A*: {', '.join(f'{s} steps {v:+.3f}' for s, v in control.items())} "
                 f"(from {before:.3f}).")
    return "\n".join(lines)


def pair_drop_text(drops: Mapping[str, pd.DataFrame]) -> str:
    """Per rollback pair ``"A,B"``, A's paired change from before B's stage to the chain's end (``drops``: its
    ``paired_changes`` table), one line each: the fall C7 asks a rollback to undo."""
    from mdrl_lib.domains.base import DOMAIN_TITLES

    lines = []
    for pair, table in drops.items():
        a, b = pair.split(",")
        d = table.set_index("domain").loc[a]
        lines.append(f"{DOMAIN_TITLES[a]} from before {DOMAIN_TITLES[b]}'s stage to the chain's end: {d['before']:.3f} "
                     f"-> {d['after']:.3f} ({d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}])")
    return "\n".join(lines)


def agreement_text(c6: ClaimCheck, c7: Sequence[ClaimCheck], distance: pd.DataFrame) -> str:
    """Notebook 05's verdicts in words, from the checks' figures: C6 against the paper's refresh, whether the
    linear refresh moved back towards theta_A* on the conflict subspace (``distance``: per ``curve`` and
    ``steps``, the ``subspace`` distance, as :func:`mdrl_lib.recipes.nb05.refresh_distances`), whether more A
    training from theta_A* itself lowered A, and each C7 pair's recovery against its controls."""
    from mdrl_lib.domains.base import DOMAIN_TITLES
    from mdrl_lib.recipes.nb05 import refresh_curve

    f6 = c6.figures
    title, steps = DOMAIN_TITLES[f6["domain"]], f6["steps"]
    lines = [f"C6 ({c6.verdict}): {title} moved {_num(f6['drop'])} from θ_A* to the chain's end; the {steps}-step "
             f"refresh moved it {_num(f6['recovery'])} ({_num(f6['recovered_share'], '.0%')} of the drop; the paper: "
             f"57.66 -> 66.04, more than the whole drop). The same steps from θ_A* moved {title} by "
             f"{_num(f6.get('control_gain'))}, so the refresh's excess is {_num(f6['excess'])}; the worst other domain "
             f"({f6['worst_other']}) moved {_num(f6['worst_other_change'])}."]
    along = distance[distance["curve"] == refresh_curve("linear")].set_index("steps")["subspace"]
    back = along.loc[steps] < along.loc[0]
    lines.append(f"Distance to θ_A* on S over the linear refresh: {along.loc[0]:.4f} at the chain's end -> "
                 f"{along.loc[steps]:.4f} after {steps} steps: the refresh "
                 + ("moved back towards θ_A* on the conflict subspace." if back else
                    "did not move back towards θ_A* on the conflict subspace; whatever it repairs, it repairs by "
                    "another route."))
    if f6.get("control_gain_ci_high") is not None and f6["control_gain_ci_high"] < 0:
        lines.append(f"More {title} training from θ_A* itself lowered {title} ({_num(f6['control_gain'])}, its "
                     f"interval below 0): on this run a new GRPO stage on {title} at the run's rate is a disturbance "
                     f"of its own (it restarts the rate at its peak and Adam's moments at zero), and part of what a "
                     f"refresh gains first makes up for that.")
    for check in c7:
        f7 = check.figures
        lines.append(f"C7 {f7['pair']} ({check.verdict}): rolling back {f7['count']} coordinates ({f7['fraction']:g}) "
                     f"by {f7['rule']} moved {f7['pair'].split(',')[0]} by {_num(f7['recovery'])} "
                     f"({_num(f7['recovered_share'], '.0%')} of a drop of {_num(-f7['drop'], '.3f')}); over random "
                     f"{_num(f7['over_random'])}, over magnitude {_num(f7['over_magnitude'])}.")
    return "\n".join(lines)
