"""Toy QA: closed-book numeric questions about made-up creatures, ``q:bax age?=`` -> ``17``.

Introduced in notebook ``00_toy_world``. A seeded fact table gives each of 100 creatures an age
(1-38), a number of legs (0-8) and of kids (0-12): 300 facts. Warm-up shows every fact as a
statement ``f:bax age?=17`` (the base's "pretraining knowledge") but asks questions only about the
warm-up pool's facts; RL train and eval questions are about other facts. Answers are numbers, like Math's, so a QA
stage moves Math's output routes: the paper's QA-damages-Math effect needs that shared route.
"""
from __future__ import annotations

from mdrl_lib.domains.base import Domain, Example, Splits, register
from mdrl_lib.domains.toy import first_line, prompt, rng_for, spec, take_split

NUM_CREATURES = 100
ATTRIBUTES = {"age": (1, 38), "legs": (0, 8), "kids": (0, 12)}
CONSONANTS, VOWELS = "bdfgklmnprstvz", "aeiou"


def fact_table(seed: int) -> dict[str, dict[str, int]]:
    """Creature name -> attribute -> value, deterministic by seed."""
    rng = rng_for(seed, "qa-facts")
    names: list[str] = []
    while len(names) < NUM_CREATURES:
        name = rng.choice(CONSONANTS) + rng.choice(VOWELS) + rng.choice(CONSONANTS)
        if name not in names:
            names.append(name)
    return {n: {a: rng.randint(lo, hi) for a, (lo, hi) in ATTRIBUTES.items()} for n in names}


@register("toy", "qa")
class ToyQA(Domain):
    name, title = "qa", "QA"
    default_sizes = (100, 100)

    def build_splits(self, seed: int, train_size: int, eval_size: int) -> Splits:
        facts = [(n, a, v) for n, attrs in fact_table(seed).items() for a, v in attrs.items()]
        parts = take_split(facts, seed, self.name, train_size, eval_size)
        return Splits(*([self._example(*item) for item in part] for part in parts))

    def _example(self, creature: str, attribute: str, value: int) -> Example:
        return Example(self.name, prompt("q", f"{creature} {attribute}?"), str(value), spec(answer=str(value)))

    def warmup_pairs(self, splits: Splits) -> list[tuple[str, str]]:
        """Statements of every fact, plus questions about the warm-up pool's facts only."""
        statements = [("f" + e.prompt[1:], e.answer) for e in splits.train + splits.eval + splits.warmup]
        return statements + super().warmup_pairs(splits)

    def score_one(self, completion: str, spec: dict) -> float:
        return float(first_line(completion) == spec["answer"])
