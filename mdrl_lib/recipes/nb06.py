"""Notebook ``06_recovery_methods``'s recipe: its parameters, what it asks the kit for, and the comparison of every
recovery method it assembles from those artifacts (recovery methods side by side).

The methods, all against the chain's end (Code -> Math -> QA -> CW, RL seed 0) and paired over its held-out items:
notebook 05's single refreshes of the damaged domain (the same specs, so the same cache keys), notebook 05's rollback
sweeps of its main pair (the rules scored on every domain), merges of notebook 01's single-domain experts and of the
chain's own stages (each stage's step, :mod:`mdrl_lib.merging`), the alternating refresh at the single refresh's cost (:mod:`mdrl_lib.comparison`), and the
experts themselves as references. Settings are chosen on the selection half of the items and reported on the report
half (:func:`mdrl_lib.comparison.recovery_comparison`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mdrl_lib.config import ConfigError
from mdrl_lib.recipes import nb05
from mdrl_lib.recipes import params as common
from mdrl_lib.recipes.params import NotebookParams, option
from mdrl_lib.specs import Base, Refresh, Scores, Spec, Stage

MERGE_METHODS: tuple[str, ...] = ("task_arithmetic", "ties", "dare_ties")  # the kit's small grid (7 merges by default)
ITEM_COLUMNS = ["domain", "item", "score"]
FAMILY_WORDS = {"refresh": "single refresh", "rollback": "rollback", "merge": "merge of the experts",
                "alternating": "alternating refresh", "expert": "single-domain expert (reference)"}


@dataclass(frozen=True)
class Params(NotebookParams):
    """Notebook 06's parameters: the damaged domain, the merge grid and the alternating refresh's cycles. Notebook
    05's refreshes and rollbacks are taken at notebook 05's defaults (its budgets, pairs and k grid)."""

    notebook: ClassVar[str] = "06_recovery_methods"

    order: str = common.chain_order()
    refresh_domain: str = common.refresh_domain()
    merge_scales: str = option("0.3,0.5,1.0", "task arithmetic: the scale of every expert's task vector (one merge "
                                              "each)", above=0.0, maximum=10.0, number_list=True)
    merge_densities: str = option("0.2,0.5", "TIES: the share of each task vector's entries kept, by magnitude (one "
                                             "merge each)", above=0.0, maximum=1.0, number_list=True)
    merge_drop_rates: str = option("0.5,0.9", "DARE-TIES: the share of each task vector's entries dropped at random, "
                                              "the rest rescaled (one merge each)", minimum=0.0, maximum=0.99,
                                   number_list=True)
    merge_stages: bool = option(True, "also merge the chain's own stages (each stage minus the one before it) with "
                                      "the same grid (task arithmetic at scale 1 is the chain's end, so it is left "
                                      "out)")
    alternating_cycles: int = option(3, "cycles of the alternating refresh (A, then each other domain; A takes twice "
                                        "each other's steps), rl_refresh_steps in all", minimum=1, maximum=10**4)

    def validate(self) -> None:
        from mdrl_lib.comparison import cycle_split, default_first_share

        order = self.config.order
        if self.refresh_domain not in order[:-1]:
            raise ConfigError(f"refresh_domain: {self.refresh_domain!r} must be trained before the last stage of the "
                              f"order {','.join(order)} (a later stage must be able to damage it); valid: "
                              f"{', '.join(order[:-1])}")
        for name in ("merge_scales", "merge_densities", "merge_drop_rates"):
            if not self.numbers(name):
                raise ConfigError(f"{name}: give at least one number")
        try:
            cycle_split(self.config.rl.refresh_steps, self.alternating_cycles, len(order),
                        default_first_share(len(order)))
        except ConfigError as error:
            raise ConfigError(f"alternating_cycles: {error}") from None

    def numbers(self, name: str) -> tuple[float, ...]:
        """The numbers of a list option (``merge_scales``, ...), sorted, each once."""
        return tuple(sorted({float(p) for p in str(getattr(self, name)).split(",") if p.strip()}))

    def recovery_params(self) -> nb05.Params:
        """Notebook 05's parameters at its defaults, with this run's run parameters, order and damaged domain."""
        return nb05.Params(**self.run_values(), refresh_domain=self.refresh_domain)


@dataclass(frozen=True)
class ComparisonPlan:
    """Every artifact notebook ``06_recovery_methods`` asks for, by role (built by :func:`comparison_plan`).

    ``recovery``: notebook 05's plan (its specs are reused as they are, same keys); ``refreshes``: ``{steps:
    Refresh}``, 05's linear refreshes of A from the chain's end; ``pair``: 05's main rollback pair; ``rollbacks``:
    ``{rule: RollbackScores}``, its sweeps scored on every domain; ``experts``: ``{domain: Stage(Base(), domain)}``;
    ``merges``: the :class:`~mdrl_lib.merging.Merge` specs of the experts (:func:`~mdrl_lib.merging.merge_grid`);
    ``stage_merges``: those of the chain's stages, each stage's task vector starting from the stage before it
    (empty when ``merge_stages`` is off);
    ``schedule``: the alternating refresh (:func:`~mdrl_lib.comparison.alternating_refresh`); ``cycle_ends``: its
    refreshes that end a cycle (scored); ``refresh_cost``: the single refresh's sequence passes at
    ``rl_refresh_steps`` (the cost cap).
    """

    options: dict
    recovery: nb05.RecoveryPlan
    domain: str
    refreshes: dict
    pair: tuple[str, str]
    rollbacks: dict
    experts: dict
    merges: tuple
    stage_merges: tuple
    schedule: tuple
    cycle_ends: tuple
    refresh_steps: int
    step_cost: int
    rollback_costs: dict

    @property
    def chain_end(self) -> Stage:
        return self.recovery.chain_end

    @property
    def post_a(self) -> Stage:
        return self.recovery.post_a

    @property
    def refresh_cost(self) -> int:
        """The single refresh's cost in sequence passes (``rl_refresh_steps`` x the cost of a step): the cap."""
        return self.refresh_steps * self.step_cost

    def specs(self) -> list[Spec]:
        """Every spec, each once, inputs first: the chain, the refreshes, the rollback sweeps, the experts, the
        merges, the alternating refresh, and the scores the notebook reads."""
        merges = [*self.merges, *self.stage_merges]
        models = [*self.recovery.chain, *self.refreshes.values(), *self.experts.values(), *merges]
        scored = [self.post_a, self.chain_end, *self.refreshes.values(), *self.experts.values(), *merges,
                  *self.cycle_ends]
        return list(dict.fromkeys([Base(), *models, *self.rollbacks.values(), *self.schedule,
                                   *(Scores(m) for m in scored)]))


def settle(kit, params: Params, *, build: bool = True) -> tuple[nb05.Params | None, tuple[str, ...]]:
    """Notebook 05's parameters settled on this run's chain (:func:`mdrl_lib.recipes.nb05.settle`): its main pair
    ``"math,auto"`` becomes the pair the chain shows doing the damage."""
    return nb05.settle(kit, params.recovery_params(), build=build)


def comparison_plan(kit, params: Params, recovery_params: nb05.Params | None = None,
                    chosen: tuple[str, ...] = ()) -> ComparisonPlan:
    """Notebook 06's artifacts for ``params`` (``recovery_params``: notebook 05's, settled by :func:`settle`; by
    default settled here, which scores the chain). Specs only: nothing else is built."""
    from mdrl_lib.comparison import alternating_refresh, cycle_ends
    from mdrl_lib.merging import merge_grid, stage_references
    from mdrl_lib.recovery import refresh_step_cost, rollback_cost

    if recovery_params is None:
        recovery_params, chosen = settle(kit, params)
    recovery = nb05.recovery_plan(kit, recovery_params, chosen)
    a, order = recovery.domain, kit.config.order
    steps = kit.config.rl.refresh_steps
    refreshes = {n: recovery.refreshes[("linear", n)] for schedule, n in recovery.refreshes if schedule == "linear"}
    pair = recovery.pairs[0]
    key = ",".join(pair)
    # the main pair's sweeps scored on every domain (C7's random draws and equal-size controls score A alone)
    rollbacks = {rule: spec for (p, rule), spec in recovery.rollbacks.items() if p == key and spec.domains is None}
    options05 = recovery.options
    rollback_costs = {rule: rollback_cost(rule, objective_sequences=options05["objective_prompts"]
                                          * options05["objective_samples"],
                                          probes=options05["hessian_probes"],
                                          route_sequences=2 * options05["conflict_route_prompts"])
                      for rule in rollbacks}
    experts = {d: Stage(Base(), d) for d in order}
    merges = tuple(merge_grid(Base(), tuple(experts.values()), MERGE_METHODS, scales=params.numbers("merge_scales"),
                              densities=params.numbers("merge_densities"),
                              drop_rates=params.numbers("merge_drop_rates"), seed=kit.config.seed))
    stage_merges = ()
    if params.merge_stages:
        chain = tuple(recovery.chain)
        stage_merges = tuple(merge_grid(Base(), chain, MERGE_METHODS,
                                        scales=tuple(s for s in params.numbers("merge_scales") if s != 1.0),
                                        densities=params.numbers("merge_densities"),
                                        drop_rates=params.numbers("merge_drop_rates"), seed=kit.config.seed,
                                        references=stage_references(Base(), chain)))
    schedule = tuple(alternating_refresh(recovery.chain_end, order, a, total_steps=steps,
                                         cycles=params.alternating_cycles, lr_schedule="linear"))
    return ComparisonPlan(options=params.options(), recovery=recovery, domain=a, refreshes=refreshes, pair=pair,
                          rollbacks=rollbacks, experts=experts, merges=merges, stage_merges=stage_merges,
                          schedule=schedule,
                          cycle_ends=tuple(cycle_ends(list(schedule))), refresh_steps=steps,
                          step_cost=refresh_step_cost(kit.config.rl), rollback_costs=rollback_costs)


def plan(kit, params: Params) -> list:
    """Every spec notebook 06 asks for: what the choice of notebook 05's ``"math,auto"`` pair reads, then the
    comparison's artifacts (:meth:`ComparisonPlan.specs`); a :class:`~mdrl_lib.plan.Pending` part until the chain
    is scored."""
    return common.pair_plan(kit, params.recovery_params(), nb05.PAIR_FIELDS,
                            lambda resolved: comparison_plan(kit, params, resolved).specs())


def used_and_planned(kit, params: Params) -> tuple[set[str], set[str]]:
    """(the keys of every artifact ``kit`` was asked for, the keys of the planned specs and of everything they are
    built from): equal when notebook 06 used exactly what its plan lists."""
    return common.used_and_planned_keys(kit, plan(kit, params))


# ------------------------------------------------------------------- the notebook's tables and claim inputs


def items(kit, spec):
    """Per-item held-out scores of a model spec: columns ``domain``, ``item``, ``score`` (scored once, cached)."""
    return kit.item_results(spec)[ITEM_COLUMNS]


def merge_name(spec) -> str:
    """A merge's name in the comparison: what it merges (``merge``: the experts; ``stage merge``: the chain's
    stages), its method and the setting its sweep varies."""
    what = "stage merge" if spec.references is not None else "merge"
    if spec.method == "task_arithmetic":
        return f"{what} task_arithmetic scale {spec.weights[0]:g}"
    if spec.method == "ties":
        return f"{what} ties density {spec.density:g}"
    return f"{what} {spec.method} drop {spec.drop_rate:g}"


def refresh_name(steps: int) -> str:
    return f"refresh {steps} steps"


def rollback_name(rule: str, fraction: float) -> str:
    return f"rollback {rule}" + ("" if rule == "revert_stage" else f" k={fraction:g}")


def alternating_name(cycle: int, cycles: int) -> str:
    return f"alternating {cycles} cycles" if cycle == cycles else f"alternating after cycle {cycle}"


def methods(kit, plan: ComparisonPlan) -> dict:
    """Every method's inputs to :func:`~mdrl_lib.comparison.recovery_comparison`: ``items`` (method -> per-item
    table on the chain end's held-out items), ``costs`` (sequence passes; NaN for the experts), ``families`` and
    ``groups`` (one group per refresh budgets, per rollback rule, per merge method; the alternating refresh at the
    end of its last cycle; each expert its own). Rollbacks at every budget k of notebook 05's grid (``revert_stage``:
    all of B's stage)."""
    import numpy as np

    from mdrl_lib.domains.base import DOMAIN_TITLES

    table, costs, families, groups = {}, {}, {}, {}

    def add(name, frame, cost, family, group):
        table[name], costs[name], families[name], groups[name] = frame, cost, family, group

    for steps, spec in plan.refreshes.items():
        add(refresh_name(steps), items(kit, spec), steps * plan.step_cost, "refresh", "refresh")
    for rule, spec in plan.rollbacks.items():
        sweep = kit.open(spec)
        for fraction in sorted(sweep["fraction"].unique()):
            part = sweep[np.isclose(sweep["fraction"], fraction)][ITEM_COLUMNS]
            add(rollback_name(rule, fraction), part, plan.rollback_costs[rule], "rollback", f"rollback {rule}")
    for spec in plan.merges:
        add(merge_name(spec), items(kit, spec), 0, "merge", f"merge {spec.method}")
    for spec in plan.stage_merges:
        add(merge_name(spec), items(kit, spec), 0, "stage_merge", f"stage merge {spec.method}")
    cycles = len(plan.cycle_ends)
    add(alternating_name(cycles, cycles), items(kit, plan.cycle_ends[-1]), plan.refresh_cost, "alternating",
        "alternating")
    for domain, spec in plan.experts.items():
        add(f"{DOMAIN_TITLES[domain]} expert", items(kit, spec), float("nan"), "expert", f"{domain} expert")
    return {"items": table, "costs": costs, "families": families, "groups": groups}


def comparison(kit, plan: ComparisonPlan, inputs: dict | None = None, *, n_boot: int = 2000):
    """The comparison of every recovery method (:func:`~mdrl_lib.comparison.recovery_comparison`): settings chosen
    per group on the selection half at no more than the single refresh's cost, reported on the report half; one
    row per chosen method with its changes, cost, family and ``on_front``."""
    from mdrl_lib.comparison import recovery_comparison

    inputs = inputs or methods(kit, plan)
    return recovery_comparison(inputs["items"], items(kit, plan.chain_end), costs=inputs["costs"],
                               families=inputs["families"], groups=inputs["groups"], damaged=plan.domain,
                               max_cost=plan.refresh_cost, n_boot=n_boot)


def summary_table(table):
    """The comparison as a reader reads it: per method (rows) its family, cost, the damaged domain's change, the
    others' mean change, each domain's change (report half) and whether it is on the Pareto front."""
    from mdrl_lib.domains.base import DOMAIN_TITLES

    a = table.attrs["damaged"]
    columns = {"family": "family", "cost": "cost (sequence passes)", "damaged_change": f"{DOMAIN_TITLES[a]} change",
               "others_mean": "others' mean change"}
    columns.update({f"{d}_change": DOMAIN_TITLES[d] for d in table.attrs["domains"]})
    columns.update({"members": "settings tried", "on_front": "on the front"})
    return table.set_index("method")[list(columns)].rename(columns=columns)


def cost_lines(plan: ComparisonPlan) -> list[str]:
    """How each family's cost is counted, in sequence passes, one line each."""
    lines = [f"single refresh: steps x {plan.step_cost} passes a step (recovery.refresh_step_cost); "
             f"{plan.refresh_steps} steps = {plan.refresh_cost:,} passes (the cap)",
             f"alternating refresh: {plan.refresh_steps} steps in all over {len(plan.cycle_ends)} cycles = "
             f"{plan.refresh_cost:,} passes (comparison.schedule_cost), the single refresh's cost"]
    lines += [f"rollback {rule}: {cost:,} passes (recovery.rollback_cost: choosing the coordinates; any k)"
              for rule, cost in plan.rollback_costs.items()]
    lines += ["merges: 0 training passes (tensor arithmetic on the experts' weights only)",
              "merges of the chain's stages: 0 training passes (tensor arithmetic on the stages' weights, which the "
              "chain trained anyway)",
              "single experts: not counted (they are what the merges combine; references beside the front)"]
    return lines


def alternating_tracking(kit, plan: ComparisonPlan, *, n_boot: int = 2000):
    """Every domain's change against the chain's end after each cycle of the alternating refresh (all held-out items,
    paired), beside the single refresh at the same total steps: one row per (method, domain) with ``cycle``,
    ``steps`` (so far) and ``cost``."""
    import pandas as pd

    from mdrl_lib.comparison import method_changes, schedule_table

    schedule = schedule_table(list(plan.schedule))
    ends = schedule[schedule["ends_cycle"]].reset_index(drop=True)
    cycles = len(plan.cycle_ends)
    frames, families, costs, rows = {}, {}, {}, []
    for i, spec in enumerate(plan.cycle_ends):
        name = alternating_name(i + 1, cycles)
        frames[name], families[name] = items(kit, spec), "alternating"
        costs[name] = int(ends.loc[i, "cumulative_steps"]) * plan.step_cost
        rows.append({"method": name, "cycle": i + 1, "steps": int(ends.loc[i, "cumulative_steps"])})
    single = refresh_name(plan.refresh_steps)
    frames[single], families[single] = items(kit, plan.refreshes[plan.refresh_steps]), "refresh"
    costs[single] = plan.refresh_cost
    rows.append({"method": single, "cycle": None, "steps": plan.refresh_steps})
    changes = method_changes(frames, items(kit, plan.chain_end), families=families, costs=costs, halves=("all",),
                             n_boot=n_boot)
    return changes.merge(pd.DataFrame(rows), on="method")[["method", "cycle", "steps", "cost", "domain", "change",
                                                           "ci_low", "ci_high"]]


def k1_inputs(kit, plan: ComparisonPlan, table) -> dict:
    """The arguments of :func:`~mdrl_lib.claims.nb06.check_k1`: the comparison's rows (report half), the damage
    premise (A's paired change from theta_A* to the chain's end on the report half, in standard errors), the cost
    cap and the damaged domain."""
    from mdrl_lib.recipes.nb05 import damage

    return {"rows": table[["method", "family", "cost", "items", "damaged_change", "others_mean"]].to_dict("records"),
            "damage": damage(kit, plan.post_a, plan.chain_end, plan.domain, half="report"),
            "cost_cap": plan.refresh_cost, "domain": plan.domain,
            "members": {m: int(n) for m, n in zip(table["method"], table["members"])}}
