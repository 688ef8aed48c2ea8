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


def example_tables(kit, params: Params):
    """Section 1's two tables: ``examples_per_domain`` RL prompts of each domain with their reference answers
    (columns domain, prompt, reference answer), and each domain's split sizes (RL train, eval, warm-up pool)."""
    import pandas as pd

    from mdrl_lib.domains.base import DOMAIN_NAMES, DOMAIN_TITLES

    examples = pd.DataFrame([{"domain": DOMAIN_TITLES[n], "prompt": e.prompt, "reference answer": e.answer}
                             for n in DOMAIN_NAMES for e in kit.splits(n).train[:params.examples_per_domain]])
    sizes = pd.DataFrame({DOMAIN_TITLES[n]: {"RL train": len(kit.splits(n).train), "eval": len(kit.splits(n).eval),
                                             "warm-up pool": len(kit.splits(n).warmup)} for n in DOMAIN_NAMES}).T
    return examples, sizes


def verifier_demo(kit):
    """Section 2's table: each domain's verifier on the first RL prompt's right answer, on the first other
    prompt's answer that it scores below 1 (a wrong one), and on a malformed string. Columns: domain,
    prompt, kind (right, wrong, malformed), answer, score."""
    import pandas as pd

    from mdrl_lib.domains.base import DOMAIN_NAMES, DOMAIN_TITLES

    rows = []
    for name in DOMAIN_NAMES:
        domain, examples = kit.domain(name), kit.splits(name).train
        example = examples[0]
        wrong = next(e.answer for e in examples[1:] if domain.score([e.answer], [example.spec])[0] < 1)
        candidates = {"right": example.answer, "wrong": wrong, "malformed": "=?= )("}
        scores = domain.score(list(candidates.values()), [example.spec] * len(candidates))
        rows += [{"domain": DOMAIN_TITLES[name], "prompt": example.prompt, "kind": kind, "answer": answer,
                  "score": score} for (kind, answer), score in zip(candidates.items(), scores)]
    return pd.DataFrame(rows)
