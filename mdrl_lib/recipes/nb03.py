"""Notebook ``03_perturbation_theory``'s recipe: its parameters, what it asks the kit for (trained artifacts
and cached analyses) and its claim checks' inputs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from mdrl_lib.config import ConfigError
from mdrl_lib.domains.base import DOMAIN_TITLES
from mdrl_lib.recipes.params import NotebookParams, option, pair_choice_text  # noqa: F401 (the notebook reads it here)
from mdrl_lib.recipes import params as common
from mdrl_lib.specs import Base, ObjectiveBatch, Refresh, Scores, Stage

PAIRS = common.domain_pairs()


@dataclass(frozen=True)
class Params(NotebookParams):
    """Notebook 03's parameters: the pair, L_A's batch, the two B stages, the subspace and the refreshes."""

    notebook: ClassVar[str] = "03_perturbation_theory"

    perturbation_pair: str = option("math,auto", "A,B: A's expert is then trained on B; the damage to A is studied. "
                                                 "\"A,auto\": B is the later stage of the chain that lowers A most "
                                                 "(on the selection half of A's held-out items)",
                                    choices=common.chosen_pairs() + PAIRS)
    objective_prompts: int = common.objective_prompts()
    objective_samples: int = common.objective_samples()
    checkpoint_every: int = option(20, "keep B's weights every this many steps along both B stages", minimum=1,
                                   maximum=10**6)
    local_lr: float = option(1e-5, "rate of the local-regime B stage (the default-rate stage uses the run's rate)",
                             above=0.0, maximum=1.0)
    local_steps: int = option(60, "GRPO steps of the local-regime B stage", minimum=1, maximum=10**6)
    taylor_points: int = option(4, "points along theta_A + t delta_B, t from 1/n to 1 in steps of 1/n", minimum=2,
                                maximum=50)
    conflict_route_fraction: float = common.conflict_route_fraction()
    conflict_route_prompts: int = common.conflict_route_prompts()
    subspace_rank: int = option(16, "R: top Hessian eigenvectors on the shared-route coordinates (each costs a few "
                                    "HVPs)", minimum=1, maximum=200)
    random_subspaces: int = option(10, "random R-dimensional subspaces that the top-R subspace is held against "
                                       "(a random-set control: at least 10)", minimum=10, maximum=100)
    nonshared_draws: int = option(10, "sets of non-shared MLP channels, as many as the shared ones, that the shared "
                                      "routes' part of the damage is held against (at least 10)", minimum=10,
                                  maximum=100)
    gd_steps: int = option(30, "plain gradient-descent refresh steps on L_A (the theorem's refresh)", minimum=1,
                           maximum=10**4)
    gd_until_bound: float = option(0.0, "0: run gd_steps steps; above 0: run the theorem's refresh until its bound "
                                        "|1 - alpha mu|^T reaches this (e.g. 0.5; at most 10,000 steps, about 0.2 "
                                        "CPU-s each on the toy, per regime)", minimum=0.0, maximum=0.99)
    gd_rate_scale: float = option(1.0, "the GD rate alpha as a multiple of 1 / (largest eigenvalue of H_A)",
                                  above=0.0, maximum=2.0)
    real_refresh_steps: int = option(50, "GRPO steps of the kit's real refresh (Adam, decaying rate) from the B stage",
                                     minimum=1, maximum=10**6)

    def validate(self) -> None:
        if self.checkpoint_every > self.local_steps:
            raise ConfigError(f"checkpoint_every: {self.checkpoint_every} exceeds local_steps ({self.local_steps}): "
                              f"the local stage would keep no checkpoint along the way; give at most {self.local_steps}")

    @property
    def pair(self) -> tuple[str, str]:
        """(A, B); a pair still reading ``"A,auto"`` must first be settled by :func:`resolve`."""
        a, b = self.perturbation_pair.split(",")
        if b == "auto":
            raise ConfigError(f"perturbation_pair is {self.perturbation_pair!r}: settle it first with "
                              f"recipe.resolve(kit, params), which chooses B from the run's chain")
        return a, b

    @property
    def titles(self) -> tuple[str, str]:
        """A's and B's display names (``Math``, ``QA``)."""
        a, b = self.pair
        return DOMAIN_TITLES[a], DOMAIN_TITLES[b]


REGIMES = ("default rate", "local")  # the B stage at the run's rate and the local-regime one


@dataclass(frozen=True)
class Specs:
    """The artifacts of notebook 03, by role: A's expert, the B stage at the run's rate and the local one (both
    keeping checkpoints along the way), A's objective batch at theta_A*, and the real refresh from the B stage."""

    expert: Stage
    b_stage: Stage
    local_stage: Stage
    objective: ObjectiveBatch
    refresh: Refresh

    @property
    def regimes(self) -> dict[str, Stage]:
        """The two B stages by regime name (:data:`REGIMES`)."""
        return dict(zip(REGIMES, (self.b_stage, self.local_stage)))


def specs(params: Params) -> Specs:
    """Notebook 03's artifacts for ``params``."""
    a, b = params.pair
    expert = Stage(Base(), a)
    b_stage = Stage(expert, b, save_every=params.checkpoint_every)
    return Specs(expert=expert, b_stage=b_stage,
                 local_stage=Stage(expert, b, lr=params.local_lr, steps=params.local_steps,
                                   save_every=params.checkpoint_every),
                 objective=ObjectiveBatch(expert, a, prompts=params.objective_prompts, samples=params.objective_samples),
                 refresh=Refresh(b_stage, a, steps=params.real_refresh_steps))


@dataclass(frozen=True)
class Analyses:
    """Notebook 03's cached analyses (specs of :mod:`mdrl_lib.perturbation`), by role; the per-regime ones
    are dicts keyed by regime name: the HVP check, the Taylor terms along the segment and at the checkpoints,
    the routes A and B share, the top Hessian eigenpairs on their coordinates, the captured shares of both
    displacements, lambda_max(H_A), the plain gradient-descent refresh from each B stage, L_A and A's held-out
    score along each B stage (with the first-order term split over its segments), the premises of the theory
    checks that need curvature (stationarity, back-flow, the non-shared control, H_A's sign), and the ladder's
    controlled rung (:class:`~mdrl_lib.controlled.ControlledRung`, seeded by the run's seed)."""

    hvp_check: Any
    controlled: Any
    segments: dict[str, Any]
    along: dict[str, Any]
    routes: Any
    subspace: Any
    shares: Any
    curvature: Any
    contraction: dict[str, Any]
    paths: dict[str, Any]
    premises: Any

    def specs(self) -> list:
        """Every analysis spec, inputs before what reads them."""
        return [self.hvp_check, self.controlled, *self.segments.values(), *self.along.values(), self.routes,
                self.subspace, self.shares, self.curvature, *self.contraction.values(), *self.paths.values(),
                self.premises]


def analyses(params: Params) -> Analyses:
    """Notebook 03's analysis specs for ``params``."""
    from mdrl_lib import perturbation as pt
    from mdrl_lib.controlled import ControlledRung, ControlledWorld

    s = specs(params)
    a, b = params.pair
    routes = pt.ConflictRoutes(s.expert, a, b, fraction=params.conflict_route_fraction,
                               prompts=params.conflict_route_prompts)
    subspace = pt.ConflictEigenpairs(routes, s.objective, rank=params.subspace_rank, seed=params.seed)
    curvature = pt.TopCurvature(s.objective, seed=params.seed)
    return Analyses(
        hvp_check=pt.HvpCheck(s.objective),
        controlled=ControlledRung(ControlledWorld(seed=params.seed, rank=params.subspace_rank,
                                                  random_subspaces=params.random_subspaces,
                                                  nonshared_draws=params.nonshared_draws)),
        segments={name: pt.TaylorSegment(stage, s.objective, points=params.taylor_points)
                  for name, stage in s.regimes.items()},
        along={name: pt.TaylorAlong(stage, s.objective) for name, stage in s.regimes.items()},
        routes=routes, subspace=subspace,
        shares=pt.CapturedShares(subspace, tuple(s.regimes.values()), random=params.random_subspaces, seed=params.seed,
                                 random_last_only=True),
        curvature=curvature,
        contraction={name: pt.GDContraction(stage, subspace, curvature, rate_scale=params.gd_rate_scale,
                                            **gd_length(params)) for name, stage in s.regimes.items()},
        paths={name: pt.PathAlong(stage, s.objective) for name, stage in s.regimes.items()},
        premises=pt.TheoryPremises(subspace, tuple(s.regimes.values()), draws=params.nonshared_draws, seed=params.seed))


GD_MAX_STEPS = 10_000  # the cap of a refresh run until its bound (gd_until_bound)


def gd_length(params: Params) -> dict:
    """The theorem's refresh length for :class:`~mdrl_lib.perturbation.GDContraction`: ``gd_steps`` steps, or with
    ``gd_until_bound`` above 0 until the bound reaches it (at most :data:`GD_MAX_STEPS`)."""
    if params.gd_until_bound > 0:
        return {"steps": GD_MAX_STEPS, "until_bound": params.gd_until_bound}
    return {"steps": params.gd_steps}


def resolve(kit, params: Params, *, build: bool = True) -> Params | None:
    """``params`` with a ``perturbation_pair`` of ``"A,auto"`` replaced by the pair the run's chain shows doing the
    damage (:func:`~mdrl_lib.recipes.params.resolve_pairs`); ``None`` when ``build`` is False and the chain is not
    scored yet. The notebook calls it once, right after opening its kit."""
    return common.resolve_pairs(kit, params, ("perturbation_pair",), build=build)


def plan(kit, params: Params) -> list:
    """Every spec notebook 03 asks for: what the pair's choice reads (when it is ``"A,auto"``), the trained
    artifacts, then the analyses; a :class:`~mdrl_lib.plan.Pending` part until the chain is scored."""
    def complete(resolved: Params) -> list:
        s = specs(resolved)
        return [Base(), s.expert, s.b_stage, s.local_stage, s.objective, s.refresh, *analyses(resolved).specs(),
                *(Scores(m) for m in (s.expert, s.b_stage, s.local_stage))]

    return common.pair_plan(kit, params, ("perturbation_pair",), complete)


# ---- the claim checks' inputs ------------------------------------------------------------------


def shares_by_regime(kit, params: Params) -> dict[str, dict]:
    """The captured shares of both displacements by regime name (:meth:`~mdrl_lib.perturbation.CapturedShares.open`)."""
    return dict(zip(REGIMES, kit.open(analyses(params).shares)))


def paths_by_regime(kit, params: Params) -> dict[str, dict]:
    """L_A, A's held-out score and the first-order segments along each B stage, by regime name
    (:meth:`~mdrl_lib.perturbation.PathAlong.open`)."""
    return {name: kit.open(spec) for name, spec in analyses(params).paths.items()}


def tracking_by_regime(kit, params: Params) -> dict[str, dict]:
    """:func:`~mdrl_lib.perturbation.objective_tracking` of L_A against A's score along each B stage, by regime."""
    from mdrl_lib.perturbation import objective_tracking

    return {name: objective_tracking(p["table"]["L_A"], p["table"]["score"])
            for name, p in paths_by_regime(kit, params).items()}


def _damage(path: dict) -> dict:
    """A's per-item held-out scores at theta_A* (step 0) and at the stage's end (its last checkpoint)."""
    steps = sorted(path["items"])
    return {"before": path["items"][steps[0]], "after": path["items"][steps[-1]]}


def theory_premises(kit, params: Params, regime: str) -> dict[str, dict]:
    """Every premise of the theory checks for the B stage ``regime`` (one of :data:`REGIMES`), by short name
    (``stationarity``, ``stationarity_s``, ``locality``, ``curvature``, ``backflow``, ``plain_gd``, ``damage``,
    ``objective_rank``, ``objective_sign``), each a premise dict with thresholds from the rules file. From the
    cached analyses only (no new computation)."""
    from mdrl_lib import perturbation as pt
    from mdrl_lib.claims.rules import rule

    if regime not in REGIMES:
        raise ValueError(f"unknown regime {regime!r}; valid: {', '.join(REGIMES)}")
    a = analyses(params)
    measured = kit.open(a.premises)
    stage = measured["stages"][REGIMES.index(regime)]
    path = kit.open(a.paths[regime])
    contraction = kit.open(a.contraction[regime])
    lam_max = kit.open(a.curvature)
    limit = rule("premises", "theory_stationarity_max")
    total, on_s = pt.stationarity_premises(measured["grad_norm"], measured["grad_s_norm"], stage["h_delta_norm"],
                                           measured["mu"], stage["delta_s_norm"], max_ratio=limit)
    objective_rank, objective_sign = pt.objective_premises(
        path["table"]["L_A"], path["table"]["score"], alpha=rule("premises", "theory_objective_alpha"),
        min_sign_agreement=rule("premises", "theory_objective_sign_agreement"))
    return {"stationarity": total, "stationarity_s": on_s,
            "locality": pt.locality_premise(kit.open(a.segments[regime]), kit.open(a.along[regime]),
                                            rtol=rule("premises", "theory_locality_rtol")),
            "curvature": pt.curvature_premise(measured["mu"], minimum=rule("premises", "theory_mu_min")),
            "backflow": pt.backflow_premise(stage["backflow"], stage["curvature_term"],
                                            max_ratio=rule("premises", "theory_backflow_max")),
            "plain_gd": pt.plain_gd_premise("gd", "constant", contraction["alpha"] * lam_max,
                                            max_alpha_lambda=rule("premises", "theory_alpha_lambda_max")),
            "damage": pt.damage_premise(**_damage(path), min_standard_errors=rule("premises",
                                                                                  "damage_min_standard_errors")),
            "objective_rank": objective_rank, "objective_sign": objective_sign}


C5_PREMISES = ("locality", "damage", "objective_rank", "objective_sign")
C6_THEORY_PREMISES = ("stationarity", "stationarity_s", "locality", "curvature", "backflow", "plain_gd", "damage")


LADDER_REGIMES = {"local": "local LM", "default rate": "default LM"}  # notebook 03's B stages on the ladder


def c5_inputs(kit, params: Params, regime: str = "default rate") -> dict:
    """The arguments of :func:`~mdrl_lib.claims.nb03.check_c5` for the B stage ``regime`` (one of :data:`REGIMES`):
    its Taylor terms at t = 1, its captured shares at r = R, the shared-route coordinates' part of its second-order
    term against the non-shared channel sets, its premises (:data:`C5_PREMISES`), the first-order segments along its
    checkpoints, and its rung on the ladder (``default LM``: check ``second-order-subspace``, with the local stage's
    terms reported beside; ``local LM``: ``second-order-subspace-local``)."""
    if regime not in REGIMES:
        raise ValueError(f"unknown regime {regime!r}; valid: {', '.join(REGIMES)}")
    a = analyses(params)
    segments = {name: kit.open(spec) for name, spec in a.segments.items()}
    judged = shares_by_regime(kit, params)[regime]
    measured = kit.open(a.premises)["stages"][REGIMES.index(regime)]
    premises = theory_premises(kit, params, regime)
    inputs = {"stage": segments[regime].iloc[-1].to_dict(), "shares": judged["shares"],
              "r": params.subspace_rank, "coordinates_part": judged["coordinates_part"],
              "nonshared_parts": measured["nonshared_parts"], "premises": [premises[k] for k in C5_PREMISES],
              "path": kit.open(a.paths[regime])["table"], "pair": params.titles, "regime": LADDER_REGIMES[regime]}
    if regime == "default rate":
        return {**inputs, "local": segments["local"].iloc[-1].to_dict()}
    return {**inputs, "name": "second-order-subspace-local",
            "what": f"B's local-regime stage ({params.local_steps} steps at {params.local_lr:g})"}


def c6_theory_inputs(kit, params: Params) -> list[dict]:
    """The arguments of :func:`~mdrl_lib.claims.nb03.check_c6_theory`, one per regime (local first): the
    distances on S along each gradient-descent refresh, mu, alpha and the theorem's premises for that regime
    (:data:`C6_THEORY_PREMISES`)."""
    out = []
    for name, slug in (("local", "local"), ("default rate", "default-rate")):
        c = kit.open(analyses(params).contraction[name])
        premises = theory_premises(kit, params, name)
        out.append({"distance_s": c["to_fixed"], "mu": c["mu"], "alpha": c["alpha"], "name": f"gd-contraction-{slug}",
                    "drift_corrected": c["to_path"], "premises": [premises[k] for k in C6_THEORY_PREMISES],
                    "regime": LADDER_REGIMES[name]})
    return out


def ladder_inputs(kit, params: Params) -> dict[str, tuple[dict, dict]]:
    """The first two rungs' check arguments, ``{"quadratic": (C5's, C6's), "controlled": (C5's, C6's)}``
    (:func:`mdrl_lib.ladder.quadratic_rung_inputs` on the quadratic world of the run's seed,
    :func:`~mdrl_lib.ladder.controlled_rung_inputs` on the controlled rung's artifact); the LM rungs' are
    :func:`c5_inputs` and :func:`c6_theory_inputs`."""
    from mdrl_lib.ladder import controlled_rung_inputs, quadratic_rung_inputs
    from mdrl_lib.quadratic import make_quadratic_world

    world = make_quadratic_world(seed=params.seed)
    return {"quadratic": quadratic_rung_inputs(world, draws=params.nonshared_draws, seed=params.seed),
            "controlled": controlled_rung_inputs(kit.open(analyses(params).controlled))}


def lm_tradeoff(kit, params: Params, theta_norm: float):
    """The toy LM's two B stages as a trade-off between the premises the theory needs together, one row per regime
    (local first): ``rate``, ``steps``, ``displacement`` (||delta_B|| / ``theta_norm``, ||theta_A*||), ``locality
    error`` (the locality premise's figure), A's ``damage (paired SEs)`` (the damage premise's), and B's own ``B's
    gain`` on its held-out items (paired, with its ``p``). From the cached analyses and three scorings."""
    import pandas as pd

    from mdrl_lib import perturbation as pt
    from mdrl_lib.stats import paired_difference

    a = analyses(params)
    s = specs(params)
    _, b = params.pair
    measured = kit.open(a.premises)["stages"]
    before = kit.item_results(s.expert)
    rows = []
    for name, stage, rate, steps in (("local", s.local_stage, params.local_lr, params.local_steps),
                                     ("default rate", s.b_stage, kit.config.rl.lr, kit.config.rl.steps)):
        path = kit.open(a.paths[name])
        after = kit.item_results(stage)
        gain = paired_difference(before[before["domain"] == b]["score"].to_numpy(),
                                 after[after["domain"] == b]["score"].to_numpy())
        rows.append({"regime": LADDER_REGIMES[name], "rate": rate, "steps": steps,
                     "displacement": measured[REGIMES.index(name)]["delta_norm"] / theta_norm,
                     "locality error": pt.locality_error(kit.open(a.segments[name]), kit.open(a.along[name]))["worst"],
                     "damage (paired SEs)": pt.paired_damage(**_damage(path))["standard_errors"],
                     "B's gain": gain.diff, "p": gain.p_value})
    return pd.DataFrame(rows)
