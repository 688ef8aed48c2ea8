"""Notebook ``01_sparse_edits``'s recipe: its parameters and what it asks the kit for."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mdrl_lib.config import ConfigError, parameter_declarations, parse_order
from mdrl_lib.domains.base import DOMAIN_NAMES
from mdrl_lib.recipes.params import NotebookParams, option
from mdrl_lib.specs import Base, Scores, Stage

GRID_RUN = (("rl_precision", "bf16"),)  # the rate grid's run setting: its experts are stored in bf16


@dataclass(frozen=True)
class Params(NotebookParams):
    """Notebook 01's parameters: the top-neuron share, the second RL seed and the bf16 rate grid."""

    notebook: ClassVar[str] = "01_sparse_edits"

    top_fraction: float = option(0.1, "k: an expert's top neurons are its top k of MLP neurons by edit magnitude "
                                      "(the paper's 10%)", above=0.0, maximum=0.5)
    second_seed_domains: str = option("math", 'domains whose expert is trained again with RL seed 1 (C2\'s '
                                              'same-domain reference); "" for none, "all"')
    rate_grid: str = option("2e-4,1e-5,1e-6", "learning rates of the bf16 grid, comma-separated (C1 where the paper "
                                              "measures it)", above=0.0, maximum=1.0, number_list=True)
    grid_steps: int = option(60, "GRPO steps of each expert of the rate grid (short: the grid is about rate and "
                                 "precision)", minimum=1, maximum=10**6)
    grid_domain: str = option("math", "the domain of the rate grid's experts", choices=DOMAIN_NAMES)

    def validate(self) -> None:
        if self.config.scale == "full":
            raise ConfigError("scale: notebook 01 compares weight files in the run directory, and at scale 'full' "
                              "the pretrained base lives in the Hugging Face cache, which it does not read yet; "
                              "valid here: toy")
        self.rates  # noqa: B018 (checks every rate)
        self.second_seeds  # noqa: B018

    @property
    def rates(self) -> tuple[float, ...]:
        """The grid's rates, each once, largest first (each checked as the run's ``rl_lr``)."""
        rl_lr = parameter_declarations()["rl_lr"]
        return tuple(sorted({rl_lr.check("rate_grid", float(p)) for p in self.rate_grid.split(",")}, reverse=True))

    @property
    def second_seeds(self) -> tuple[str, ...]:
        """The domains trained again with RL seed 1."""
        text = self.second_seed_domains.strip()
        if text in ("", "all"):
            return DOMAIN_NAMES if text else ()
        try:
            return parse_order(text)
        except ConfigError as error:
            raise ConfigError(f"second_seed_domains: {str(error).removeprefix('order: ')}") from None


def grid_stage(params: Params, rate: float) -> Stage:
    """The rate grid's expert at ``rate`` (built by a kit whose run stores bf16 checkpoints: :data:`GRID_RUN`)."""
    return Stage(Base(), params.grid_domain, steps=params.grid_steps, lr=rate)


def plan(kit, params: Params) -> list:
    """Every spec notebook 01 asks for: each expert and its scores, the RL-seed-1 experts, and the bf16 rate
    grid (entries ``(run overrides, spec)`` belong to the grid's run)."""
    specs: list = [Base(), Scores(Base())]
    for name in DOMAIN_NAMES:
        specs += [Stage(Base(), name), Scores(Stage(Base(), name))]
    for name in params.second_seeds:
        specs += [Stage(Base(), name, rl_seed=1), Scores(Stage(Base(), name, rl_seed=1))]
    for rate in params.rates:
        specs += [(GRID_RUN, grid_stage(params, rate)), (GRID_RUN, Scores(grid_stage(params, rate)))]
    return specs
