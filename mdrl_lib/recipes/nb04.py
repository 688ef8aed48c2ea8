"""Notebook ``04_sequential_rl``'s recipe: its parameters and what it asks the kit for."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from mdrl_lib.config import ConfigError, RunConfig
from mdrl_lib.domains.base import DOMAIN_NAMES
from mdrl_lib.recipes.params import NotebookParams, option
from mdrl_lib.recipes import params as common
from mdrl_lib.specs import Base, Scores, Spec

DIGIT_FREE = "digit-free world"


@dataclass(frozen=True)
class Params(NotebookParams):
    """Notebook 04's parameters: the chain's order, its RL seeds, the damaged domain and the other worlds."""

    notebook: ClassVar[str] = "04_sequential_rl"

    order: str = common.chain_order()
    rl_seeds: str = option("0", "RL seeds of the chain, all on the run's one base; \"0,1,2\" adds the spread of RL on one "
                                "model (8 more stages, about 5 CPU-minutes)", type=int, minimum=0, maximum=2**31 - 1,
                           number_list=True)
    damaged_domain: str = option("math", "the earlier domain whose drop is measured and controlled",
                                 choices=DOMAIN_NAMES)
    world_seeds: str = option("", "other run seeds, each its own world and base, for the spread over worlds (empty: "
                                  "none; minutes each)", type=int, minimum=0, maximum=2**31 - 1, number_list=True)
    digit_free_control: bool = option(False, "also build the digit-free world (its own base and chain) as another "
                                             "control")
    control_replicates: int = option(3, "replicates (control seeds) of the replayed-reward control of the later "
                                        "stages (2 stages each, about 50 CPU-s)", minimum=3, maximum=20)
    random_draws: int = option(10, "random Gaussian displacements of the real later stages' size (a second each)",
                               minimum=10, maximum=1000)
    more_of_the_same: bool = option(False, "also train as many more steps of the damaged domain itself after its "
                                           "stage, a reference for whether its own stage had converged (one more "
                                           "stage, about 20 CPU-s)")

    def validate(self) -> None:
        if not self.seeds:
            raise ConfigError("rl_seeds: give at least one RL seed, e.g. '0,1,2'")
        order = self.config.order
        if self.damaged_domain not in order:
            raise ConfigError(f"damaged_domain: {self.damaged_domain!r} is not in the order {','.join(order)}; valid: "
                              f"{', '.join(order[:-1])}")
        if self.damaged_domain == order[-1]:
            raise ConfigError(f"damaged_domain: {self.damaged_domain!r} is the chain's last stage, so no later stage "
                              f"can damage it; valid: {', '.join(order[:-1])}")

    @property
    def seeds(self) -> tuple[int, ...]:
        """``rl_seeds`` as integers."""
        return tuple(int(s) for s in self.rl_seeds.split(",") if s)

    @property
    def other_worlds(self) -> tuple[int, ...]:
        """``world_seeds`` as integers."""
        return tuple(int(s) for s in self.world_seeds.split(",") if s)


@dataclass(frozen=True)
class ChainPlan:
    """Every artifact notebook ``04_sequential_rl`` asks the kit for, by role.

    ``chains``: RL seed -> the chain's stage specs (all on the run's one base); ``controls``: the
    :func:`~mdrl_lib.interference.control_specs` of the first RL seed (``after``, ``real chain``, the
    ``replayed rewards (seed <s>)`` replicates, and ``more of the same`` when the option ``more_of_the_same``
    asks for it); ``random_directions``: the :class:`~mdrl_lib.interference.RandomDirections` baseline from
    ``after`` of the real chain's size;
    ``worlds``: other run configurations (other world seeds, the digit-free world) -> their chain for the
    first RL seed, each on its own base (empty unless asked for); and the base's
    :class:`~mdrl_lib.specs.GroupSignal` (its precondition check, :meth:`analysis_specs`)."""

    order: tuple[str, ...]
    domain: str
    rl_seeds: tuple[int, ...]
    chains: dict[int, list[Spec]]
    controls: dict[str, Spec]
    random_directions: Spec | None = None
    worlds: dict[str, tuple[RunConfig, list[Spec]]] = field(default_factory=dict)

    def training_specs(self) -> list[Spec]:
        """The trained artifacts of the run's own world, each once, parents before children."""
        specs: list[Spec] = []
        for chain in self.chains.values():
            specs += chain
        for spec in self.controls.values():
            specs += _lineage(spec)
        return _unique(specs)

    def score_specs(self) -> list[Spec]:
        """The :class:`Scores` of the base, every chain stage and every control's end."""
        models: list[Spec] = [Base()]
        for chain in self.chains.values():
            models += chain
        models += list(self.controls.values())
        return [Scores(spec) for spec in _unique(models)]

    def analysis_specs(self) -> list[Spec]:
        """The cached analyses: the base's GRPO signal, read by the precondition check of section 0, and the
        random-direction baseline of section 5."""
        from mdrl_lib.specs import GroupSignal

        return [GroupSignal(Base())] + ([self.random_directions] if self.random_directions is not None else [])

    def specs(self) -> list[Spec]:
        """Every artifact of the run's own world, each once: the base, the training stages, their scores and
        the analyses (nothing else is built from)."""
        return [Base()] + self.training_specs() + self.score_specs() + self.analysis_specs()


def _lineage(spec: Spec) -> list[Spec]:
    """``spec``'s trained ancestors (stages, not the base) and itself, oldest first."""
    out = []
    while spec is not None and not isinstance(spec, Base):
        out.append(spec)
        spec = getattr(spec, "parent", None)
    return out[::-1]


def _unique(specs: list[Spec]) -> list[Spec]:
    return list(dict.fromkeys(specs))  # specs are frozen dataclasses: equal specs have equal keys


def chain_plan(kit, params: Params) -> ChainPlan:
    """What notebook 04 builds for ``params`` (the chain's order is the run's). Specs only: nothing is trained."""
    from mdrl_lib.interference import REAL, RandomDirections, control_specs

    order = kit.config.order
    domain = params.damaged_domain
    first = params.seeds[0]
    chains = {s: kit.chain_specs(order, s) for s in params.seeds}
    controls = control_specs(kit, order, domain, rl_seed=first, replicates=params.control_replicates,
                             more_of_the_same=params.more_of_the_same)
    random_directions = RandomDirections(controls["after"], controls[REAL], domain, draws=params.random_draws)
    worlds: dict[str, tuple[RunConfig, list[Spec]]] = {}
    base_params = {**kit.config.to_params(), "order": ",".join(order)}
    for world_seed in params.other_worlds:
        if world_seed == kit.config.seed:
            continue
        config = RunConfig.from_params(**{**base_params, "seed": world_seed})
        worlds[f"world seed {world_seed}"] = (config, kit.chain_specs(order, first))
    if params.digit_free_control:
        config = RunConfig.from_params(**{**base_params, "data_digit_free": True})
        worlds[DIGIT_FREE] = (config, kit.chain_specs(order, first))
    return ChainPlan(order=tuple(order), domain=domain, rl_seeds=params.seeds, chains=chains, controls=controls,
                     random_directions=random_directions, worlds=worlds)


def planned_runs(kit, params: Params) -> list[tuple[RunConfig, list[Spec]]]:
    """(run configuration, its specs) for every world notebook 04 uses: the run's own first (the training
    stages, their scores, the analyses), then each other world's chain stages and their scores (with its
    base's)."""
    plan_ = chain_plan(kit, params)
    out = [(kit.config, plan_.specs())]
    for config, chain in plan_.worlds.values():
        out.append((config, list(chain) + [Scores(s) for s in [Base(), *chain]]))
    return out


def plan(kit, params: Params) -> list:
    """Every spec notebook 04 asks for, in the run's own world and (as ``(run overrides, spec)``) in the other
    worlds it is asked to build."""
    runs = planned_runs(kit, params)
    own = kit.config.to_params()
    out: list = list(runs[0][1])
    for config, specs in runs[1:]:
        extra = tuple(sorted((k, v) for k, v in config.to_params().items() if own.get(k) != v))
        out += [(extra, spec) for spec in specs]
    return out


# ---- what the notebook reads, assembled ---------------------------------------------------------------

def world_items(kit, params: Params) -> dict:
    """Per-item results along the chain of each other world notebook 04 is asked to build (``world_seeds``,
    ``digit_free_control``): world name -> :func:`~mdrl_lib.interference.chain_items` (``base``, then each
    stage's domain), each world's chain built first on its own base (minutes each). Empty by default."""
    from mdrl_lib.interference import chain_items
    from mdrl_lib.kit import open_kit

    out = {}
    for name, (config, chain) in chain_plan(kit, params).worlds.items():
        world_kit = open_kit(config)
        for spec in chain:
            world_kit.get(spec)
        out[name] = chain_items(world_kit, chain)
    return out


def control_runs(kit, params: Params, worlds: dict | None = None) -> dict:
    """What :func:`~mdrl_lib.interference.control_table` takes: control name -> (per-item results right after
    the damaged domain's stage, at the control's end), for the run's own controls (``real chain``, the
    ``replayed rewards (seed <s>)`` replicates, ``more of the same`` when asked for) and, when ``worlds``
    (:func:`world_items`) holds it, the digit-free world's chain (from its own stage to its chain's end)."""
    plan_ = chain_plan(kit, params)
    after = kit.item_results(plan_.controls["after"])
    runs = {name: (after, kit.item_results(spec)) for name, spec in plan_.controls.items() if name != "after"}
    if worlds and DIGIT_FREE in worlds:
        runs[DIGIT_FREE] = (worlds[DIGIT_FREE][plan_.domain], worlds[DIGIT_FREE][plan_.order[-1]])
    return runs


def random_direction_items(kit, params: Params):
    """The random-direction baseline's per-item scores (:class:`~mdrl_lib.interference.RandomDirections`, built
    once: a second or so per draw)."""
    return kit.open(chain_plan(kit, params).random_directions)


def control_overview(kit, params: Params, worlds: dict | None = None) -> "pd.DataFrame":
    """Notebook 04's side-by-side table: :func:`~mdrl_lib.interference.control_table` of every control
    (:func:`control_runs`) with the random-direction baseline's row added
    (:func:`~mdrl_lib.interference.random_direction_row`: each item averaged over the draws, its paired
    interval; ``change_min`` and ``change_max`` give the draws' range)."""
    import pandas as pd

    from mdrl_lib.interference import REAL, control_table, random_direction_row

    plan_ = chain_plan(kit, params)
    runs = control_runs(kit, params, worlds)
    table = control_table(runs, plan_.domain)
    row = random_direction_row(runs[REAL][0], random_direction_items(kit, params), runs[REAL][1], plan_.domain)
    return pd.concat([table, pd.DataFrame([row])], ignore_index=True)


def diagnostics(kit, params: Params, replicates: int | None = None) -> "pd.DataFrame":
    """GRPO's per-step diagnostics over the later stages (:func:`~mdrl_lib.interference.run_diagnostics`) of the
    real chain and of the first ``replicates`` control replicates (all by default)."""
    from mdrl_lib.interference import REAL, replicate_names, run_diagnostics

    controls = chain_plan(kit, params).controls
    names = replicate_names(controls)[:replicates]
    return run_diagnostics(kit, {name: controls[name] for name in [REAL, *names]}, controls["after"])


def c0_inputs(kit, params: Params) -> dict:
    """The arguments of :func:`~mdrl_lib.claims.nb04.check_c0` (C0(a)) for notebook 04's run: the damaged
    domain's drop on each RL seed's chain (:func:`~mdrl_lib.interference.forgetting`) and whether the base meets
    notebook 00's preconditions (read from the cached scores and GRPO signal)."""
    from mdrl_lib.claims.nb00 import base_precondition_table
    from mdrl_lib.claims.nb04 import DROP_COLUMNS
    from mdrl_lib.interference import chain_items, drops_by_seed

    plan_ = chain_plan(kit, params)
    items = {seed: chain_items(kit, chain) for seed, chain in plan_.chains.items()}
    drops = drops_by_seed(items, domains=[plan_.domain])
    return {"drops": drops[list(DROP_COLUMNS)], "domain": plan_.domain,
            "preconditions_hold": bool(base_precondition_table(kit)["holds"].all())}


def c0_specificity_inputs(kit, params: Params) -> dict:
    """The arguments of :func:`~mdrl_lib.claims.nb04.check_c0_specificity` (C0(b)) for notebook 04's run: the
    real chain's end against each control replicate's end and against their mean (paired over the damaged
    domain's held-out items), the zero-advantage share, mean |advantage| and entropy at each step over the later
    stages (trl's figures, from the GRPO diagnostics stored with each stage; None where not recorded), the distance
    each moved from the post-stage checkpoint, the replicates' held-out scores on the later domains, the
    random-direction baseline's changes and the "more of the same" change (None when the option
    ``more_of_the_same`` is off, the default)."""
    import numpy as np
    import pandas as pd

    from mdrl_lib.claims.nb00 import base_precondition_table
    from mdrl_lib.interference import (MORE, REAL, control_table, displacement_norm, item_scores, per_step,
                                       random_direction_changes, replicate_names)
    from mdrl_lib.stats import paired_difference

    plan_ = chain_plan(kit, params)
    domain, controls = plan_.domain, plan_.controls
    names = replicate_names(controls)
    runs = control_runs(kit, params)
    table = control_table(runs, domain).set_index("control")
    versus = pd.DataFrame([{"control": n, "diff": table.loc[n, "minus_reference"],
                            "ci_low": table.loc[n, "minus_reference_ci_low"],
                            "ci_high": table.loc[n, "minus_reference_ci_high"],
                            "p_value": table.loc[n, "minus_reference_p"]} for n in names])
    real_end = item_scores(runs[REAL][1], domain)
    control_mean = np.mean([item_scores(runs[n][1], domain).to_numpy() for n in names], axis=0)
    v = paired_difference(control_mean, real_end.to_numpy(), "fractional")
    table_ = diagnostics(kit, params)
    steps = {name: per_step(table_, name) for name in ("zero_advantage_share", "mean_abs_advantage", "entropy")}

    def real_and_controls(name):
        return {"real": steps[name][REAL], "controls": [steps[name][n] for n in names]}
    after = controls["after"]
    later = [d for d in plan_.order[plan_.order.index(domain) + 1:]]
    before_scores = kit.scores_of(after).set_index("domain")["score"]
    own = pd.DataFrame([{"control": n, "domain": d, "before": float(before_scores[d]),
                         "after": float(kit.scores_of(controls[n]).set_index("domain").loc[d, "score"])}
                        for n in names for d in later])
    random_changes = random_direction_changes(runs[REAL][0], random_direction_items(kit, params), domain)["change"]
    return {"real_minus_controls": versus, "real_minus_mean": {"diff": v.diff, "ci_low": v.ci_low,
                                                                "ci_high": v.ci_high, "p_value": v.p_value},
            "zero_advantage": real_and_controls("zero_advantage_share"),
            "mean_abs_advantage": real_and_controls("mean_abs_advantage"), "entropy": real_and_controls("entropy"),
            "distance": {"real": displacement_norm(kit, after, controls[REAL]),
                         "controls": [displacement_norm(kit, after, controls[n]) for n in names]},
            "own_domains": own, "preconditions_hold": bool(base_precondition_table(kit)["holds"].all()),
            "domain": domain, "random_changes": [float(c) for c in random_changes],
            "same_domain_change": float(table.loc[MORE, "change"]) if MORE in table.index else None}


def neutrality_table(inputs: dict) -> "pd.DataFrame":
    """Whether the replayed control moves like RL, per run (``real chain`` and each replicate), from
    :func:`c0_specificity_inputs`: mean share of zero-advantage groups over the later stages' steps, the largest
    |run - real| of that share at any one step (C0(b)'s premise; NaN: not recorded), the same for the mean
    |advantage|, the distance moved from the post-stage checkpoint, and that distance over the real chain's."""
    import pandas as pd

    from mdrl_lib.claims.nb04 import step_gap

    def mean(values):
        return float("nan") if values is None else sum(values) / len(values)

    def gap(name, values):
        found = step_gap(inputs[name]["real"], [values])
        return float("nan") if found is None else found

    names = ["real chain", *inputs["real_minus_controls"]["control"]]
    shares = [inputs["zero_advantage"]["real"], *inputs["zero_advantage"]["controls"]]
    sizes = [inputs["mean_abs_advantage"]["real"], *inputs["mean_abs_advantage"]["controls"]]
    distances = [inputs["distance"]["real"], *inputs["distance"]["controls"]]
    table = pd.DataFrame({"zero-advantage share": [mean(s) for s in shares],
                          "largest step gap in zero-advantage share": [gap("zero_advantage", s) for s in shares],
                          "largest step gap in mean |advantage|": [gap("mean_abs_advantage", s) for s in sizes],
                          "distance moved": distances}, index=names)
    table["distance / real"] = table["distance moved"] / inputs["distance"]["real"]
    return table


def used_and_planned(kit, params: Params) -> tuple[set[str], set[str]]:
    """(the keys of every artifact ``kit`` was asked for, the keys of the run's own world's planned specs
    and of everything they are built from): equal when notebook 04 used exactly what its plan lists."""
    return common.used_and_planned_keys(kit, chain_plan(kit, params).specs())


def pair_choice(kit, params: Params):
    """Which later stage lowers the damaged domain most (:func:`mdrl_lib.pairs.chain_choice` on the first RL seed's
    chain): the pair that notebooks 02, 03 and 05 study by default (they read RL seed 0's chain)."""
    from mdrl_lib.pairs import chain_choice

    return chain_choice(kit, kit.config.order, params.damaged_domain, params.seeds[0])
