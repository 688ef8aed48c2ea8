"""K1, the kit's own comparison of recovery methods (not a claim of the paper), introduced in notebook
``06_recovery_methods``: the check (:func:`check_k1`) and the notebook's sentences about the Pareto front
(:func:`front_text`). The statement and every threshold are read from the rules file's ``[K1]`` section, fixed before
the run.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from mdrl_lib.claims.nb05 import damage_premise
from mdrl_lib.claims.record import ClaimCheck, premise
from mdrl_lib.claims.rules import rule

K1_STATEMENT: str = rule("K1", "statement")
K1_FAMILY: str = rule("K1", "family")
K1_MIN_ITEMS: int = rule("K1", "min_report_items")
K1_PAPER = ("none: the kit's own comparison, not a claim of the paper (the paper runs the Re-Math refresh alone and "
            "states the alternating refresh in theory only; it compares with no merge)")
K1_CAVEATS = ("one world seed and one RL seed (the chain, the experts and every refresh are one run each)",
              "the grid of settings (refresh budgets, rollback rules and k, merge scales, densities and drop rates, "
              "the alternating refresh's cycles) is the kit's own choice, not the paper's or the field's tuned one",
              "the front is of point estimates; each change's paired interval is in the table",
              "merges of the experts combine the single-domain experts from the base, not the chain: they cost no "
              "training here only because the experts were trained anyway (their training is not counted); merges of "
              "the chain's stages recombine the chain's own steps and cost no training either")


def _dominates(a: Mapping, b: Mapping) -> bool:
    from mdrl_lib.comparison import dominates

    return dominates(a, b)


def dominated_by(rows: Sequence[Mapping[str, Any]], method: str, *, cost_cap: float | None = None) -> list[str]:
    """The methods of ``rows`` (dicts with ``method``, ``cost``, ``damaged_change``, ``others_mean``) that dominate
    ``method`` (:func:`mdrl_lib.comparison.dominates`: no dearer, at least as good on both changes, strictly better
    on one of the three), among those costing at most ``cost_cap`` (when given); rows without a cost never do."""
    target = next((r for r in rows if r["method"] == method), None)
    if target is None:
        raise ValueError(f"no row {method!r}; methods: {', '.join(r['method'] for r in rows)}")
    out = []
    for row in rows:
        if row["method"] == method or row["cost"] is None or math.isnan(float(row["cost"])):
            continue
        if cost_cap is not None and float(row["cost"]) > cost_cap:
            continue
        if _dominates(row, target):
            out.append(row["method"])
    return out


def front_text(table, damaged: str | None = None) -> str:
    """Which methods are on the Pareto front of a :func:`mdrl_lib.comparison.recovery_comparison` table (report
    half: the damaged domain's change, the others' mean change and cost), which of them dominates which, and
    whether one method dominates every other; the experts (no cost) are placed beside the front. Plain sentences,
    computed from the table. Introduced in notebook ``06_recovery_methods``."""
    from mdrl_lib.domains.base import DOMAIN_TITLES

    damaged = damaged or table.attrs.get("damaged")
    if damaged is None:
        raise ValueError("front_text: give the damaged domain (the table's attrs do not name it)")
    name = DOMAIN_TITLES.get(damaged, damaged)
    rows = table.to_dict("records")
    costed = [r for r in rows if not (r["cost"] is None or math.isnan(float(r["cost"])))]
    front = [r for r in costed if not dominated_by(costed, r["method"])]

    def point(r) -> str:
        return f"{r['method']} ({name} {r['damaged_change']:+.3f}, others {r['others_mean']:+.3f}, {r['cost']:,.0f} passes)"

    lines = [f"On the Pareto front ({name}'s change, the others' mean change, cost; report half): "
             + "; ".join(point(r) for r in front) + "."]
    beaten = {r["method"]: [o["method"] for o in costed if o is not r and _dominates(r, o)] for r in front}
    for method, others in beaten.items():
        if others:
            lines.append(f"{method} dominates {len(others)} method(s): {', '.join(others)}.")
    everyone = [m for m, others in beaten.items() if len(others) == len(costed) - 1]
    if everyone:
        lines.append(f"{everyone[0]} dominates every other method with a cost.")
    elif len(front) > 1:
        lines.append("No one method dominates all the others: the front holds a trade-off between "
                     f"{name} and the other domains (and cost).")
    best = max(costed, key=lambda r: r["damaged_change"])
    lines.append(f"The largest {name} change is that of {best['method']} ({best['damaged_change']:+.3f}); the best "
                 f"others' mean is that of {max(costed, key=lambda r: r['others_mean'])['method']}.")
    experts = [r for r in rows if r not in costed]
    if experts:
        lines.append("Beside the front, with no cost counted: " + "; ".join(
            f"{r['method']} ({name} {r['damaged_change']:+.3f}, others {r['others_mean']:+.3f})" for r in experts) + ".")
    return "\n".join(lines)


def check_k1(rows: Sequence[Mapping[str, Any]], damage: Mapping[str, float], *, cost_cap: float, domain: str,
             members: Mapping[str, int] | None = None, family: str = K1_FAMILY,
             min_items: int = K1_MIN_ITEMS, name: str = "recovery-front") -> ClaimCheck:
    """K1, the kit's own comparison (not a claim of the paper; ``tested="outcome"``): the rules file's ``[K1]
    statement``, that the single refresh of the damaged domain is on the Pareto front of the recovery methods.

    ``rows``: one dict per method chosen in its group (:func:`mdrl_lib.comparison.recovery_comparison`, report
    half): ``method``, ``family``, ``cost`` (sequence passes; NaN: no cost applies), ``items`` (the damaged domain's
    report-half items), ``damaged_change`` and ``others_mean`` (against the chain's end). ``damage``: the damaged
    domain's paired change from its own stage's end to the chain's end on the report half (``diff``, ``se``, ``z``).
    ``cost_cap``: the single refresh's cost; methods dearer than it are left out. ``members``: each method's group
    size (reported).

    Premises: the chain lowered ``domain`` by at least ``[premises] damage_min_standard_errors`` paired standard
    errors; the ``family`` row (exactly one) exists and has at least ``[K1] min_report_items`` items. Rule (fixed
    in ``[K1]`` before the run): supported when no method with a cost of at most ``cost_cap`` dominates the
    ``family`` row (:func:`dominated_by`: point estimates, no margin); not supported otherwise, naming the methods
    that dominate it."""
    rows = [dict(r) for r in rows]
    chosen = [r for r in rows if r["family"] == family]
    figures: dict[str, Any] = {"domain": domain, "cost_cap": cost_cap, "family": family, "methods": len(rows)}
    premises = [damage_premise(damage, "the stages after A's (report half)")]
    figures["drop_standard_errors"] = premises[0]["value"]
    caveats = list(K1_CAVEATS)
    common = dict(claim="K1", name=name, statement=K1_STATEMENT, paper=K1_PAPER, tested="outcome")
    if len(chosen) != 1:
        premises.append(premise(f"one {family} row in the comparison", len(chosen), 1, False))
        return ClaimCheck(**common, measured=f"{len(chosen)} {family} rows among {len(rows)} methods",
                          baseline="every other recovery method at no more than the single refresh's cost",
                          supported=False, why=f"no single {family} row to place on the front", figures=figures,
                          premises=premises, caveats=caveats)
    target = chosen[0]
    items = int(target.get("items", 0))
    premises.append(premise(f"items: {domain}'s report-half items >= threshold", items, min_items,
                            items >= min_items))
    beaters = dominated_by(rows, target["method"], cost_cap=cost_cap)
    eligible = [r for r in rows if r is not target and not (r["cost"] is None or math.isnan(float(r["cost"])))
                and float(r["cost"]) <= cost_cap]
    figures.update(method=target["method"], damaged_change=target["damaged_change"],
                   others_mean=target["others_mean"], cost=target["cost"], compared=len(eligible),
                   dominated_by=", ".join(beaters) or None, report_items=items)
    if members:
        figures["settings_tried"] = sum(int(n) for n in members.values())
    measured = (f"{target['method']}: {domain} {target['damaged_change']:+.3f}, others' mean "
                f"{target['others_mean']:+.3f} at {float(target['cost']):,.0f} passes; "
                + (f"dominated by {', '.join(beaters)}" if beaters else
                   f"no method of {len(eligible)} at no more than its cost dominates it"))
    baseline = (f"{len(eligible)} other methods with a cost of at most {cost_cap:,.0f} sequence passes (the single "
                f"refresh's), each at its setting chosen on the selection half")
    why = (f"{target['method']} is on the front: none of the {len(eligible)} methods at no more than its cost is at "
           f"least as good on both changes and better on one" if not beaters else
           f"{target['method']} is dominated by {', '.join(beaters)} (no dearer, at least as good on {domain}'s change "
           f"and the others' mean, better on one)")
    return ClaimCheck(**common, measured=measured, baseline=baseline, supported=not beaters, why=why,
                      figures=figures, premises=premises, caveats=caveats)
