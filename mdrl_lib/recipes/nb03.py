"""Notebook ``03_perturbation_theory``'s recipe: its parameters and what it asks the kit for."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mdrl_lib.config import ConfigError
from mdrl_lib.domains.base import DOMAIN_NAMES
from mdrl_lib.recipes.params import NotebookParams, option
from mdrl_lib.specs import Base, ObjectiveBatch, Refresh, Stage

PAIRS = tuple(f"{a},{b}" for a in DOMAIN_NAMES for b in DOMAIN_NAMES if a != b)


@dataclass(frozen=True)
class Params(NotebookParams):
    """Notebook 03's parameters: the pair, L_A's batch, the two B stages, the subspace and the refreshes."""

    notebook: ClassVar[str] = "03_perturbation_theory"

    perturbation_pair: str = option("math,qa", "A,B: A's expert is then trained on B; the damage to A is studied",
                                    choices=PAIRS)
    objective_prompts: int = option(64, "prompts of the objective batch of A (L_A: the NLL of verified-correct "
                                        "samples of A)", minimum=1, maximum=10**6)
    objective_samples: int = option(4, "completions sampled per prompt for L_A; only verified-correct ones enter",
                                    minimum=1, maximum=1024)
    checkpoint_every: int = option(20, "keep B's weights every this many steps along both B stages", minimum=1,
                                   maximum=10**6)
    local_lr: float = option(1e-5, "rate of the local-regime B stage (the default-rate stage uses the run's rate)",
                             above=0.0, maximum=1.0)
    local_steps: int = option(60, "GRPO steps of the local-regime B stage", minimum=1, maximum=10**6)
    taylor_points: int = option(4, "points along theta_A + t delta_B, t from 1/n to 1 in steps of 1/n", minimum=2,
                                maximum=50)
    conflict_route_fraction: float = option(0.2, "q: a domain's active route is its top q of MLP channels at answer "
                                                 "positions; A's and B's shared ones hold the conflict subspace",
                                            above=0.0, maximum=0.5)
    conflict_route_prompts: int = option(100, "RL training prompts per domain whose activity defines those routes",
                                         minimum=1, maximum=10**6)
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


@dataclass(frozen=True)
class Specs:
    """The artifacts of notebook 03, by role: A's expert, the B stage at the run's rate and the local one (both
    keeping checkpoints along the way), A's objective batch at theta_A*, and the real refresh from the B stage."""

    expert: Stage
    b_stage: Stage
    local_stage: Stage
    objective: ObjectiveBatch
    refresh: Refresh


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


def plan(kit, params: Params) -> list:
    """Every spec notebook 03 asks for."""
    s = specs(params)
    return [Base(), s.expert, s.b_stage, s.local_stage, s.objective, s.refresh]
