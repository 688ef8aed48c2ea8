"""Toy Creative Writing: a "counting verse" graded by a programmatic rubric.

Introduced in notebook ``00_toy_world``. The prompt ``w:bg12=`` asks for number-word pairs whose
words start with the given letters in order and whose text is exactly 12 characters long, e.g.
``2 bat 17 gem``. The rubric stands in for the paper's reference- or judge-based reward: it checks
form, lexicon, first letters, ascending numbers and length, and the score is the fraction met.
The verse is built around numbers, so a CW stage moves Math's output routes too. Half the warm-up's
verses count down (``DESCENDING_SHARE``), which the rubric's ascending check rejects: the base then
writes the wrong order about as often as a pretrained model breaks a stylistic rule, and a CW stage has
a habit to correct (with every warm-up verse ascending, some seeds' bases score 0.95 or more on CW
and leave RL nothing to raise).
"""
from __future__ import annotations

import json

import re

from mdrl_lib.domains.base import Convention, Domain, Example, Splits, register
from mdrl_lib.domains.toy import (LETTER_DIGITS, check_number_style, first_line, in_style, number_value, prompt,
                                  rng_for, spec, styled, take_split)

LEXICON = ("bat", "bed", "bus", "cat", "cup", "dog", "dig", "gem", "gum", "hat", "hen",
           "map", "mop", "pen", "pig", "sun", "sod", "top", "tin")
LETTERS = "".join(sorted({w[0] for w in LEXICON}))
NUMBER_MAX = 40
RUBRIC = ("form", "lexicon", "letters", "ascending", "length")
DESCENDING_SHARE = 0.5  # of warm-up verses that count down, which the rubric's ascending check rejects
_PAIR = re.compile(r"^(\d{1,2}) ([a-z]+)$")
_LETTER_PAIR = re.compile(r"^([%s]{1,2}) ([a-z]+)$" % LETTER_DIGITS)


def verse_for(numbers: list[int], words: list[str]) -> str:
    return " ".join(f"{n} {w}" for n, w in zip(numbers, words))


def counting_down(verse: str, numbers: str = "digits") -> str:
    """The verse with its numbers in descending order and its words in place:
    ``2 bat 17 gem`` -> ``17 bat 2 gem`` (same letters and length; fails only the ascending check).
    ``numbers``: how the verse writes its numbers (``letters``: ``c bat bh gem`` -> ``bh bat c gem``)."""
    pairs = [p.split(" ") for p in re.findall(r"\S+ \S+", verse)]
    numbers_down = sorted((n for n, _ in pairs), key=lambda n: number_value(n, numbers), reverse=True)
    return verse_for(numbers_down, [w for _, w in pairs])


def all_tasks(seed: int) -> list[tuple[str, int, str]]:
    """(letters, length, reference verse) for every 2- and 3-letter prompt, deterministic by seed."""
    rng = rng_for(seed, "cw-verses")
    tasks = []
    for count in (2, 3):
        for index in range(len(LETTERS) ** count):
            letters = "".join(LETTERS[(index // len(LETTERS) ** k) % len(LETTERS)] for k in range(count))
            numbers = sorted(rng.sample(range(NUMBER_MAX + 1), count))
            words = [rng.choice([w for w in LEXICON if w[0] == c]) for c in letters]
            verse = verse_for(numbers, words)
            tasks.append((letters, len(verse), verse))
    return tasks


def rubric(text: str, letters: str, length: int, numbers: str = "digits") -> dict[str, bool]:
    """Which of the five rubric checks a verse meets; a malformed verse meets none. ``numbers``: how the
    verse writes its numbers, ``digits`` (``2 bat 17 gem``) or ``letters`` (``c bat bh gem``, the
    digit-free world of ``04_sequential_rl``)."""
    pattern = _PAIR if check_number_style(numbers) == "digits" else _LETTER_PAIR
    pairs = [pattern.match(p) for p in re.findall(r"\S+ \S+", text)] if text else []
    form = bool(pairs) and all(pairs) and " ".join(m.group(0) for m in pairs) == text and len(pairs) == len(letters)
    if not form:
        return dict.fromkeys(RUBRIC, False)
    values = [number_value(m.group(1), numbers) for m in pairs]
    words = [m.group(2) for m in pairs]
    return {
        "form": True,
        "lexicon": all(w in LEXICON for w in words),
        "letters": "".join(w[0] for w in words) == letters,
        "ascending": all(a < b for a, b in zip(values, values[1:])),
        "length": len(text) == length,
    }


@register("toy", "cw")
class ToyWriting(Domain):
    name, title = "cw", "CW"
    default_sizes = (300, 200)
    score_kind = "fractional"
    warmup_weight = 0.5  # CW's form is learned fastest (notebook 00, section 4)

    @classmethod
    def run_options(cls, data) -> dict:
        """Numbers written with letters in the digit-free world (``data_digit_free``, notebook 04)."""
        return {"numbers": "letters"} if data.digit_free else {}

    @classmethod
    def convention(cls) -> Convention:
        return Convention("numbers ascending", "counting down", DESCENDING_SHARE,
                          lambda d: bool(d.get("form")), lambda d: not d.get("ascending"))

    @classmethod
    def error_category(cls, details) -> str:
        """A verse in the right form that fails some rubric check is wrong content; no verse form is no answer."""
        return "wrong content" if details.get("form") else "no answer"

    def __init__(self, numbers: str = "digits") -> None:
        """``numbers``: ``digits`` (``2 bat 17 gem``) or ``letters`` (``c bat bh gem``: the digit-free world
        of notebook ``04_sequential_rl``, a run setting, ``data_digit_free``). Prompts are the same."""
        self.numbers = check_number_style(numbers)

    def build_splits(self, seed: int, train_size: int, eval_size: int) -> Splits:
        parts = take_split(all_tasks(seed), seed, self.name, train_size, eval_size)
        return Splits(*([self._example(*item) for item in part] for part in parts))

    def _example(self, letters: str, length: int, verse: str) -> Example:
        return Example(self.name, prompt("w", f"{letters}{length}"), in_style(verse, self.numbers),
                       spec(letters=letters, length=length))

    def world_settings(self) -> dict:
        return {"descending_share": DESCENDING_SHARE, **({} if self.numbers == "digits" else {"numbers": self.numbers})}

    def warmup_pairs(self, splits: Splits) -> list[tuple[str, str]]:
        """The warm-up pool's verses, about ``DESCENDING_SHARE`` of them counting down."""
        pairs = super().warmup_pairs(splits)
        down = styled([p for p, _ in pairs], self.name, DESCENDING_SHARE)
        return [(p, counting_down(a, self.numbers) if d else a) for (p, a), d in zip(pairs, down)]

    def score_one(self, completion: str, spec: dict) -> float:
        checks = rubric(first_line(completion), spec["letters"], spec["length"], self.numbers)
        return sum(checks.values()) / len(RUBRIC)

    def details(self, completions: list[str], specs: list[str]) -> list[dict]:
        """Per completion: which of the five rubric checks it meets (``form``, ``lexicon``, ...)."""
        super().details(completions, specs)
        out = []
        for completion, spec_text in zip(completions, specs):
            spec_dict = json.loads(spec_text)
            out.append(rubric(first_line(completion), spec_dict["letters"], spec_dict["length"], self.numbers))
        return out
