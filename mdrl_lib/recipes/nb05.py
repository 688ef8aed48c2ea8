"""Notebook ``05_refresh_vs_rollback``'s recipe: its parameters and what it asks the kit for."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from mdrl_lib.config import ConfigError
from mdrl_lib.domains.base import DOMAIN_NAMES
from mdrl_lib.recipes.params import NotebookParams, option, run_param
from mdrl_lib.specs import Base, ObjectiveBatch, Refresh, Scores, Spec, Stage

PAIRS = tuple(f"{a},{b}" for a in DOMAIN_NAMES for b in DOMAIN_NAMES if a != b)
MAIN_RULES: tuple[str, ...] = ("first_order", "first_order_routes", "second_order", "random", "magnitude",
                               "other_delta", "gradient_step", "revert_stage")
SECOND_PAIR_RULES: tuple[str, ...] = ("first_order", "random", "magnitude", "revert_stage")


@dataclass(frozen=True)
class Params(NotebookParams):
    """Notebook 05's parameters: the refresh budgets, the rollback pairs, rules and budgets, and L_A's batch."""

    notebook: ClassVar[str] = "05_refresh_vs_rollback"

    order: str = run_param("code,math,qa,cw", "the chain's domain order (the chain notebook 04 builds, RL seed 0)")
    refresh_domain: str = option("math", "A: the damaged domain, refreshed from the end of the chain",
                                 choices=DOMAIN_NAMES)
    refresh_budgets: str = option("10,20,50", "GRPO steps of the shorter refreshes; the run's rl_refresh_steps is "
                                              "always added", minimum=1, maximum=10**6, number_list=True)
    constant_refresh: bool = option(True, "also refresh at a constant rate at every budget (beside the decaying one)")
    rollback_pair: str = option("math,qa", "A,B: coordinates of the chain-end model go back to their value before "
                                           "B's stage", choices=PAIRS)
    second_rollback_pair: str = option("math,cw", "a second pair, with the first-order rule and its controls (empty: "
                                                  "none)", choices=("",) + PAIRS)
    rollback_fractions: str = option("0.001,0.003,0.01,0.03,0.1", "rollback budgets k, as fractions of all "
                                                                  "parameters", above=0.0, maximum=1.0,
                                     number_list=True)
    rollback_gradient_at: str = option("chain_end", 'where g_A is evaluated: "chain_end" or "own" (A\'s own trained '
                                                    "weights)", choices=("chain_end", "own"))
    hessian_probes: int = option(8, "Rademacher probes of the Hessian diagonal (second-order rule)", minimum=1,
                                 maximum=10**4)
    c7_fraction: float = option(0.01, "the budget at which C7 is judged (one of rollback_fractions), fixed in "
                                      "advance", above=0.0, maximum=1.0)
    objective_prompts: int = option(64, "prompts of the objective batch of A (L_A: the NLL of verified-correct "
                                        "samples of A)", minimum=1, maximum=10**6)
    objective_samples: int = option(4, "completions sampled per prompt for L_A; only verified-correct ones enter",
                                    minimum=1, maximum=1024)
    conflict_route_fraction: float = option(0.2, "q: a domain's active route is its top q of MLP channels at answer "
                                                 "positions; A's and B's shared ones hold the conflict subspace",
                                            above=0.0, maximum=0.5)
    conflict_route_prompts: int = option(100, "RL training prompts per domain whose activity defines those routes",
                                         minimum=1, maximum=10**6)
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
        for a, b in self.pairs:
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
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """The rollback pairs (A, B): the main one, then the second unless empty or the same."""
        pairs = [tuple(self.rollback_pair.split(","))]
        if self.second_rollback_pair and self.second_rollback_pair != self.rollback_pair:
            pairs.append(tuple(self.second_rollback_pair.split(",")))
        return tuple(pairs)  # type: ignore[return-value]


@dataclass(frozen=True)
class RecoveryPlan:
    """Every artifact notebook ``05_refresh_vs_rollback`` asks for, by role (built by :func:`recovery_plan`).

    ``chain``: the chain's stages (rl seed 0); ``post_a``: theta_A*, the chain's stage after the refreshed
    domain A; ``refreshes``: ``{(schedule, steps): Refresh}`` from the chain's end; ``controls``:
    ``{steps: Refresh}`` of the same budgets of A's steps from ``post_a``; ``equal_cost``: the refresh that
    costs as much as the ``first_order`` rollback; ``objective``: A's objective batch (samples of
    ``post_a``); ``rollbacks``: ``{(pair, rule): RollbackScores}``; ``options``: the parameters used.
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
        out = [*models, *(Scores(m) for m in models), self.objective, *objectives, *self.rollbacks.values()]
        return list(dict.fromkeys(out))


def recovery_plan(kit, params: Params) -> RecoveryPlan:
    """Notebook 05's artifacts for ``params`` (the chain's order is the run's). Specs only: nothing is built."""
    from mdrl_lib.recovery import GRADIENT_RULES, RollbackScores, equal_cost_steps, rollback_cost

    order = kit.config.order
    chain = tuple(kit.chain_specs(order, rl_seed=0))
    domain = params.refresh_domain
    post_a = chain[order.index(domain)]
    end = chain[-1]
    budgets = tuple(sorted(set(params.budgets) | {kit.config.rl.refresh_steps}))
    schedules = ("linear", "constant") if params.constant_refresh else ("linear",)
    refreshes = {(schedule, steps): Refresh(end, domain, steps=steps, lr_schedule=schedule)
                 for schedule in schedules for steps in budgets}
    controls = {steps: Refresh(post_a, domain, steps=steps, lr_schedule="linear") for steps in budgets}
    objective = ObjectiveBatch(post_a, domain, prompts=params.objective_prompts, samples=params.objective_samples)
    cost = rollback_cost("first_order", objective_sequences=params.objective_prompts * params.objective_samples)
    steps = equal_cost_steps(cost, kit.config.rl)
    equal = Refresh(end, domain, steps=steps, lr_schedule="linear")
    rollbacks = {}
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
                probes=params.hessian_probes, seed=kit.config.seed)
    return RecoveryPlan(options=params.options(), chain=chain, domain=domain, post_a=post_a, budgets=budgets,
                        refreshes=refreshes, controls=controls, equal_cost_steps=steps, equal_cost=equal,
                        objective=objective, pairs=params.pairs, rollbacks=rollbacks, fractions=params.fractions)


def plan(kit, params: Params) -> list:
    """Every spec notebook 05 asks for: the chain's stages, each refresh budget and schedule, the controls from
    theta_A*, the equal-cost refresh, their scores, A's objective batch and the rollback sweeps."""
    return recovery_plan(kit, params).specs()
