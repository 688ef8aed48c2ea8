"""Notebook ``03_perturbation_theory``'s recipe: its parameters, what it asks the kit for (trained artifacts
and cached analyses) and its claim checks' inputs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from mdrl_lib.config import ConfigError
from mdrl_lib.domains.base import DOMAIN_TITLES
from mdrl_lib.recipes.params import NotebookParams, option
from mdrl_lib.recipes import params as common
from mdrl_lib.specs import Base, ObjectiveBatch, Refresh, Stage

PAIRS = common.domain_pairs()


@dataclass(frozen=True)
class Params(NotebookParams):
    """Notebook 03's parameters: the pair, L_A's batch, the two B stages, the subspace and the refreshes."""

    notebook: ClassVar[str] = "03_perturbation_theory"

    perturbation_pair: str = option("math,qa", "A,B: A's expert is then trained on B; the damage to A is studied",
                                    choices=PAIRS)
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
    random_subspaces: int = option(5, "random r-dimensional subspaces per r that the top-r subspace is held against",
                                   minimum=2, maximum=100)
    gd_steps: int = option(30, "plain gradient-descent refresh steps on L_A (the theorem's refresh)", minimum=1,
                           maximum=10**4)
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
        a, b = self.perturbation_pair.split(",")
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
    displacements, lambda_max(H_A), and the plain gradient-descent refresh from each B stage."""

    hvp_check: Any
    segments: dict[str, Any]
    along: dict[str, Any]
    routes: Any
    subspace: Any
    shares: Any
    curvature: Any
    contraction: dict[str, Any]

    def specs(self) -> list:
        """Every analysis spec, inputs before what reads them."""
        return [self.hvp_check, *self.segments.values(), *self.along.values(), self.routes, self.subspace,
                self.shares, self.curvature, *self.contraction.values()]


def analyses(params: Params) -> Analyses:
    """Notebook 03's analysis specs for ``params``."""
    from mdrl_lib import perturbation as pt

    s = specs(params)
    a, b = params.pair
    routes = pt.ConflictRoutes(s.expert, a, b, fraction=params.conflict_route_fraction,
                               prompts=params.conflict_route_prompts)
    subspace = pt.ConflictEigenpairs(routes, s.objective, rank=params.subspace_rank, seed=params.seed)
    curvature = pt.TopCurvature(s.objective, seed=params.seed)
    return Analyses(
        hvp_check=pt.HvpCheck(s.objective),
        segments={name: pt.TaylorSegment(stage, s.objective, points=params.taylor_points)
                  for name, stage in s.regimes.items()},
        along={name: pt.TaylorAlong(stage, s.objective) for name, stage in s.regimes.items()},
        routes=routes, subspace=subspace,
        shares=pt.CapturedShares(subspace, tuple(s.regimes.values()), random=params.random_subspaces, seed=params.seed),
        curvature=curvature,
        contraction={name: pt.GDContraction(stage, subspace, curvature, rate_scale=params.gd_rate_scale,
                                            steps=params.gd_steps) for name, stage in s.regimes.items()})


def plan(kit, params: Params) -> list:
    """Every spec notebook 03 asks for: the trained artifacts, then the analyses."""
    s = specs(params)
    return [Base(), s.expert, s.b_stage, s.local_stage, s.objective, s.refresh, *analyses(params).specs()]


# ---- the claim checks' inputs ------------------------------------------------------------------


def shares_by_regime(kit, params: Params) -> dict[str, dict]:
    """The captured shares of both displacements by regime name (:meth:`~mdrl_lib.perturbation.CapturedShares.open`)."""
    return dict(zip(REGIMES, kit.open(analyses(params).shares)))


def c5_inputs(kit, params: Params) -> dict:
    """The arguments of :func:`~mdrl_lib.claims.nb03.check_c5`: the local and default-rate Taylor terms at
    t = 1 and the local displacement's captured shares at r = R, from the cached analyses."""
    segments = {name: kit.open(spec) for name, spec in analyses(params).segments.items()}
    local = shares_by_regime(kit, params)["local"]
    return {"local": segments["local"].iloc[-1].to_dict(), "shares": local["shares"], "r": params.subspace_rank,
            "coordinates_part": local["coordinates_part"], "far": segments["default rate"].iloc[-1].to_dict()}


def c6_theory_inputs(kit, params: Params) -> list[dict]:
    """The arguments of :func:`~mdrl_lib.claims.nb03.check_c6_theory`, one per regime (local first): the
    distances on S along each gradient-descent refresh, mu and alpha."""
    out = []
    for name, slug in (("local", "local"), ("default rate", "default-rate")):
        c = kit.open(analyses(params).contraction[name])
        out.append({"distance_s": c["to_fixed"], "mu": c["mu"], "alpha": c["alpha"], "name": f"gd-contraction-{slug}",
                    "drift_corrected": c["to_path"]})
    return out
