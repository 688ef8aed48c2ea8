"""Toy QA: closed-book numeric questions about made-up creatures, ``q:bax age?=`` -> ``17 years``.

Introduced in notebook ``00_toy_world``. A seeded fact table gives each of 100 creatures an age
(1-38), a number of legs (0-8) and of kids (0-12): 300 facts. The creatures are split into RL-train,
held-out and warm-up creatures (all facts of a creature on one side). The base has read every fact:
warm-up asks every question, as pretraining holds the knowledge that SuperGPQA probes, so QA's
held-out questions are held out from RL, not from the base. RL in a model this small does not teach
facts (it memorises its training facts and overwrites others: notebook ``00`` has the attempts), but
it can settle *how* the model answers. The verifier wants the number with its unit (``17 years``,
``4 legs``, ``3 kids``), and the warm-up writes the unit for only ``UNIT_SHARE`` of the facts: a QA
stage settles the convention on its training creatures, and the habit carries over to held-out ones.
QA shares the number-emitting route with Math (whose verifier wants the bare number).
"""
from __future__ import annotations

import json

from mdrl_lib.domains.base import Convention, Domain, Example, Splits, register
from mdrl_lib.domains.toy import (check_number_style, first_line, in_style, prompt, read_number, rng_for, spec, styled,
                                  take_split)

NUM_CREATURES = 100
ATTRIBUTES = {"age": (1, 38), "legs": (0, 8), "kids": (0, 12)}
UNITS = {"age": "years", "legs": "legs", "kids": "kids"}
UNIT_SHARE = 0.6  # of warm-up facts written with their unit, as the verifier wants
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


def with_unit(value: int, attribute: str) -> str:
    """The answer in QA's convention: ``17`` and ``age`` -> ``17 years``."""
    return f"{value} {UNITS[attribute]}"


@register("toy", "qa")
class ToyQA(Domain):
    name, title = "qa", "QA"
    default_sizes = (99, 198)
    # the facts must be recalled almost perfectly, or a QA stage overwrites the held-out facts while it
    # memorises its own (notebook 00, section 4)
    warmup_weight = 3.0

    @classmethod
    def run_options(cls, data) -> dict:
        """Numbers written with letters in the digit-free world (``data_digit_free``, notebook 04)."""
        return {"numbers": "letters"} if data.digit_free else {}

    @classmethod
    def convention(cls) -> Convention:
        return Convention("number and unit", "bare number", 1.0 - UNIT_SHARE,
                          lambda d: d.get("number") is not None, lambda d: not d.get("right_unit"))

    @classmethod
    def error_category(cls, details) -> str:
        """The right number without its unit (or with another) is the wrong convention; another number is
        wrong content; no number is no answer."""
        if details.get("number") is None:
            return "no answer"
        return "right content, wrong convention" if details.get("right_number") else "wrong content"

    def __init__(self, numbers: str = "digits") -> None:
        """``numbers``: ``digits`` (``17 years``) or ``letters`` (``bh years``: the digit-free world of
        notebook ``04_sequential_rl``, a run setting, ``data_digit_free``)."""
        self.numbers = check_number_style(numbers)

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
        answer = in_style(with_unit(value, attribute), self.numbers)
        return Example(self.name, prompt("q", f"{creature} {attribute}?"), answer,
                       spec(answer=answer, number=in_style(str(value), self.numbers)))

    def world_settings(self) -> dict:
        settings = {"unit_share": UNIT_SHARE}
        if self.numbers != "digits":  # only when set, so that the default world's keys stay as they were
            settings["numbers"] = self.numbers
        return settings

    def warmup_pairs(self, splits: Splits) -> list[tuple[str, str]]:
        """Every question of every creature (train, held-out and pool), about ``UNIT_SHARE`` of them
        answered with the unit and the rest with the bare number."""
        every_fact = splits.train + splits.eval + splits.warmup + splits.unused
        units = styled([e.prompt for e in every_fact], self.name, UNIT_SHARE)
        return [(e.prompt, e.answer if unit else e.spec_dict["number"]) for e, unit in zip(every_fact, units)]

    def score_one(self, completion: str, spec: dict) -> float:
        return float(first_line(completion) == spec["answer"])

    def details(self, completions: list[str], specs: list[str]) -> list[dict]:
        """Per completion: the leading ``number``, whether it is ``right_number`` (unit ignored), and
        ``right_unit`` (the text after it is exactly the expected unit)."""
        super().details(completions, specs)
        out = []
        for completion, spec_text in zip(completions, specs):
            read, spec_dict = read_number(first_line(completion), self.numbers), json.loads(spec_text)
            unit = spec_dict["answer"][len(spec_dict["number"]):].strip()
            out.append({"number": read["number"], "right_number": read["number"] == spec_dict["number"],
                        "boxed": read["boxed"], "right_unit": read["rest"] == unit})
        return out
