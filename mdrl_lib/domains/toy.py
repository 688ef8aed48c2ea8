"""Shared pieces of the toy world: the prompt format, number parsing and seeded sampling.

Introduced in notebook ``00_toy_world``. Every toy prompt is ``<tag>:<body>=`` and every answer is
short text over one character vocabulary of digits, lowercase letters and ``+-*() ,:=?``, so the
four domains share input and output routes.
"""
from __future__ import annotations

import json
import random
import re

# Bump when a toy domain's data, prompts or verifier change: cached bases and stages are keyed by it.
WORLD_VERSION = 5
ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz+-*() ,:=?"


def prompt(tag: str, body: str) -> str:
    """The toy prompt ``<tag>:<body>=``."""
    return f"{tag}:{body}="


def spec(**fields) -> str:
    """A verifier spec as canonical JSON."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def rng_for(seed: int, domain: str) -> random.Random:
    """A random generator seeded by ``seed`` and the domain name (never Python's salted ``hash``)."""
    return random.Random(f"{seed}:{domain}")


def take_split(items: list, seed: int, domain: str, train_size: int, eval_size: int) -> tuple[list, list, list]:
    """Shuffle ``items`` by seed and cut disjoint (train, eval, warm-up) parts: eval first, train next,
    the rest is the warm-up pool. Sizes that leave no warm-up pool give a clear error naming the counts.
    """
    if train_size + eval_size >= len(items):
        raise ValueError(f"{domain}: asked for {train_size} train + {eval_size} eval items, but the toy "
                         f"{domain} domain has only {len(items)} distinct prompts and needs some left "
                         f"for warm-up; ask for fewer than {len(items)} in all")
    shuffled = list(items)
    rng_for(seed, domain).shuffle(shuffled)
    return shuffled[eval_size:eval_size + train_size], shuffled[:eval_size], shuffled[eval_size + train_size:]


def boxed(answer: str) -> str:
    """An answer in the boxed convention: ``17`` -> ``(17)``."""
    return f"({answer})"


def styled(keys: list[str], tag: str, share: float) -> list[bool]:
    """For each warm-up item, named by its key (its prompt), whether its answer is written in the
    second of two conventions: true for about ``share`` of the keys. Each key's draw is seeded by
    ``tag`` and the key itself, so an item keeps its style whichever items come with it, and a run's
    seed changes the styles only through the items its splits hold."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share of answers in the second convention must lie in [0, 1], got {share!r}")
    return [random.Random(f"style:{tag}:{key}").random() < share for key in keys]


def with_boxed_answers(pairs: list[tuple[str, str]], tag: str, share: float) -> list[tuple[str, str]]:
    """Warm-up ``(prompt, answer)`` pairs with about ``share`` of the answers written boxed, ``(17)``.

    Introduced in notebook ``00_toy_world``: the toy's "pretraining" writes numeric answers in two
    conventions, as real corpora do (``17`` and ``\\boxed{17}``), and each verifier accepts one.
    """
    return [(p, boxed(a) if box else a) for (p, a), box in zip(pairs, styled([p for p, _ in pairs], tag, share))]


_LEADING_NUMBER = re.compile(r"^(\()?(-?\d+)(\))?")
# In the digit-free world a number is a run of letters a-j that ends the answer or is followed by a space.
_LEADING_LETTER_NUMBER = re.compile(r"^(\()?(-?[a-j]+)(\))?(?=\s|$)")
NUMBER_STYLES: tuple[str, ...] = ("digits", "letters")
LETTER_DIGITS = "abcdefghij"  # the digits 0-9 as the digit-free world writes them
_TO_LETTERS = str.maketrans("0123456789", LETTER_DIGITS)
_FROM_LETTERS = str.maketrans(LETTER_DIGITS, "0123456789")


def check_number_style(style: str) -> str:
    """``style`` if it is one of :data:`NUMBER_STYLES`, else a ValueError naming them."""
    if style not in NUMBER_STYLES:
        raise ValueError(f"unknown number style {style!r}; valid: {', '.join(NUMBER_STYLES)}")
    return style


def in_style(text: str, style: str) -> str:
    """``text`` with its digits written in ``style``: unchanged for ``digits``; for ``letters`` (the
    digit-free world of ``04_sequential_rl``) each digit 0-9 becomes a-j, so ``17 years`` -> ``bh years``."""
    return text if check_number_style(style) == "digits" else text.translate(_TO_LETTERS)


def number_value(number: str, style: str = "digits") -> int:
    """The integer a number written in ``style`` stands for (``bh`` in ``letters`` is 17)."""
    return int(number if check_number_style(style) == "digits" else number.translate(_FROM_LETTERS))


def read_number(line: str, style: str = "digits") -> dict:
    """The leading number of an answer line and how it is written (introduced in ``04_sequential_rl``):
    ``number`` (a string as written, or None when the line does not start with one), ``boxed`` (written
    ``(17)``) and ``rest`` (the text after the number and its box, stripped). ``style``: ``digits``, or
    ``letters`` in the digit-free world, where a number is a run of a-j ending the line or followed by a
    space (``bh years``; ``bax`` is no number)."""
    pattern = _LEADING_NUMBER if check_number_style(style) == "digits" else _LEADING_LETTER_NUMBER
    match = pattern.match(line)
    if match is None:
        return {"number": None, "boxed": False, "rest": line.strip()}
    boxed = bool(match.group(1)) and bool(match.group(3))
    if match.group(1) and not boxed:  # an opening parenthesis without its close is no box
        return {"number": None, "boxed": False, "rest": line.strip()}
    end = match.end() if boxed else match.end(2)
    return {"number": match.group(2), "boxed": boxed, "rest": line[end:].strip()}


def first_line(completion: str) -> str:
    """The completion up to its first newline, stripped of surrounding spaces."""
    return completion.split("\n", 1)[0].strip()
