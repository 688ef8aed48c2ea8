"""Claims C6 (a real refresh recovers selectively) and C7 (rollback), introduced in notebook
``05_refresh_vs_rollback``: the checks, and the notebook's verdicts in words (:func:`drop_text`,
:func:`refresh_budget_text`, :func:`pair_drop_text`, :func:`agreement_text`).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from mdrl_lib.claims._format import _interval, _share
from mdrl_lib.claims.record import ClaimCheck, premise, premises_table  # noqa: F401 (premises_table: the notebook reads it here)
from mdrl_lib.claims.rules import rule

if TYPE_CHECKING:
    import pandas as pd

C6_REFRESH_STATEMENT = ("After a later domain damaged A, a short refresh on A recovers A selectively: A rises, the "
                        "other domains hold, and the refresh does more than further training on A would.")
C6_REFRESH_PAPER = ("Code -> Math -> QA -> CW, then a brief Re-Math refresh: Math 57.66 -> 66.04 (peak 66.49), "
                    "average 64.25 -> 66.39 at best")
C6_COLLATERAL = rule("C6", "collateral")  # no other domain may fall by more than this (about one evaluation standard error)
C6_REFRESH_MIN_RANK = rule("C6", "refresh_min_rank_correlation")  # L_A tracks A's score along the refresh
DAMAGE_MIN_SE = rule("premises", "damage_min_standard_errors")  # a stage must cost A at least this many paired SEs
C7_ALPHA = rule("C7", "alpha")
C7_K_RANGE = rule("C7", "k_range")
C7_MIN_RANK = rule("C7", "objective_min_rank_correlation")
C7_STATEMENT = ("Training-free rollback of a sparse set of proxy conflict coordinates (A-B pair) partially restores "
                "A, beyond random coordinates and the largest changes of the same count.")
C7_PAPER = "Math-QA pair: partial restoration of Math; selection rule and numbers not published"
# the paper's Math scores: the peak after its Math stage, after the later stages, after the Re-Math refresh
PAPER_MATH_PEAK, PAPER_MATH_DAMAGED, PAPER_MATH_REFRESHED = 66.49, 57.66, 66.04
PAPER_RECOVERED_SHARE = (PAPER_MATH_REFRESHED - PAPER_MATH_DAMAGED) / (PAPER_MATH_PEAK - PAPER_MATH_DAMAGED)
# C7's controls as the record names them: the plan's name -> words
C7_CONTROL_WORDS = {"random": "random (equal count)", "magnitude": "magnitude (equal count)",
                    "random_size": "random (equal size)", "magnitude_size": "magnitude (equal size)"}


def damage_premise(damage: Mapping[str, float], what: str, threshold: float = DAMAGE_MIN_SE) -> dict:
    """The damage premise: ``what`` (e.g. "CW's stage") lowered A by at least ``threshold`` paired standard errors.
    ``damage``: A's paired change with ``diff``, ``se`` and ``z = diff / se``
    (:func:`mdrl_lib.recovery.paired_standard_errors`). Value: ``-z`` (the fall in standard errors; None when
    the standard error is 0). Introduced in ``05_refresh_vs_rollback``."""
    z = damage.get("z")
    fall = None if z is None or (isinstance(z, float) and math.isnan(z)) else -float(z)
    return premise(f"damage: {what} lowered A by >= threshold paired standard errors", fall, threshold,
                   fall is not None and fall >= threshold)


def objective_premise(tracking: Mapping[str, Any], threshold: float = C7_MIN_RANK) -> dict:
    """The objective premise of C7: along the rule's rollbacks over the k range, L_A's *measured* fall orders the
    budgets as A's score change does (Spearman ``rank_correlation`` of ``tracking``, as
    :func:`mdrl_lib.recipes.nb05.tracking_figures` gives it) at least ``threshold``. None (too few points, or a
    constant side) fails. Introduced in ``05_refresh_vs_rollback``."""
    rho = tracking.get("rank_correlation")
    return premise("objective valid: rank correlation of L_A's measured fall with A's change along the rule's "
                   "rollbacks over the k range >= threshold", rho, threshold, rho is not None and rho >= threshold)


def check_c6_refresh(drop: Mapping[str, float], recovery: Mapping[str, float], others: Mapping[str, Mapping[str, float]],
                     excess: Mapping[str, float], *, domain: str, steps: int, control_gain: Mapping[str, float] | None = None,
                     collateral: float = C6_COLLATERAL, name: str = "refresh-selective",
                     damage: Mapping[str, float] | None = None, constant: Mapping[str, float] | None = None,
                     subspace_distance: tuple[float, float] | None = None,
                     tracking: Mapping[str, Any] | None = None) -> ClaimCheck:
    """C6 on the real (GRPO) refresh of notebook ``05_refresh_vs_rollback``. It tests the *outcome* (A recovers,
    selectively, beyond more training on A), not the theorem's contraction mechanism (``tested="outcome"``).

    Each argument is a paired change on the same held-out items, a mapping with ``diff``, ``ci_low`` and
    ``ci_high`` (a 95% interval, e.g. a row of :func:`mdrl_lib.recovery.paired_changes`): ``drop``, A at the
    chain's end minus A at theta_A* (its own stage's end); ``recovery``, A after the refresh minus A at the
    chain's end; ``others``, each other domain's change over the refresh; ``excess``, the refresh's gain on A
    minus the gain the same steps give from theta_A* (``control_gain``, reported), per item
    (:func:`mdrl_lib.recovery.difference_in_changes`).

    Premise (given ``damage``, the drop in standard errors: ``diff``, ``se``, ``z``): the later stages cost A at
    least ``[premises] damage_min_standard_errors`` paired standard errors. Caveats recorded: one domain and one
    seed; the schedule (``constant``: A's change over a constant-rate refresh, a paired change with its budget
    ``steps`` and the decaying refresh's change ``linear`` at that budget, when it does not recover); whether the
    refresh moved back towards theta_A* on the conflict subspace (``subspace_distance``:
    before, after); whether L_A tracks A's score along the refresh (``tracking``: ``rank_correlation`` against
    ``[C6] refresh_min_rank_correlation``).

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
                               "collateral": collateral, "paper_recovered_share": PAPER_RECOVERED_SHARE}
    if control_gain is not None:
        figures["control_gain"] = control_gain["diff"]
        figures["control_gain_ci_high"] = control_gain.get("ci_high")
    caveats = [f"one domain ({domain}), one chain order and one RL seed"]
    premises = []
    if damage is not None:
        premises.append(damage_premise(damage, "the stages after A's"))
        figures["drop_standard_errors"] = premises[-1]["value"]
    if constant is not None:
        n = constant.get("steps", steps)
        figures.update(constant_rate_steps=n, constant_rate_change=constant["diff"],
                       constant_rate_ci_low=constant["ci_low"], linear_rate_change_same_steps=constant.get("linear"))
        if not constant["ci_low"] > 0:
            caveats.append(f"schedule dependence: at a constant rate {n} steps moved {domain} by {_interval(constant)}"
                           + ("" if constant.get("linear") is None else
                              f" (at the decaying rate {constant['linear']:+.3f})")
                           + ", so the recovery rests on the decaying rate")
    if subspace_distance is not None:
        before, after = subspace_distance
        figures.update(subspace_distance_start=before, subspace_distance_end=after)
        if not after < before:
            caveats.append(f"the refresh did not move back towards theta_A* on the conflict subspace ({before:.4f} -> "
                           f"{after:.4f}): the recovery is not the theorem's contraction")
    if tracking is not None:
        rho = tracking.get("rank_correlation")
        figures.update(refresh_objective_rank_correlation=rho, refresh_objective_sign_agreement=tracking.get("sign_agreement"))
        if rho is None or rho < C6_REFRESH_MIN_RANK:
            caveats.append(f"L_A does not track {domain}'s score along the refresh (rank correlation "
                           f"{'n/a' if rho is None else format(rho, '.2f')} < {C6_REFRESH_MIN_RANK})")
    measured = (f"{domain}: chain end minus theta_A* {_interval(drop)}; a {steps}-step refresh {_interval(recovery)} "
                f"({_share(share)} of the drop); others: " + ", ".join(f"{d} {v['diff']:+.3f}" for d, v in others.items())
                + f"; excess over the same steps from theta_A* {_interval(excess)}")
    baseline = (f"the same {steps} {domain} steps from theta_A* (gain "
                f"{'n/a' if control_gain is None else format(control_gain['diff'], '+.3f')}); the other domains' "
                f"collateral (tolerance {collateral})")
    common = dict(claim="C6", name=name, statement=C6_REFRESH_STATEMENT, paper=C6_REFRESH_PAPER, measured=measured,
                  baseline=baseline, figures=figures, premises=premises, tested="outcome", caveats=caveats,
                  regime="default LM")  # the kit's real refresh (Adam, decaying rate) on the toy LM's default chain
    if not drop["ci_high"] < 0:
        return ClaimCheck(**common, supported=None,
                          why=f"not testable: {domain} did not fall significantly over the later stages "
                              f"({_interval(drop)}), so there is nothing to recover")
    recovers = recovery["ci_low"] > 0
    holds = all(v["diff"] >= -collateral for v in others.values())
    restores = excess["ci_low"] > 0
    why = (f"(a) recovery interval {'above' if recovers else 'not above'} 0; (b) "
           + (f"the worst other domain, {worst}, moved {others[worst]['diff']:+.3f} "
              f"({'>=' if holds else '<'} -{collateral})" if worst else "no other domain")
           + f"; (c) excess over the control {'above' if restores else 'not above'} 0 ({_interval(excess)})")
    return ClaimCheck(**common, supported=bool(recovers and holds and restores), why=why)


def check_c7(drop: Mapping[str, float], damage: Mapping[str, float], recovery: Mapping[str, float],
             over_controls: Mapping[str, Mapping[str, float]], *, pair: Sequence[str], rule: str,
             fractions: Sequence[float], k_range: Sequence[float], tracking: Mapping[str, Any],
             curve: Sequence[Mapping[str, float]] = (), tracking_all: Mapping[str, Any] | None = None,
             gradient_step: Mapping[str, Any] | None = None, others: Mapping[str, float] | None = None,
             name: str | None = None, items_half: str = "all") -> ClaimCheck:
    """C7 on one pair's rollbacks in notebook ``05_refresh_vs_rollback``, judged over the whole k curve: every
    budget of ``fractions`` (those of the grid inside the rules file's ``[C7] k_range``, fixed before the run).

    ``drop``: A at the chain's end minus A before B's stage (paired change: ``diff``, ``ci_low``, ``ci_high``;
    reported). ``damage``: B's own stage's change of A in standard errors (``diff``, ``se``, ``z``; the damage
    premise). ``recovery``: the mean over the budgets of each item's change from the chain's end under ``rule``,
    a paired interval over items (:func:`mdrl_lib.recovery.curve_difference`); ``over_controls``: the same mean
    of the rule's scores minus each control's (keys of :data:`C7_CONTROL_WORDS`: random and magnitude sets at
    equal count and at equal size of change). ``tracking``: does L_A's measured fall order the rule's rollbacks
    as A's score does (``rank_correlation``, ``sign_agreement``, ``predicted_rank_correlation``; the objective
    premise). Reported: ``curve`` (per budget: ``recovery`` and ``over_<control>``, mean differences),
    ``tracking_all`` (the same over the rule, the gradient step and magnitude), ``gradient_step`` (an equal-norm
    step down g_A: A's ``change`` over the budgets and L_A's mean ``loss_change``), ``others`` (the other
    domains' mean change). ``items_half``: ``"all"`` of A's held-out items, or ``"report"`` when the pair was
    chosen from the chain's data on the other half (:mod:`mdrl_lib.pairs`; recorded as a caveat).

    Rule: premises first (damage >= ``[premises] damage_min_standard_errors``; objective rank correlation >=
    ``[C7] objective_min_rank_correlation``); a failed one gives "not testable here". Otherwise supported when
    (a) the recovery's interval (coverage 1 - ``[C7] alpha``) lies above 0 and (b) so does the interval of the
    advantage over every control, at equal count and at equal size.
    """
    a, b = pair
    fall = -float(drop["diff"])
    share = float(recovery["diff"]) / fall if recovery is not None and fall > 0 else math.nan
    ks = ", ".join(f"{f:g}" for f in fractions)
    figures: dict[str, Any] = {"pair": f"{a},{b}", "rule": rule, "k_range": f"{k_range[0]:g}-{k_range[1]:g}",
                               "budgets": ks, "drop": drop["diff"], "drop_ci_high": drop["ci_high"],
                               "damage": damage["diff"], "damage_se": damage.get("se"),
                               "recovery": None if recovery is None else recovery["diff"],
                               "recovery_ci_low": None if recovery is None else recovery["ci_low"],
                               "recovered_share": share, "items_half": items_half}
    for control, gap in over_controls.items():
        figures[f"over_{control}"] = None if gap is None else gap["diff"]
        figures[f"over_{control}_ci_low"] = None if gap is None else gap["ci_low"]
    for key in ("rank_correlation", "sign_agreement", "predicted_rank_correlation"):
        figures[f"objective_{key}"] = tracking.get(key)
    if tracking_all is not None:
        figures["objective_rank_correlation_all_rollbacks"] = tracking_all.get("rank_correlation")
    beaten_at = [row["fraction"] for row in curve if row.get("over_magnitude", 0) < 0]
    beaten_size = [row["fraction"] for row in curve if row.get("over_magnitude_size", 0) < 0]
    figures["magnitude_beats_rule_at"] = ", ".join(f"{f:g}" for f in beaten_at) or "none"
    figures["magnitude_size_beats_rule_at"] = ", ".join(f"{f:g}" for f in beaten_size) or "none"
    for row in curve:
        figures[f"recovery_at_{row['fraction']:g}"] = row["recovery"]
        figures[f"over_magnitude_at_{row['fraction']:g}"] = row.get("over_magnitude")
    from mdrl_lib.domains.base import DOMAIN_TITLES

    premises = [damage_premise(damage, f"{DOMAIN_TITLES.get(b, b)}'s stage"), objective_premise(tracking)]
    caveats = [f"one pair ({a},{b}), one chain order and one RL seed"]
    if items_half == "report":
        caveats.append(f"the pair was chosen from the chain's data on one half of {a}'s held-out items; this check is "
                       f"judged on the other half only")
    if beaten_at or beaten_size:
        caveats.append(f"magnitude beats the rule at k = {figures['magnitude_beats_rule_at']} (equal count) and "
                       f"k = {figures['magnitude_size_beats_rule_at']} (equal size)")
    if tracking.get("predicted_rank_correlation") is not None and tracking["predicted_rank_correlation"] < 0:
        caveats.append(f"the first-order prediction of L_A's fall orders the budgets against A's score (rank "
                       f"correlation {tracking['predicted_rank_correlation']:+.2f}): it is not local at these budgets")
    if gradient_step is not None and gradient_step.get("change") is not None:
        step = gradient_step["change"]
        figures.update(gradient_step_change=step["diff"], gradient_step_loss_change=gradient_step.get("loss_change"))
        loss = gradient_step.get("loss_change")
        caveats.append(f"an equal-norm step down g_A changed A by {_interval(step)} over the budgets"
                       + ("" if loss is None else f", while L_A measured {'rose' if loss > 0 else 'fell'} by "
                          f"{abs(loss):.3f}: the step is {'too long to descend L_A' if loss > 0 else 'a descent'}"))
    control_text = ", ".join(f"{C7_CONTROL_WORDS.get(c, c)} {_interval(g)}" for c, g in over_controls.items()
                             if g is not None)
    measured = (f"{a}: chain end minus before {b}'s stage {_interval(drop)}, {b}'s stage alone {damage['diff']:+.3f}; "
                f"rolling back by {rule}, mean over k = {ks}: " + ("n/a" if recovery is None else
                                                                      f"{_interval(recovery)} ({_share(share)} of the drop)")
                + f"; over {control_text}")
    if others:
        measured += "; others (mean over k): " + ", ".join(f"{d} {v:+.3f}" for d, v in others.items())
    baseline = ("random coordinate sets (the mean over their draws) and the largest changes (magnitude), each at "
                "equal count and at equal size of change, averaged over the same budgets")
    name = name or f"rollback-{a}-{b}"
    common = dict(claim="C7", name=name, statement=C7_STATEMENT, paper=C7_PAPER, measured=measured, baseline=baseline,
                  figures=figures, premises=premises, tested="mechanism", caveats=caveats)
    if recovery is None or not over_controls or any(g is None for g in over_controls.values()):
        if not over_controls:
            raise ValueError("C7 needs at least one control")
        return ClaimCheck(**common, supported=None, why=f"not testable: no budget of the grid lies in the k range "
                                                        f"{figures['k_range']}")
    recovers = recovery["ci_low"] > 0
    beats = {c: g["ci_low"] > 0 for c, g in over_controls.items()}
    why = (f"(a) mean recovery over k interval {'above' if recovers else 'not above'} 0; (b) "
           + "; ".join(f"over {C7_CONTROL_WORDS.get(c, c)}: {'above' if ok else 'not above'} 0" for c, ok in beats.items()))
    return ClaimCheck(**common, supported=bool(recovers and all(beats.values())), why=why)


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
        constant = summary[refresh_curve("constant")].dropna()
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


def magnitude_text(check: ClaimCheck) -> str:
    """Where the largest changes (magnitude) beat the C7 rule along the k curve, in words, from a
    :func:`check_c7` record's per-budget figures (``recovery_at_<k>``, ``over_magnitude_at_<k>``,
    ``magnitude_beats_rule_at``, ``magnitude_size_beats_rule_at``)."""
    from mdrl_lib.domains.base import DOMAIN_TITLES

    f = check.figures
    a = DOMAIN_TITLES[f["pair"].split(",")[0]]
    ks = [k.strip() for k in str(f["budgets"]).split(",") if k.strip()]
    rule_curve = ", ".join(f"{_num(f.get(f'recovery_at_{k}'))}" for k in ks)
    magnitude_curve = ", ".join(
        _num(None if f.get(f"recovery_at_{k}") is None or f.get(f"over_magnitude_at_{k}") is None
             else f[f"recovery_at_{k}"] - f[f"over_magnitude_at_{k}"]) for k in ks)
    head = (f"Along k = {', '.join(ks)}, {a} moved {rule_curve} under the {f['rule']} rule and {magnitude_curve} under "
            f"magnitude (equal count).")
    count, size = f["magnitude_beats_rule_at"], f["magnitude_size_beats_rule_at"]
    if count == "none" and size == "none":
        return head + " Magnitude beats the rule at no budget, at equal count or at equal size."
    where = lambda ks, matching: f"at no budget at {matching}" if ks == "none" else f"at k = {ks} at {matching}"  # noqa: E731
    return (head + f" Magnitude beats the rule {where(count, 'equal count')} and {where(size, 'equal size of change')}: "
            f"there the largest changes of the later stages carry more of the damage than the coordinates the local "
            f"gradient ranks first.")


def agreement_text(c6: ClaimCheck, c7: Sequence[ClaimCheck], distance: pd.DataFrame) -> str:
    """Notebook 05's verdicts in words, from the checks' figures: C6 against the paper's refresh (which recovered
    :data:`PAPER_RECOVERED_SHARE` of its drop), its schedule dependence, whether the linear refresh moved back
    towards theta_A* on the conflict subspace (``distance``: per ``curve`` and ``steps``, the ``subspace``
    distance, as :func:`mdrl_lib.recipes.nb05.refresh_distances`), whether more A training from theta_A* itself
    lowered A, whether L_A tracks A along the refresh; then each C7 pair over the k curve: its premises, its
    recovery against its controls, the gradient step and magnitude's curve."""
    from mdrl_lib.domains.base import DOMAIN_TITLES
    from mdrl_lib.recipes.nb05 import refresh_curve

    f6 = c6.figures
    title, steps = DOMAIN_TITLES[f6["domain"]], f6["steps"]
    drop_points = PAPER_MATH_PEAK - PAPER_MATH_DAMAGED
    lines = [f"C6 ({c6.verdict}): {title} moved {_num(f6['drop'])} from θ_A* to the chain's end; the {steps}-step "
             f"refresh moved it {_num(f6['recovery'])} ({_num(f6['recovered_share'], '.0%')} of the drop; the paper's "
             f"refresh took Math from {PAPER_MATH_DAMAGED} to {PAPER_MATH_REFRESHED}, {PAPER_RECOVERED_SHARE:.0%} of its "
             f"{drop_points:.2f}-point drop from {PAPER_MATH_PEAK}). The same steps from θ_A* moved {title} by "
             f"{_num(f6.get('control_gain'))}, so the refresh's excess is {_num(f6['excess'])}; the worst other domain "
             f"({f6['worst_other']}) moved {_num(f6['worst_other_change'])}. The check tests the outcome, not the "
             f"contraction mechanism."]
    if f6.get("constant_rate_change") is not None:
        recovers = f6["constant_rate_ci_low"] > 0
        n = f6.get("constant_rate_steps") or steps
        same = f6.get("linear_rate_change_same_steps")
        lines.append(f"At a constant rate {n} steps moved {title} by {_num(f6['constant_rate_change'])}"
                     + ("" if same is None else f" (the decaying rate's {n} steps: {_num(same)})") + ": "
                     + ("the recovery does not depend on the decaying schedule." if recovers else
                        "without the decay the refresh does not recover, so the verdict holds for the decaying "
                        "schedule only."))
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
    if "refresh_objective_rank_correlation" in f6:
        rho = f6["refresh_objective_rank_correlation"]
        like = rho is not None and rho >= C6_REFRESH_MIN_RANK
        lines.append(f"Along the linear refresh, L_A's fall ranks the budgets {'like' if like else 'unlike'} "
                     f"{title}'s gain (rank correlation {_num(rho, '+.2f')}).")
    for check in c7:
        f7 = check.figures
        a = DOMAIN_TITLES[f7["pair"].split(",")[0]]
        lines.append(f"C7 {f7['pair']} ({check.verdict}): over k = {f7['budgets']}, the {f7['rule']} rollback moved "
                     f"{a} by {_num(f7['recovery'])} on average ({_num(f7['recovered_share'], '.0%')} of a drop of "
                     f"{_num(-f7['drop'], '.3f')}); ahead of random {_num(f7.get('over_random'))} and magnitude "
                     f"{_num(f7.get('over_magnitude'))} at equal count, of random {_num(f7.get('over_random_size'))} "
                     f"and magnitude {_num(f7.get('over_magnitude_size'))} at equal size.")
        for p in check.premises:
            lines.append(f"  premise {p['name']}: {_num(p['value'], '.2f')} (threshold {p['threshold']}) "
                         f"{'holds' if p['holds'] else 'FAILS'}.")
        predicted = f7.get("objective_predicted_rank_correlation")
        if predicted is not None:
            lines.append(f"  The first-order prediction of L_A's fall ranks the budgets with rank correlation "
                         f"{predicted:+.2f} against {a}'s change; the measured fall "
                         f"{_num(f7['objective_rank_correlation'], '+.2f')}.")
        if f7.get("gradient_step_change") is not None:
            loss = f7.get("gradient_step_loss_change")
            lines.append(f"  A step down g_A as long as each rollback moved {a} by {_num(f7['gradient_step_change'])} on "
                         f"average" + ("." if loss is None else
                                       f", and L_A {'rose' if loss > 0 else 'fell'} by {abs(loss):.3f}: "
                                       + ("the step overshoots; L_A rises as the score falls, as a valid proxy's "
                                          "would." if loss > 0 and f7['gradient_step_change'] < 0 else
                                          "compare the sign of the two changes.")))
        lines.append("  " + magnitude_text(check))
    return "\n".join(lines)
