"""Notebook ``00_toy_world``'s recipe: its parameters and what it asks the kit for."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mdrl_lib.recipes.params import NotebookParams, option
from mdrl_lib.specs import Base, Scores


@dataclass(frozen=True)
class Params(NotebookParams):
    """Notebook 00's parameters: the run's, and how much of the world it shows."""

    notebook: ClassVar[str] = "00_toy_world"

    examples_per_domain: int = option(3, "prompts shown per domain", minimum=1, maximum=50)
    num_generations: int = option(8, "completions sampled per prompt when measuring GRPO's signal (as in a GRPO "
                                     "group)", minimum=2, maximum=256)


def plan(kit, params: Params) -> list:
    """Every spec notebook 00 asks for: the base, its held-out scores and its GRPO signal (sampled with
    ``num_generations`` completions per prompt)."""
    from mdrl_lib.specs import GroupSignal

    return [Base(), Scores(Base()), GroupSignal(Base(), params.num_generations)]
