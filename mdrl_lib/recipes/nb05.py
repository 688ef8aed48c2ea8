"""Notebook ``05_refresh_vs_rollback``'s recipe: its parameters, what it asks the kit for, and the tables and claim
inputs it assembles from those artifacts."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from mdrl_lib.config import ConfigError
from mdrl_lib.domains.base import DOMAIN_NAMES
from mdrl_lib.recipes.params import NotebookParams, option, pair_choice_text  # noqa: F401 (the notebook reads it here)
from mdrl_lib.recipes import params as common
from mdrl_lib.specs import Base, ObjectiveBatch, Refresh, Scores, Spec, Stage

PAIRS = common.domain_pairs()
MAIN_RULES: tuple[str, ...] = ("first_order", "first_order_routes", "second_order", "random", "magnitude",
                               "other_delta", "gradient_step", "revert_stage")
SECOND_PAIR_RULES: tuple[str, ...] = ("first_order", "random", "magnitude", "gradient_step", "revert_stage")
# C7's controls at equal size of change: the name in the plan -> the rule whose order picks the coordinates; each
# takes coordinates until its rollback moves the weights as far (L2) as the first-order rule's at the same budget
SIZE_CONTROLS: dict[str, str] = {"random_size": "random", "magnitude_size": "magnitude"}
# the controls C7 is judged against: the plan's name -> (rule, matched by)
C7_CONTROLS: dict[str, tuple[str, str]] = {"random": ("random", "count"), "magnitude": ("magnitude", "count"),
                                           "random_size": ("random", "size"), "magnitude_size": ("magnitude", "size")}
# the rollbacks along which L_A is measured beside A's score (the first-order rule and the deterministic controls)
ALONG_RULES: tuple[str, ...] = ("first_order", "gradient_step", "magnitude", "magnitude_size")
RANDOM_DRAWS = 10  # random coordinate sets per budget for each random control (the kit's floor for random-set controls)


@dataclass(frozen=True)
class Params(NotebookParams):
    """Notebook 05's parameters: the refresh budgets, the rollback pairs, rules and budgets, and L_A's batch."""

    notebook: ClassVar[str] = "05_refresh_vs_rollback"

    order: str = common.chain_order()
    refresh_domain: str = common.refresh_domain()
    refresh_budgets: str = option("10,50", "GRPO steps of the shorter refreshes; the run's rl_refresh_steps is "
                                              "always added", minimum=1, maximum=10**6, number_list=True)
    constant_refresh: bool = option(True, "also refresh at a constant rate at the largest of refresh_budgets (beside "
                                          "the decaying one)")
    rollback_pair: str = option("math,auto", "A,B: coordinates of the chain-end model go back to their value before "
                                             "B's stage. \"A,auto\": B is the later stage that lowers A most on the "
                                             "selection half of A's held-out items (C7 is then judged on the other "
                                             "half)", choices=common.chosen_pairs() + PAIRS)
    second_rollback_pair: str = option("math,qa", "a second pair, with the first-order rule and its controls (empty: "
                                                  "none; the same as the first: none); the paper's pair is math,qa",
                                       choices=("",) + common.chosen_pairs() + PAIRS)
    rollback_fractions: str = option("0.001,0.003,0.01,0.03,0.1", "rollback budgets k, as fractions of all "
                                                                  "parameters", above=0.0, maximum=1.0,
                                     number_list=True)
    rollback_gradient_at: str = option("chain_end", 'where g_A is evaluated: "chain_end" or "own" (A\'s own trained '
                                                    "weights)", choices=("chain_end", "own"))
    hessian_probes: int = option(8, "Rademacher probes of the Hessian diagonal (second-order rule)", minimum=1,
                                 maximum=10**4)
    c7_fraction: float = option(0.01, "the budget at which the cost table compares the rollbacks (one of "
                                      "rollback_fractions); C7 itself is judged over the rules file's k range",
                                above=0.0, maximum=1.0)
    objective_prompts: int = common.objective_prompts()
    objective_samples: int = common.objective_samples()
    conflict_route_fraction: float = common.conflict_route_fraction()
    conflict_route_prompts: int = common.conflict_route_prompts()
    distance_subspace_rank: int = option(8, "R: top Hessian eigenvectors of the conflict subspace on which the "
                                            "refresh's distance to theta_A* is measured", minimum=1, maximum=200)

    def validate(self) -> None:
        order = self.config.order
        if self.refresh_domain not in order or order.index(self.refresh_domain) == len(order) - 1:
            raise ConfigError(f"refresh_domain: {self.refresh_domain!r} must be trained before the last stage of the "
                              f"order {','.join(order)} (a later stage must be able to damage it); valid: "
                              f"{', '.join(order[:-1])}")
        self.budgets  # noqa: B018 (whole numbers)
        if not any(math.isclose(self.c7_fraction, f) for f in self.fractions):
            raise ConfigError(f"c7_fraction: {self.c7_fraction} is not one of rollback_fractions "
                              f"({self.rollback_fractions}); choose one of them")
        for a, b in self.given_pairs:
            if b == "auto":  # B is chosen from the chain; A must be one that a later stage can damage
                if a not in order[:-1]:
                    raise ConfigError(f"rollback pair {a},auto: A = {a!r} must be trained before the last stage of the "
                                      f"order {','.join(order)}; valid: {', '.join(order[:-1])}")
                continue
            for name, value in (("A", a), ("B", b)):
                if value not in order:
                    raise ConfigError(f"rollback pair {a},{b}: {name} = {value!r} is not in the order {','.join(order)}")
            if order.index(a) >= order.index(b):
                raise ConfigError(f"rollback pair {a},{b}: A must be trained before B in the order {','.join(order)}")

    @property
    def budgets(self) -> tuple[int, ...]:
        """The refresh budgets given, whole numbers, sorted, each once (the run's ``rl_refresh_steps`` is added
        by :func:`recovery_plan`)."""
        values = [float(p) for p in self.refresh_budgets.split(",") if p.strip()]
        if not values or any(v < 1 or not v.is_integer() for v in values):
            raise ConfigError(f"refresh_budgets: expected whole numbers >= 1, e.g. '10,20,50', got "
                              f"{self.refresh_budgets!r}")
        return tuple(sorted({int(v) for v in values}))

    @property
    def fractions(self) -> tuple[float, ...]:
        return tuple(sorted({float(f) for f in self.rollback_fractions.split(",")}))

    @property
    def given_pairs(self) -> tuple[tuple[str, str], ...]:
        """The rollback pairs as given (B may read ``auto``): the main one, then the second unless empty or the same."""
        pairs = [tuple(self.rollback_pair.split(","))]
        if self.second_rollback_pair and self.second_rollback_pair != self.rollback_pair:
            pairs.append(tuple(self.second_rollback_pair.split(",")))
        return tuple(pairs)  # type: ignore[return-value]

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """The rollback pairs (A, B), settled: the main one, then the second unless empty or the same. A pair still
        reading ``"A,auto"`` must first be settled by :func:`settle`."""
        for a, b in self.given_pairs:
            if b == "auto":
                raise ConfigError(f"rollback pair {a},auto: settle it first with recipe.settle(kit, params), which "
                                  f"chooses B from the run's chain")
        out = list(dict.fromkeys(self.given_pairs))
        return tuple(out)


@dataclass(frozen=True)
class RecoveryPlan:
    """Every artifact notebook ``05_refresh_vs_rollback`` asks for, by role (built by :func:`recovery_plan`).

    ``chain``: the chain's stages (rl seed 0); ``post_a``: theta_A*, the chain's stage after the refreshed
    domain A; ``refreshes``: ``{(schedule, steps): Refresh}`` from the chain's end; ``controls``:
    ``{steps: Refresh}`` of the same budgets of A's steps from ``post_a``; ``equal_cost``: the refresh that
    costs as much as the ``first_order`` rollback; ``objective``: A's objective batch (samples of
    ``post_a``); ``rollbacks``: ``{(pair, rule): RollbackScores}``; ``changes``: ``{(pair, rule):
    RollbackChanges}``, each sweep's paired changes against the chain's end (rule ``random``: the mean over
    :data:`RANDOM_DRAWS` draws, A's items only; ``random_size`` and ``magnitude_size``: the equal-size controls
    of :data:`SIZE_CONTROLS`, A's items only); ``subspace``: the conflict subspace of A and the main pair's B
    at theta_A* (``ConflictBasis``); ``objective_along``: ``{pair: ObjectiveAlong}``, L_A measured along each
    pair's first-order, gradient-step and magnitude rollbacks; ``refresh_objective``: L_A at theta_A*, the
    chain's end and each linear refresh; ``options``: the parameters used.
    """

    options: dict
    chain: tuple[Stage, ...]
    domain: str
    post_a: Stage
    budgets: tuple[int, ...]
    refreshes: dict
    controls: dict
    equal_cost_steps: int
    equal_cost: Refresh
    objective: Spec
    pairs: tuple[tuple[str, str], ...]
    rollbacks: dict
    fractions: tuple[float, ...]
    changes: dict
    subspace: Spec
    objective_along: dict
    refresh_objective: Spec
    chosen: tuple[str, ...] = ()

    @property
    def chain_end(self) -> Stage:
        return self.chain[-1]

    def stage_of(self, domain: str) -> Stage:
        """The chain's stage that trains ``domain``."""
        return next(s for s in self.chain if s.domain == domain)

    def before(self, domain: str) -> Spec:
        """The weights before ``domain``'s stage (its parent)."""
        return self.stage_of(domain).parent

    def specs(self) -> list[Spec]:
        """Every spec, each once, in the order a pipeline may build them (inputs first)."""
        models = [Base(), *self.chain, *self.refreshes.values(), *self.controls.values(), self.equal_cost]
        objectives = [s.objective for s in self.rollbacks.values() if s.objective is not None]
        out = [*models, *(Scores(m) for m in models), self.objective, *objectives, *self.rollbacks.values(),
               *self.changes.values(), self.subspace, *self.objective_along.values(), self.refresh_objective]
        return list(dict.fromkeys(out))


PAIR_FIELDS = ("rollback_pair", "second_rollback_pair")


def settle(kit, params: Params, *, build: bool = True) -> tuple[Params | None, tuple[str, ...]]:
    """(``params`` with every rollback pair of ``"A,auto"`` replaced by the pair the run's chain shows doing the
    damage, the pairs ``"A,B"`` so chosen): :func:`~mdrl_lib.recipes.params.resolve_pairs`. A chosen pair's C7 is
    judged on the report half of A's held-out items (:func:`c7_inputs`). ``build=False``: ``(None, ())`` while
    the chain is not scored yet."""
    chosen_fields = [name for name in PAIR_FIELDS if getattr(params, name).endswith(",auto")]
    resolved = common.resolve_pairs(kit, params, PAIR_FIELDS, build=build)
    if resolved is None:
        return None, ()
    return resolved, tuple(dict.fromkeys(getattr(resolved, name) for name in chosen_fields))


def recovery_plan(kit, params: Params, chosen: tuple[str, ...] = ()) -> RecoveryPlan:
    """Notebook 05's artifacts for settled ``params`` (the chain's order is the run's; ``chosen``: the pairs chosen
    from the chain's data, :func:`settle`). Specs only: nothing is built."""
    from mdrl_lib.recovery import (GRADIENT_RULES, ConflictBasis, ObjectiveAlong, RollbackChanges, RollbackScores,
                                   equal_cost_steps, rollback_cost)

    order = kit.config.order
    chain = tuple(kit.chain_specs(order, rl_seed=0))
    domain = params.refresh_domain
    post_a = chain[order.index(domain)]
    end = chain[-1]
    budgets = tuple(sorted(set(params.budgets) | {kit.config.rl.refresh_steps}))
    refreshes = {("linear", steps): Refresh(end, domain, steps=steps, lr_schedule="linear") for steps in budgets}
    if params.constant_refresh:  # one budget only (the largest given): does the recovery depend on the schedule?
        longest = max(params.budgets)
        refreshes[("constant", longest)] = Refresh(end, domain, steps=longest, lr_schedule="constant")
    controls = {steps: Refresh(post_a, domain, steps=steps, lr_schedule="linear") for steps in budgets}
    objective = ObjectiveBatch(post_a, domain, prompts=params.objective_prompts, samples=params.objective_samples)
    cost = rollback_cost("first_order", objective_sequences=params.objective_prompts * params.objective_samples)
    steps = equal_cost_steps(cost, kit.config.rl)
    equal = Refresh(end, domain, steps=steps, lr_schedule="linear")
    rollbacks, along = {}, {}
    for number, (a, b) in enumerate(params.pairs):
        stage_b = chain[order.index(b)]
        own = chain[order.index(a)]
        pair_objective = objective if a == domain else ObjectiveBatch(own, a, prompts=params.objective_prompts,
                                                                      samples=params.objective_samples)
        others = [s for s in chain if s.domain not in (a, b)]
        other = (others[0], others[0].parent) if others else None
        at = end if params.rollback_gradient_at == "chain_end" else own
        for rule in (MAIN_RULES if number == 0 else SECOND_PAIR_RULES):
            if rule == "other_delta" and other is None:
                continue
            rollbacks[(f"{a},{b}", rule)] = RollbackScores(
                end, stage_b.parent, a, b, rule, params.fractions,
                objective=pair_objective if rule in GRADIENT_RULES else None,
                gradient_at=at if rule in GRADIENT_RULES else None,
                routes_at=own if rule == "first_order_routes" else None,
                route_fraction=params.conflict_route_fraction, route_prompts=params.conflict_route_prompts,
                other=other if rule == "other_delta" else None,
                stage_after=stage_b if rule == "revert_stage" else None,
                probes=params.hessian_probes, seed=kit.config.seed,
                draws=RANDOM_DRAWS if rule == "random" else 1,
                domains=(a,) if rule == "random" or (number > 0 and rule == "gradient_step") else None)
        first = rollbacks[(f"{a},{b}", "first_order")]
        for name, rule in SIZE_CONTROLS.items():
            rollbacks[(f"{a},{b}", name)] = RollbackScores(end, stage_b.parent, a, b, rule, params.fractions,
                                                           seed=kit.config.seed, norm_of=first, domains=(a,),
                                                           draws=RANDOM_DRAWS if rule == "random" else 1)
        along[f"{a},{b}"] = ObjectiveAlong(pair_objective, models=(end,), sweeps=tuple(
            rollbacks[(f"{a},{b}", r)] for r in ALONG_RULES))
    subspace = ConflictBasis(post_a, objective, domain, params.pairs[0][1],
                             route_fraction=params.conflict_route_fraction, route_prompts=params.conflict_route_prompts,
                             rank=params.distance_subspace_rank, seed=kit.config.seed)
    linear = tuple(refreshes[("linear", n)] for n in budgets)
    return RecoveryPlan(options=params.options(), chain=chain, domain=domain, post_a=post_a, budgets=budgets,
                        refreshes=refreshes, controls=controls, equal_cost_steps=steps, equal_cost=equal,
                        objective=objective, pairs=params.pairs, rollbacks=rollbacks, fractions=params.fractions,
                        changes={key: RollbackChanges(spec, end) for key, spec in rollbacks.items()},
                        subspace=subspace, objective_along=along,
                        refresh_objective=ObjectiveAlong(objective, models=(post_a, end, *linear)),
                        chosen=tuple(chosen))


def plan(kit, params: Params) -> list:
    """Every spec notebook 05 asks for: what the choice of an ``"A,auto"`` pair reads, the chain's stages, each
    refresh budget and schedule, the controls from theta_A*, the equal-cost refresh, their scores, A's objective
    batch, the rollback sweeps with their paired changes, and the conflict subspace the refresh's distances are
    measured on; a :class:`~mdrl_lib.plan.Pending` part until the chain is scored."""
    return common.pair_plan(kit, params, PAIR_FIELDS, lambda resolved: recovery_plan(kit, resolved).specs())


# ------------------------------------------------------------------- the notebook's tables and claim inputs

REFRESH_CURVE = "refresh from the chain's end ({schedule} rate)"
CONTROL_CURVE = "control: the same steps from θ_A*"
SHARE_COLUMN = "share of the drop recovered (linear)"
ITEM_COLUMNS = ["domain", "item", "score"]
GRADIENT_AT = {"chain_end": "at the chain's end θ (where the rollback starts)",
               "own": "at A's own trained weights θ_A*"}


def refresh_curve(schedule: str) -> str:
    """The name of the refresh curve at ``schedule`` (``linear`` or ``constant``) in notebook 05's tables."""
    return REFRESH_CURVE.format(schedule=schedule)


def items(kit, spec):
    """Per-item held-out scores of a model spec: columns ``domain``, ``item``, ``score`` (scored once, cached)."""
    return kit.item_results(spec)[ITEM_COLUMNS]


def change_row(table, domain: str) -> dict:
    """One domain's paired change (``before``, ``after``, ``diff``, ``ci_low``, ``ci_high``, ``p_value``) from a
    :func:`~mdrl_lib.recovery.paired_changes` table."""
    return table.set_index("domain").loc[domain].to_dict()


def chain_drop(kit, plan: RecoveryPlan):
    """Per domain, the paired change from theta_A* to the chain's end (a ``paired_changes`` table)."""
    from mdrl_lib.recovery import paired_changes

    return paired_changes(items(kit, plan.post_a), items(kit, plan.chain_end))


def refresh_curves(kit, plan: RecoveryPlan):
    """The refresh curves: per (curve, domain, steps) the paired change (``diff``, ``ci_low``, ``ci_high``, ...)
    of each refresh from the chain's end and of each control from theta_A*, with a row at 0 steps per curve."""
    import pandas as pd

    from mdrl_lib.recovery import paired_changes

    end, post = items(kit, plan.chain_end), items(kit, plan.post_a)
    curves = [paired_changes(end, items(kit, spec)).assign(curve=refresh_curve(schedule), steps=steps)
              for (schedule, steps), spec in plan.refreshes.items()]
    curves += [paired_changes(post, items(kit, spec)).assign(curve=CONTROL_CURVE, steps=steps)
               for steps, spec in plan.controls.items()]
    curves = pd.concat(curves, ignore_index=True)
    zero = pd.DataFrame([{"curve": c, "domain": d, "steps": 0, "diff": 0.0, "ci_low": 0.0, "ci_high": 0.0}
                         for c in curves["curve"].unique() for d in DOMAIN_NAMES])
    return pd.concat([zero, curves], ignore_index=True)


def refresh_summary(curves, plan: RecoveryPlan, drop):
    """A's change per budget (rows) and curve (columns), and the share of A's drop (``drop``: a
    :func:`chain_drop` table) the linear refresh recovers."""
    a = plan.domain
    chosen = curves[(curves["domain"] == a) & (curves["steps"] > 0)]
    summary = chosen.pivot(index="steps", columns="curve", values="diff")
    summary[SHARE_COLUMN] = summary[refresh_curve("linear")] / -change_row(drop, a)["diff"]
    return summary


def refresh_distances(kit, plan: RecoveryPlan, subspace):
    """Per (curve, steps) the distances of the weights to theta_A* (``overall``, ``routes``, ``subspace``:
    :meth:`~mdrl_lib.recovery.ConflictSubspace.distances`), the refreshes starting from the chain's end and
    the controls from theta_A* itself (0)."""
    import pandas as pd

    from mdrl_lib.recovery import deltas

    theta_a = dict(kit.weights(plan.post_a))

    def distances(spec) -> dict:
        return subspace.distances(deltas(dict(kit.weights(spec)), theta_a))

    start = distances(plan.chain_end)
    rows = [{"curve": refresh_curve(s), "steps": 0, **start} for s in sorted({s for s, _ in plan.refreshes})]
    rows += [{"curve": CONTROL_CURVE, "steps": 0, "overall": 0.0, "routes": 0.0, "subspace": 0.0}]
    rows += [{"curve": refresh_curve(s), "steps": n, **distances(spec)} for (s, n), spec in plan.refreshes.items()]
    rows += [{"curve": CONTROL_CURVE, "steps": n, **distances(spec)} for n, spec in plan.controls.items()]
    return pd.DataFrame(rows)


def rollback_budgets(kit, plan: RecoveryPlan):
    """One row per (pair, rule, fraction) of the sweeps' manifests: ``count`` put back, ``chosen``, ``norm`` of
    the change, ``predicted_change`` of L_A."""
    import pandas as pd

    return pd.DataFrame([{"pair": pair, "rule": rule, **budget} for (pair, rule), spec in plan.rollbacks.items()
                         for budget in kit.get(spec).metrics["budgets"]])


def pair_drops(kit, plan: RecoveryPlan) -> dict:
    """Per pair ``"A,B"``, the paired changes from before B's stage to the chain's end."""
    from mdrl_lib.recovery import paired_changes

    end = items(kit, plan.chain_end)
    return {f"{a},{b}": paired_changes(items(kit, plan.before(b)), end) for a, b in plan.pairs}


def rollback_curves(kit, plan: RecoveryPlan):
    """Every sweep's paired changes against the chain's end (the cached ``RollbackChanges``): one row per
    (pair, rule, fraction, domain)."""
    import pandas as pd

    return pd.concat([kit.open(spec).assign(pair=pair, rule=rule) for (pair, rule), spec in plan.changes.items()],
                     ignore_index=True)


def _at(table, fraction: float):
    import numpy as np

    return table[np.isclose(table["fraction"], fraction)]


def cost_table(kit, plan: RecoveryPlan, curves, rollbacks):
    """Each method's cost (sequence passes; :func:`~mdrl_lib.recovery.refresh_step_cost`,
    :func:`~mdrl_lib.recovery.rollback_cost`) and A's change against the chain's end: the refreshes (from
    ``curves``), the equal-cost refresh, and each rule of the main pair at ``c7_fraction`` (``revert_stage``:
    all of B's stage) from ``rollbacks`` (:func:`rollback_curves`). Indexed by method."""
    import pandas as pd

    from mdrl_lib.recovery import paired_changes, refresh_step_cost, rollback_cost

    a, options = plan.domain, plan.options
    step_cost = refresh_step_cost(kit.config.rl)
    gains = curves[curves["domain"] == a].set_index(["curve", "steps"])["diff"]
    rows = [{"method": f"refresh {steps} steps ({schedule})", "cost": steps * step_cost,
             "A change": gains[(refresh_curve(schedule), steps)]} for schedule, steps in plan.refreshes]
    equal = paired_changes(items(kit, plan.chain_end), items(kit, plan.equal_cost))
    rows.append({"method": f"refresh {plan.equal_cost_steps} steps (linear, the first-order rollback's cost)",
                 "cost": plan.equal_cost_steps * step_cost, "A change": change_row(equal, a)["diff"]})
    main = ",".join(plan.pairs[0])
    for pair, rule in plan.changes:
        if pair != main or rule in SIZE_CONTROLS:
            continue
        fraction = options["c7_fraction"] if rule != "revert_stage" else 1.0
        at = _at(rollbacks[(rollbacks["pair"] == pair) & (rollbacks["rule"] == rule)], fraction)
        cost = rollback_cost(rule, objective_sequences=options["objective_prompts"] * options["objective_samples"],
                             probes=options["hessian_probes"], route_sequences=2 * options["conflict_route_prompts"])
        rows.append({"method": f"rollback {rule} (k = {fraction:g})", "cost": cost,
                     "A change": change_row(at, a)["diff"]})
    costs = pd.DataFrame(rows).set_index("method")
    costs["cost in refresh steps"] = costs["cost"] / step_cost
    return costs


def paper_table(kit, plan: RecoveryPlan):
    """The paper's table (:func:`~mdrl_lib.recovery.results_table`, domain titles as columns): theta_A*, the
    chain's end, every refresh and control, and each rollback at its best budget for A (chosen on these items)."""
    from mdrl_lib.domains.base import DOMAIN_TITLES
    from mdrl_lib.recovery import best_fraction, results_table

    title = DOMAIN_TITLES[plan.domain]
    rows = {f"θ_A* (after the {title} stage)": items(kit, plan.post_a), "chain end": items(kit, plan.chain_end)}
    for (schedule, steps), spec in plan.refreshes.items():
        rows[f"refresh {steps} steps ({schedule} rate)"] = items(kit, spec)
    rows[f"refresh {plan.equal_cost_steps} steps (equal cost)"] = items(kit, plan.equal_cost)
    for steps, spec in plan.controls.items():
        rows[f"control: {steps} {title} steps from θ_A*"] = items(kit, spec)
    for (pair, rule), spec in plan.rollbacks.items():
        if spec.domains is not None:  # a control scored on A's items only (C7's random draws, equal-size sets)
            continue
        table = kit.open(spec)
        best = best_fraction(table, pair.split(",")[0])
        label = f"rollback {pair} {rule}" + ("" if rule == "revert_stage" else f" (best k = {best:g})")
        rows[label] = table[table["fraction"] == best][ITEM_COLUMNS]
    return results_table(rows, DOMAIN_NAMES).rename(columns=DOMAIN_TITLES)


def damage(kit, before, after, domain: str, half: str | None = None) -> dict:
    """``domain``'s paired change from the model ``before`` to the model ``after`` in standard errors (``diff``,
    ``se``, ``z``, ``n``: :func:`~mdrl_lib.recovery.paired_standard_errors`): the damage premise's figure; on one
    ``half`` of the items (:func:`mdrl_lib.pairs.split_items`) when given."""
    from mdrl_lib.pairs import split_items
    from mdrl_lib.recovery import paired_standard_errors

    def held(table):
        return split_items(table, half) if half else table

    return paired_standard_errors(held(items(kit, before)), held(items(kit, after)), domain)


def refresh_tracking(kit, plan: RecoveryPlan):
    """Does L_A follow A's score along the (linear) refresh? One row per budget (0: the chain's end): ``steps``,
    ``loss`` (L_A, the mean NLL of A's verified-correct samples, at that checkpoint), ``loss_change`` (minus the
    chain end's) and ``score_change`` (A's paired change from the chain's end)."""
    import pandas as pd

    from mdrl_lib.recovery import paired_changes

    losses = kit.open(plan.refresh_objective).set_index("model")["loss"]
    end = items(kit, plan.chain_end)
    rows = [{"steps": 0, "loss": float(losses[plan.chain_end.label()]), "score_change": 0.0}]
    for (schedule, steps), spec in plan.refreshes.items():
        if schedule == "linear":
            rows.append({"steps": steps, "loss": float(losses[spec.label()]),
                         "score_change": change_row(paired_changes(end, items(kit, spec)), plan.domain)["diff"]})
    table = pd.DataFrame(rows).sort_values("steps").reset_index(drop=True)
    table["loss_change"] = table["loss"] - table.loc[0, "loss"]
    return table[["steps", "loss", "loss_change", "score_change"]]


def rollback_tracking(kit, plan: RecoveryPlan, pair: tuple[str, str]):
    """Does L_A follow A's score along the pair's rollbacks? One row per (``rule``, ``fraction``) of
    :data:`ALONG_RULES` (the first-order rule, the equal-norm gradient step, magnitude at equal count and at
    equal size): ``loss`` (L_A measured there), ``loss_change`` (minus L_A at the chain's end), ``predicted_change``
    (the first-order prediction g_A . change; gradient rules only) and ``score_change`` (A's paired change from
    the chain's end, the cached ``RollbackChanges``)."""
    import pandas as pd

    a, key = pair[0], ",".join(pair)
    along = kit.open(plan.objective_along[key])
    start = float(along[along["source"] == "model"]["loss"].iloc[0])
    rows = []
    for rule in ALONG_RULES:
        sweep = plan.rollbacks[(key, rule)]
        points = along[(along["source"] == "rollback") & (along["model"] == sweep.label())]
        changes = kit.open(plan.changes[(key, rule)])
        changes = changes[changes["domain"] == a]
        for _, point in points.iterrows():
            score = changes[[math.isclose(f, point["fraction"]) for f in changes["fraction"]]]["diff"].iloc[0]
            rows.append({"rule": rule, "fraction": float(point["fraction"]), "norm": point["norm"], "loss": point["loss"],
                         "loss_change": point["loss"] - start, "predicted_change": point["predicted_change"],
                         "score_change": float(score)})
    return pd.DataFrame(rows)


def tracking_figures(table, *, rule: str | None = None) -> dict:
    """How well L_A's fall orders the points of a tracking table (:func:`rollback_tracking` restricted to
    ``rule``, or :func:`refresh_tracking`) as A's score change does: ``rank_correlation`` (Spearman, measured
    fall against score change; None when it cannot be computed: fewer than 3 points or a constant side),
    ``sign_agreement`` (:func:`~mdrl_lib.recovery.sign_agreement`), ``predicted_rank_correlation`` (the
    first-order predicted fall against the score change, where predicted) and ``points``."""
    from mdrl_lib.recovery import rank_correlation, sign_agreement

    part = table if rule is None else table[table["rule"] == rule]

    def rho(x, y):
        if len(part) < 3:
            return None
        value = rank_correlation(x, y)
        return None if math.isnan(value) else value

    out = {"rank_correlation": rho(-part["loss_change"], part["score_change"]),
           "sign_agreement": sign_agreement(part["loss_change"], part["score_change"]) if len(part) else None,
           "points": int(len(part))}
    if "predicted_change" in part and part["predicted_change"].notna().all():
        out["predicted_rank_correlation"] = rho(-part["predicted_change"].astype(float), part["score_change"])
    return out


def c6_inputs(kit, plan: RecoveryPlan, distance=None) -> dict:
    """The arguments of :func:`~mdrl_lib.claims.nb05.check_c6_refresh` for the real refresh at the run's
    ``rl_refresh_steps`` (linear rate): A's drop from theta_A* to the chain's end (and in standard errors, the
    damage premise), the refresh's change on every domain, its excess over the same steps from theta_A*, that
    control's own gain, the constant-rate refresh (its budget ``steps`` and the decaying refresh's change at that
    budget ``linear``: schedule dependence, when planned), whether
    L_A tracks A's score along the linear refresh, and (given ``distance``, :func:`refresh_distances`) the
    distance to theta_A* on the conflict subspace before and after the refresh."""
    from mdrl_lib.recovery import difference_in_changes, paired_changes

    a, steps = plan.domain, kit.config.rl.refresh_steps
    post, end = items(kit, plan.post_a), items(kit, plan.chain_end)
    refreshed, control = items(kit, plan.refreshes[("linear", steps)]), items(kit, plan.controls[steps])
    over = paired_changes(end, refreshed)
    inputs = {"drop": change_row(paired_changes(post, end), a), "recovery": change_row(over, a),
              "others": {d: change_row(over, d) for d in DOMAIN_NAMES if d != a},
              "excess": difference_in_changes((end, refreshed), (post, control), a), "domain": a, "steps": steps,
              "control_gain": change_row(paired_changes(post, control), a), "name": f"refresh-{a}",
              "damage": damage(kit, plan.post_a, plan.chain_end, a),
              "tracking": tracking_figures(refresh_tracking(kit, plan))}
    constant = [n for schedule, n in plan.refreshes if schedule == "constant"]
    if constant:  # the constant-rate refresh against the decaying one of the same budget
        n = constant[0]
        inputs["constant"] = {**change_row(paired_changes(end, items(kit, plan.refreshes[("constant", n)])), a),
                              "steps": n, "linear": change_row(paired_changes(end, items(kit, plan.refreshes[("linear", n)])),
                                                               a)["diff"]}
    if distance is not None:
        along = distance[distance["curve"] == refresh_curve("linear")].set_index("steps")["subspace"]
        inputs["subspace_distance"] = (float(along.loc[0]), float(along.loc[steps]))
    return inputs


def c7_inputs(kit, plan: RecoveryPlan, pair: tuple[str, str]) -> dict:
    """The arguments of :func:`~mdrl_lib.claims.nb05.check_c7` for the pair (A, B), over the budgets of the rules
    file's ``[C7] k_range``: A's drop since before B's stage; B's own stage's cost to A in standard errors (the
    damage premise); the first-order rollback's recovery as the mean over those budgets of each item's change
    from the chain's end (a paired test over items); its advantage over each control of :data:`C7_CONTROLS`
    (random of :data:`RANDOM_DRAWS` draws and magnitude, at equal count and at equal size of change), the same
    mean over budgets; the per-budget curve of those advantages (mean differences); whether L_A's measured fall
    tracks A's score along the rule's rollbacks (the objective premise) and along all of :data:`ALONG_RULES`; the
    equal-norm gradient step's change of A and of L_A; and the other domains' mean change over the budgets."""
    from mdrl_lib.claims.rules import rule as read_rule
    from mdrl_lib.recovery import curve_difference, in_range, paired_changes

    from mdrl_lib.pairs import split_items

    a, b = pair
    key = f"{a},{b}"
    k_range = read_rule("C7", "k_range")
    level = 1 - read_rule("C7", "alpha")
    ks = in_range(plan.fractions, k_range)
    # a pair chosen from the chain's data is judged on the half of A's items that played no part in the choice
    half = "report" if key in plan.chosen else None

    def held(table):
        return split_items(table, half) if half else table

    end = held(items(kit, plan.chain_end))
    sweeps = {name: held(kit.open(plan.rollbacks[(key, name)]))
              for name in ("first_order", "gradient_step", *C7_CONTROLS)}
    rolled = sweeps["first_order"]

    def over_k(first, second) -> dict:
        return curve_difference(first, second, a, ks, level=level) if ks else None

    curve = []
    for fraction in ks:
        at = {name: _at(table, fraction) for name, table in sweeps.items()}
        means = {name: float(t[t["domain"] == a]["score"].mean()) for name, t in at.items()}
        curve.append({"fraction": fraction, "recovery": means["first_order"] - float(end[end["domain"] == a]["score"].mean()),
                      **{f"over_{c}": means["first_order"] - means[c] for c in C7_CONTROLS}})
    tracking = rollback_tracking(kit, plan, pair)
    in_k = tracking[[any(math.isclose(f, k) for k in ks) for f in tracking["fraction"]]]
    step = in_k[in_k["rule"] == "gradient_step"]
    changes = kit.open(plan.changes[(key, "first_order")])
    changes = changes[[any(math.isclose(f, k) for k in ks) for f in changes["fraction"]]]
    drop = paired_changes(held(items(kit, plan.before(b))), end)
    return {"drop": change_row(drop, a), "damage": damage(kit, plan.before(b), plan.stage_of(b), a, half=half),
            "items_half": half or "all",
            "recovery": over_k(rolled, end),
            "over_controls": {c: over_k(rolled, sweeps[c]) for c in C7_CONTROLS},
            "pair": (a, b), "rule": "first_order", "fractions": tuple(ks), "k_range": tuple(k_range), "curve": curve,
            "tracking": tracking_figures(in_k, rule="first_order"),
            "tracking_all": tracking_figures(in_k.drop(columns="predicted_change")),
            "gradient_step": {"change": over_k(sweeps["gradient_step"], end),
                              "loss_change": float(step["loss_change"].mean()) if len(step) else None},
            "others": {d: float(changes[changes["domain"] == d]["diff"].mean()) for d in DOMAIN_NAMES if d != a}}
