"""Recovery methods side by side: the alternating refresh, and one comparison of every recovery method.

Introduced for notebook ``06_recovery_methods`` (recovery methods side by side). Two pieces:

- :func:`alternating_refresh`: short GRPO refreshes that cycle over the domains (the damaged domain first,
  then each other domain of the chain, repeated), as a chain of :class:`~mdrl_lib.specs.Refresh` specs whose
  steps add up to the single refresh's budget. Every GRPO step samples the same number of completions
  (``prompts_per_step x num_generations``), so equal total steps is equal cost in sequence passes
  (:func:`schedule_cost`, :func:`mdrl_lib.recovery.refresh_step_cost`).
- :func:`recovery_comparison`: every method's per-item results against the chain's end, paired over items on
  every domain (:func:`mdrl_lib.interference.paired_change`), with each sweep's setting chosen on the
  *selection* half of the held-out items (:func:`choose_settings`) and reported on the *report* half (the kit's
  one seeded split, :func:`mdrl_lib.pairs.half_items`); :func:`pareto_front` marks the methods no other
  method beats on the damaged domain, the others' mean and cost at once.

This module imports neither torch nor the kit.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from mdrl_lib.config import ConfigError
from mdrl_lib.domains.base import DOMAIN_NAMES
from mdrl_lib.pairs import HALVES, split_items
from mdrl_lib.specs import Refresh, Spec, check_domain

# ------------------------------------------------------------------------------------ alternating refresh

SCHEDULE_COLUMNS = ("position", "cycle", "domain", "steps", "cumulative_steps", "ends_cycle")


def default_first_share(domains: int) -> float:
    """The damaged domain's share of each cycle by default: twice the steps of each other domain, 2 / (n + 1) of
    the cycle for ``n`` domains (0.4 with four: e.g. 12, 6, 6, 6 steps)."""
    return 2.0 / (domains + 1)


def cycle_split(total_steps: int, cycles: int, domains: int, first_share: float) -> tuple[int, int]:
    """(steps of the first domain's refresh, steps of each other domain's refresh) in every cycle.

    The rule: each of the ``cycles`` cycles gets ``total_steps / cycles`` steps; the first (damaged) domain gets
    ``first_share`` of them; the rest is split equally among the other ``domains - 1`` domains. Every one of these
    must be a whole number of at least 1, so the steps add up to ``total_steps`` exactly; otherwise a
    :class:`ConfigError` names the cycle counts that work for these steps and share."""
    for name, value, low in (("total_steps", total_steps, 1), ("cycles", cycles, 1), ("domains", domains, 2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ConfigError(f"alternating refresh {name}: expected a whole number >= {low}, got {value!r}"
                              + (" (an alternating refresh needs the damaged domain and at least one other)"
                                 if name == "domains" else ""))
    if isinstance(first_share, bool) or not isinstance(first_share, (int, float)) or not 0 < first_share < 1:
        raise ConfigError(f"alternating refresh first_share: expected a fraction strictly between 0 and 1, got "
                          f"{first_share!r}")
    split = _split_or_none(total_steps, cycles, domains, first_share)
    if split is None:
        valid = [c for c in range(1, total_steps + 1) if _split_or_none(total_steps, c, domains, first_share)]
        per_cycle = f"{total_steps} / {cycles} = {total_steps / cycles:g} steps per cycle"
        raise ConfigError(
            f"alternating refresh: {total_steps} steps in {cycles} cycles over {domains} domains with first_share "
            f"{first_share:g} do not split into whole refreshes of at least 1 step ({per_cycle}; the first domain "
            f"takes first_share of a cycle, each of the other {domains - 1} an equal part of the rest); valid cycles "
            f"for these steps and share: {', '.join(map(str, valid)) if valid else 'none (change first_share)'}")
    return split


def _split_or_none(total_steps: int, cycles: int, domains: int, first_share: float) -> tuple[int, int] | None:
    if total_steps % cycles:
        return None
    per_cycle = total_steps // cycles
    first = first_share * per_cycle
    if abs(first - round(first)) > 1e-9 * max(1, per_cycle):
        return None
    first = int(round(first))
    rest = per_cycle - first
    if first < 1 or rest < domains - 1 or rest % (domains - 1):
        return None
    return first, rest // (domains - 1)


def alternating_refresh(start: Spec, order: Sequence[str], first: str, *, total_steps: int, cycles: int,
                        first_share: float | None = None, **overrides: Any) -> list[Refresh]:
    """Short GRPO refreshes cycling over the domains from ``start`` (the chain's end), as one chain of
    :class:`~mdrl_lib.specs.Refresh` specs, each the parent of the next. Introduced for notebook
    ``06_recovery_methods`` (recovery methods side by side).

    Each of the ``cycles`` cycles refreshes ``first`` (the damaged domain) and then each other domain of ``order``
    in the chain's order. Steps (:func:`cycle_split`): each cycle gets ``total_steps / cycles``; ``first`` takes
    ``first_share`` of it (default :func:`default_first_share`: twice each other domain's steps), the others equal
    parts of the rest; all whole numbers, adding up to ``total_steps`` exactly, else a :class:`ConfigError` that
    names the valid cycle counts. Give ``total_steps`` the single refresh's budget: every GRPO step samples the
    same ``prompts_per_step x num_generations`` completions, so the two cost the same sequence passes
    (:func:`schedule_cost`). ``overrides`` are :class:`Refresh` fields of every refresh (``lr_schedule``,
    ``rl_seed``, ``lr``): note that a ``linear`` schedule decays to 0 within each short refresh.

    Returns every refresh in order (``len(order) * cycles`` specs): read every domain after each one, and after
    each cycle at :func:`cycle_ends` (:func:`schedule_table` lays the schedule out)."""
    if not isinstance(start, Spec):
        raise ConfigError(f"alternating refresh start: expected a spec (the chain's end), got {start!r}")
    if isinstance(order, str) or not isinstance(order, Sequence):
        raise ConfigError(f"alternating refresh order: expected a sequence of domains, got {order!r}")
    domains = [check_domain(d) for d in order]
    if len(set(domains)) != len(domains):
        raise ConfigError(f"alternating refresh order: a domain appears twice in {list(order)}")
    first = check_domain(first)
    if first not in domains:
        raise ConfigError(f"alternating refresh first: {first!r} is not in the order; valid: {', '.join(domains)}")
    for name in ("parent", "domain", "steps"):
        if name in overrides:
            raise ConfigError(f"alternating refresh: {name} is set by the schedule, not by an override")
    others = [d for d in domains if d != first]
    share = default_first_share(len(domains)) if first_share is None else first_share
    first_steps, other_steps = cycle_split(total_steps, cycles, len(domains), share)
    schedule, parent = [], start
    for _ in range(cycles):
        for domain in [first, *others]:
            parent = Refresh(parent, domain, steps=first_steps if domain == first else other_steps, **overrides)
            schedule.append(parent)
    assert sum(s.steps for s in schedule) == total_steps
    return schedule


def _check_schedule(schedule: Sequence[Refresh]) -> None:
    if not schedule or not all(isinstance(s, Refresh) and s.steps is not None for s in schedule):
        raise ValueError("expected the non-empty list of Refresh specs (with steps) that alternating_refresh returns")
    for previous, spec in zip(schedule, schedule[1:]):
        if spec.parent != previous:
            raise ValueError(f"the schedule is not a chain: {spec.label()} does not start from the refresh before it")


def schedule_table(schedule: Sequence[Refresh]) -> pd.DataFrame:
    """The schedule of :func:`alternating_refresh`, one row per refresh (columns :data:`SCHEDULE_COLUMNS`):
    its position (from 0), its cycle (from 1), domain, steps, the steps so far and whether it ends a cycle (the
    next refresh is on the first domain again, or it is the last). Cycles start at each refresh of the first
    refresh's domain."""
    _check_schedule(schedule)
    first = schedule[0].domain
    rows, cycle, total = [], 0, 0
    for i, spec in enumerate(schedule):
        cycle += spec.domain == first
        total += spec.steps
        ends = i == len(schedule) - 1 or schedule[i + 1].domain == first
        rows.append({"position": i, "cycle": cycle, "domain": spec.domain, "steps": spec.steps,
                     "cumulative_steps": total, "ends_cycle": ends})
    return pd.DataFrame(rows, columns=list(SCHEDULE_COLUMNS))


def cycle_ends(schedule: Sequence[Refresh]) -> list[Refresh]:
    """The refreshes of :func:`alternating_refresh` that end a cycle, in order (the last is the schedule's end):
    where to read every domain after each cycle."""
    table = schedule_table(schedule)
    return [schedule[i] for i in table.index[table["ends_cycle"]]]


def schedule_cost(schedule: Sequence[Refresh], rl) -> int:
    """The schedule's cost in sequence passes: its total steps x :func:`mdrl_lib.recovery.refresh_step_cost`
    (``rl``: the run's :class:`~mdrl_lib.config.RLConfig`), the same as a single refresh of that many steps."""
    from mdrl_lib.recovery import refresh_step_cost

    _check_schedule(schedule)
    return sum(s.steps for s in schedule) * refresh_step_cost(rl)


# ------------------------------------------------------------------------------------------- comparison

FAMILIES: tuple[str, ...] = ("refresh", "rollback", "merge", "stage_merge", "alternating", "expert")
STANDALONE_FAMILIES: tuple[str, ...] = ("expert",)  # by default each member is its own method, never chosen among
CHANGE_COLUMNS = ("method", "family", "group", "cost", "half", "domain", "items", "before", "after", "change",
                  "ci_low", "ci_high", "p_value", "test")
CHOICE_RULE = ("In each group of settings (a sweep of one method: scales, densities, drop rates, k, budgets) the "
               "member chosen is the one with the largest change of the damaged domain against the chain's end on "
               "the selection half of the held-out items; ties go to the larger mean change of the other domains on "
               "that half, then to the lower cost, then to the member given first. Members costing more than the "
               "cost cap (when one is given) are not eligible. The chosen member is reported on the report half, "
               "which played no part in the choice")


def _check_inputs(items_by_method: Mapping[str, pd.DataFrame], families: Mapping[str, str],
                  costs: Mapping[str, float] | None = None, groups: Mapping[str, str] | None = None) -> None:
    if not isinstance(items_by_method, Mapping) or not items_by_method:
        raise ValueError("items_by_method: expected a non-empty mapping of method name -> per-item table")
    methods = list(items_by_method)
    missing = [m for m in methods if m not in families]
    if missing:
        raise ValueError(f"families: no family for {missing}; give each method one of {', '.join(FAMILIES)}")
    unknown = {m: f for m, f in families.items() if m in items_by_method and f not in FAMILIES}
    if unknown:
        raise ValueError(f"families: unknown family {unknown}; valid families: {', '.join(FAMILIES)}")
    for name, mapping in (("costs", costs), ("groups", groups)):
        extra = sorted(set(mapping or {}) - set(methods))
        if extra:
            raise ValueError(f"{name}: {extra} are not methods; methods: {', '.join(methods)}")
    for method, cost in (costs or {}).items():
        if cost is not None and not (isinstance(cost, (int, float, np.number)) and (math.isnan(cost) or cost >= 0)):
            raise ValueError(f"costs: {method!r} costs {cost!r}; give sequence passes >= 0 (or NaN: no cost applies)")


def method_groups(families: Mapping[str, str], groups: Mapping[str, str] | None = None) -> dict[str, str]:
    """Each method's group of settings: ``groups[method]`` when given, else its family, except that the members of
    a :data:`STANDALONE_FAMILIES` family (the single experts) each form their own group (the method's name)."""
    groups = dict(groups or {})
    return {m: groups.get(m, m if f in STANDALONE_FAMILIES else f) for m, f in families.items()}


def method_changes(items_by_method: Mapping[str, pd.DataFrame], reference: pd.DataFrame, *,
                   families: Mapping[str, str], costs: Mapping[str, float] | None = None,
                   groups: Mapping[str, str] | None = None, halves: Sequence[str] = HALVES,
                   half_seed: int | None = None, level: float = 0.95, n_boot: int = 10_000,
                   seed: int = 0) -> pd.DataFrame:
    """Every method's change against ``reference`` (the chain's end) on every domain and half, paired over items.

    ``items_by_method``: method name -> per-item table (:meth:`Kit.item_results`: columns domain, item, score), each
    scored on the reference's items. One row per method, half (of :data:`~mdrl_lib.pairs.HALVES`, the kit's seeded
    split of each domain's items, :func:`~mdrl_lib.pairs.split_items` with ``half_seed``; ``"all"``: every item) and
    domain (columns :data:`CHANGE_COLUMNS`): ``change`` = method - reference, its interval at ``level`` and p-value
    by the domain's paired test (:func:`~mdrl_lib.interference.paired_change`). Introduced for notebook 05
    (recovery methods side by side)."""
    from mdrl_lib.interference import paired_change

    _check_inputs(items_by_method, families, costs, groups)
    grouped = method_groups({m: families[m] for m in items_by_method}, groups)
    domains = [d for d in DOMAIN_NAMES if d in set(reference["domain"])]
    rows = []
    for half in halves:
        if half not in (*HALVES, "all"):
            raise ValueError(f"unknown half {half!r}; valid: {', '.join((*HALVES, 'all'))}")
        before = reference if half == "all" else split_items(reference, half, half_seed)
        for method, items in items_by_method.items():
            after = items if half == "all" else split_items(items, half, half_seed)
            cost = (costs or {}).get(method)
            for domain in domains:
                try:
                    r = paired_change(before, after, domain, level=level, n_boot=n_boot, seed=seed)
                except ValueError as error:
                    raise ValueError(f"method {method!r}: {error}") from error
                rows.append({"method": method, "family": families[method], "group": grouped[method],
                             "cost": float("nan") if cost is None else float(cost), "half": half, "domain": domain,
                             "items": r.n, "before": r.mean_before, "after": r.mean_after, "change": r.diff,
                             "ci_low": r.ci_low, "ci_high": r.ci_high, "p_value": r.p_value, "test": r.test})
    return pd.DataFrame(rows, columns=list(CHANGE_COLUMNS))


def summarize_changes(changes: pd.DataFrame, damaged: str) -> pd.DataFrame:
    """One row per method and half of a :func:`method_changes` table: ``damaged_change`` (the damaged domain's
    change), ``others_mean`` (the plain mean of the other domains' changes), ``items`` (the damaged domain's items
    on that half), with the method's family, group and cost."""
    damaged = check_domain(damaged)
    if damaged not in set(changes["domain"]):
        raise ValueError(f"damaged domain {damaged!r} is not in the table; domains: "
                         f"{', '.join(dict.fromkeys(changes['domain']))}")
    rows = []
    for (method, half), part in changes.groupby(["method", "half"], sort=False):
        part = part.set_index("domain")
        others = part.drop(index=damaged)["change"]
        rows.append({"method": method, "family": part["family"].iloc[0], "group": part["group"].iloc[0],
                     "cost": part["cost"].iloc[0], "half": half, "items": int(part.loc[damaged, "items"]),
                     "damaged_change": float(part.loc[damaged, "change"]),
                     "others_mean": float(others.mean()) if len(others) else float("nan")})
    return pd.DataFrame(rows)


def choose_settings(summary: pd.DataFrame, *, max_cost: float | None = None) -> dict[str, str]:
    """Group -> the chosen method, by :data:`CHOICE_RULE`, from the ``selection`` rows of a
    :func:`summarize_changes` table (rows of other halves are ignored: the choice never sees the report half).
    ``max_cost``: members whose cost exceeds it are not eligible (matched cost; a member without a cost always is);
    a group left with no eligible member raises, naming its members' costs. Introduced for notebook 05."""
    selection = summary[summary["half"] == "selection"]
    if selection.empty:
        raise ValueError("no selection-half rows: pass the summary of method_changes with the selection half")
    chosen = {}
    for group, part in selection.groupby("group", sort=False):
        eligible = part if max_cost is None else part[~(part["cost"] > max_cost)]
        if eligible.empty:
            raise ValueError(f"group {group!r}: no member costs at most {max_cost:g} sequence passes (costs: "
                             f"{dict(zip(part['method'], part['cost']))})")
        ranked = eligible.assign(order=range(len(eligible)), neg_damaged=-eligible["damaged_change"],
                                 neg_others=-eligible["others_mean"].fillna(-np.inf),
                                 cost_key=eligible["cost"].fillna(np.inf))
        ranked = ranked.sort_values(["neg_damaged", "neg_others", "cost_key", "order"], kind="stable")
        chosen[group] = str(ranked["method"].iloc[0])
    return chosen


def recovery_comparison(items_by_method: Mapping[str, pd.DataFrame], reference: pd.DataFrame, *,
                        costs: Mapping[str, float], families: Mapping[str, str], damaged: str,
                        groups: Mapping[str, str] | None = None, half_seed: int | None = None,
                        max_cost: float | None = None, level: float = 0.95, n_boot: int = 10_000,
                        seed: int = 0) -> pd.DataFrame:
    """The comparison of recovery methods: one row per chosen method, on the report half.

    ``items_by_method``: method -> per-item table (domain, item, score) on the reference's held-out items;
    ``reference``: the chain's end; ``costs``: method -> sequence passes (NaN or absent: no cost applies, e.g. an
    expert); ``families``: method -> one of :data:`FAMILIES`; ``groups``: method -> its sweep (default
    :func:`method_groups`: one group per family, each expert its own). In each group one member is chosen on the
    selection half (:func:`choose_settings`, :data:`CHOICE_RULE`, ``max_cost``) and reported on the report half.

    Columns: method, family, group, cost, items (the damaged domain's report-half items), ``damaged_change`` and
    ``others_mean`` (report half), ``selection_damaged`` and ``selection_others`` (what the choice saw),
    ``members`` (the group's size), ``on_front`` (:func:`pareto_front` of the report-half rows: changes and
    cost; rows without a cost are never on it), then per domain
    ``<domain>_change``, ``_ci_low``, ``_ci_high``, ``_p``. ``attrs``: damaged, domains, rule, half_seed, and
    ``changes``, the long :func:`method_changes` table of every member on both halves. Rows in the order the
    methods were given. Introduced for notebook 05 (recovery methods side by side)."""
    damaged = check_domain(damaged)
    domains = [d for d in DOMAIN_NAMES if d in set(reference["domain"])]
    if damaged not in domains:
        raise ValueError(f"damaged domain {damaged!r} is not scored in the reference; domains: {', '.join(domains)}")
    missing = [m for m in items_by_method if families.get(m) not in STANDALONE_FAMILIES and m not in costs]
    if missing:
        raise ValueError(f"costs: no cost for {missing}; give sequence passes (NaN where no cost applies)")
    changes = method_changes(items_by_method, reference, families=families, costs=costs, groups=groups,
                             half_seed=half_seed, level=level, n_boot=n_boot, seed=seed)
    summary = summarize_changes(changes, damaged)
    chosen = choose_settings(summary, max_cost=max_cost)
    members = summary[summary["half"] == "selection"].groupby("group")["method"].count()
    kept = [m for m in items_by_method if m in set(chosen.values())]
    sel = summary[summary["half"] == "selection"].set_index("method")
    rep = summary[summary["half"] == "report"].set_index("method")
    long = changes[changes["half"] == "report"].set_index(["method", "domain"])
    rows = []
    for method in kept:
        row = {"method": method, "family": rep.loc[method, "family"], "group": rep.loc[method, "group"],
               "cost": rep.loc[method, "cost"], "items": int(rep.loc[method, "items"]),
               "damaged_change": rep.loc[method, "damaged_change"], "others_mean": rep.loc[method, "others_mean"],
               "selection_damaged": sel.loc[method, "damaged_change"],
               "selection_others": sel.loc[method, "others_mean"],
               "members": int(members[rep.loc[method, "group"]])}
        for domain in domains:
            r = long.loc[(method, domain)]
            row.update({f"{domain}_change": r["change"], f"{domain}_ci_low": r["ci_low"],
                        f"{domain}_ci_high": r["ci_high"], f"{domain}_p": r["p_value"]})
        rows.append(row)
    table = pd.DataFrame(rows)
    front = set(pareto_front(table)["method"])
    table.insert(list(table.columns).index("members") + 1, "on_front", table["method"].isin(front))
    table.attrs.update({"damaged": damaged, "domains": domains, "rule": CHOICE_RULE, "half_seed": half_seed,
                        "half": "report", "changes": changes})
    return table


def dominates(a: Mapping, b: Mapping, *, x: str = "others_mean", y: str = "damaged_change",
              cost: str | None = "cost") -> bool:
    """Whether row ``a`` dominates row ``b``: at least as good on both changes ``x`` and ``y`` (higher is better)
    and, when ``cost`` is given, no dearer; strictly better on at least one of these. With ``cost`` given, a row
    without a cost (NaN) neither dominates nor is dominated: its cost is unknown."""
    better = [a[x] - b[x], a[y] - b[y]]
    if cost is not None:
        if pd.isna(a[cost]) or pd.isna(b[cost]):
            return False
        better.append(b[cost] - a[cost])
    return all(v >= 0 for v in better) and any(v > 0 for v in better)


def pareto_front(table: pd.DataFrame, *, x: str = "others_mean", y: str = "damaged_change",
                 cost: str | None = "cost") -> pd.DataFrame:
    """The rows of ``table`` that no other row dominates (:func:`dominates`: on ``x`` and ``y``, the others' mean
    change and the damaged domain's change, higher better, and on ``cost``, lower better), in the table's order.
    Rows with equal values do not dominate each other (both stay). Rows without a cost (NaN: references such as
    the single experts) take no part in a front with cost: shown beside it, never on it. ``cost=None`` (or no
    such column): every row, on the two changes only. Introduced for notebook 05."""
    for column in (x, y):
        if column not in table.columns:
            raise ValueError(f"pareto_front: no column {column!r}; columns: {', '.join(map(str, table.columns))}")
        if table[column].isna().any():
            raise ValueError(f"pareto_front: column {column!r} has missing values")
    cost = cost if cost is not None and cost in table.columns else None
    records = table.to_dict("records")
    keep = [(cost is None or not pd.isna(row[cost]))
            and not any(dominates(other, row, x=x, y=y, cost=cost) for j, other in enumerate(records) if j != i)
            for i, row in enumerate(records)]
    return table[keep]
