"""Toy QA: closed-book numeric questions about made-up creatures, ``q:bax age?=`` -> ``(17)``.

Introduced in notebook ``00_toy_world``. A seeded fact table gives each of 100 creatures an age
(1-38), a number of legs (0-8) and of kids (0-12): 300 facts. The creatures are split into RL-train,
held-out and warm-up creatures (all facts of a creature on one side: RL that memorises one creature's
age must not be scored on its legs). Warm-up shows every fact as a statement ``f:bax age?=(17)`` (the
base's "pretraining knowledge") but asks questions only about the warm-up creatures. Answers are
numbers in QA's settled convention, boxed: ``(17)`` (the verifier wants exactly that). Math's answers
are numbers too, in a convention the base has not settled (see ``math.py``), so a QA stage moves Math's
output routes: the paper's QA-damages-Math effect needs that shared route.
"""
from __future__ import annotations

from mdrl_lib.domains.base import Domain, Example, Splits, register
from mdrl_lib.domains.toy import boxed, first_line, prompt, rng_for, spec, take_split

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
    default_sizes = (99, 99)

    def build_splits(self, seed: int, train_size: int, eval_size: int) -> Splits:
        """Questions by creature: ``ceil(size / 3)`` creatures each for train and eval (their first
        ``size`` facts are asked), the other creatures' facts form the warm-up pool."""
        per_creature = len(ATTRIBUTES)
        train_creatures, eval_creatures = -(-train_size // per_creature), -(-eval_size // per_creature)
        if train_creatures + eval_creatures >= NUM_CREATURES:
            raise ValueError(f"qa: asked for {train_size} train + {eval_size} eval questions, i.e. "
                             f"{train_creatures} + {eval_creatures} of the {NUM_CREATURES} creatures "
                             f"({NUM_CREATURES * per_creature} facts), but some creatures must be left for "
                             f"warm-up; ask for fewer than {(NUM_CREATURES - 1) * per_creature} questions in all")
        table = fact_table(seed)
        parts = take_split(list(table), seed, self.name, train_creatures, eval_creatures)
        train, held_out, pool = ([self._example(n, a, v) for n in names for a, v in table[n].items()]
                                 for names in parts)
        return Splits(train[:train_size], held_out[:eval_size], pool,
                      unused=train[train_size:] + held_out[eval_size:])

    def _example(self, creature: str, attribute: str, value: int) -> Example:
        return Example(self.name, prompt("q", f"{creature} {attribute}?"), boxed(str(value)), spec(answer=str(value)))

    def warmup_pairs(self, splits: Splits) -> list[tuple[str, str]]:
        """Statements of every fact, plus questions about the warm-up pool's facts only."""
        every_fact = splits.train + splits.eval + splits.warmup + splits.unused
        statements = [("f" + e.prompt[1:], e.answer) for e in every_fact]
        return statements + super().warmup_pairs(splits)

    def score_one(self, completion: str, spec: dict) -> float:
        return float(first_line(completion) == boxed(spec["answer"]))
