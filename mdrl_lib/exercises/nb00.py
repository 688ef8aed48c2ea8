"""Notebook ``00_toy_world``'s exercises: a verifier's score, and the share of right numbers whatever the
convention.

- ``00-cw-rubric``: the CW verifier, held against :meth:`ToyWriting.score_one <mdrl_lib.domains.writing.ToyWriting>`.
- ``00-right-number``: Math's share of right numbers with the answer convention ignored, held against
  :func:`mdrl_lib.claims.nb00.right_number_share` on the details Math's verifier reads.
"""
from __future__ import annotations

import json

from mdrl_lib.exercises.core import Case, Exercise

NOTEBOOK = "00_toy_world"

# (verse, letters, length, what it gets wrong)
_VERSES = (
    ("2 bat 17 gem", "bg", 12, "the reference verse"),
    ("17 bat 2 gem", "bg", 12, "counting down"),
    ("2 bat 7 gem", "bg", 12, "one character short"),
    ("2 cat 17 gem", "bg", 12, "a word with the wrong first letter"),
    ("2 bat 17 gim", "bg", 12, "a word outside the lexicon"),
    ("30 cat 2 bat", "bg", 12, "wrong letters and counting down"),
    ("1 bus 5 dog 30 sun", "bds", 18, "three pairs, all right"),
    ("1 bus 5 dog", "bds", 11, "a pair missing"),
    ("bat 2 gem 17", "bg", 12, "words before numbers"),
    ("2 bat 117 gem", "bg", 13, "a three-digit number"),
    ("", "bg", 12, "an empty answer"),
)


def _rubric_cases() -> list[Case]:
    from mdrl_lib.domains.base import get_domain

    cw = get_domain("cw")
    return [Case(f"{why}: {verse!r} for letters {letters!r}, length {length}", (verse, letters, length),
                 cw.score_one(verse, {"letters": letters, "length": length}))
            for verse, letters, length, why in _VERSES]


_COMPLETIONS = (
    (["42", "(42)", "42 years", "24"], ["42", "42", "42", "42"], "bare, boxed, with a unit, wrong"),
    (["(17", "17)", "x17", " 17 "], ["17", "17", "17", "17"],
     "a half box, a stray parenthesis, a letter first, spaces"),
    (["5\n7", "7\n5", "", "(5) (5)"], ["5", "5", "5", "5"], "only the first line counts"),
    (["9", "10", "11", "12", "(13)"], ["9", "10", "0", "21", "13"], "five problems, three right"),
)


def _right_number_cases() -> list[Case]:
    import pandas as pd

    from mdrl_lib.claims.nb00 import right_number_share
    from mdrl_lib.domains.base import get_domain

    math_domain = get_domain("math")
    out = []
    for completions, answers, why in _COMPLETIONS:
        specs = [json.dumps({"answer": a}) for a in answers]
        items = pd.DataFrame({"domain": "math", "details": math_domain.details(list(completions), specs)})
        out.append(Case(f"{why}: {list(completions)!r} against {list(answers)!r}", (list(completions), list(answers)),
                        right_number_share(items, "math")))
    return out


EXERCISES = (
    Exercise(
        key="00-cw-rubric", notebook=NOTEBOOK, title="Score a counting verse",
        objective="Write CW's verifier: the share of the rubric's five checks a verse meets (form, lexicon, first "
                  "letters, ascending numbers, exact length), 0 for a verse not in form. A reward in RLVR is such a "
                  "program; partial credit is what lets a CW stage climb.",
        difficulty=2, importance="core", minutes=15,
        hint="A verse is in form when it is exactly number-word pairs ('2 bat 17 gem': one or two digits, a space, "
             "lowercase letters), one pair per letter, single spaces between. Out of form it scores 0; in form, "
             "count the other four checks plus form itself and divide by 5: every word in LEXICON, the words' first "
             "letters equal to letters, numbers strictly ascending, len(verse) == length.",
        function="my_cw_score", compared_with="mdrl_lib.domains.writing.ToyWriting.score_one",
        cases=_rubric_cases),
    Exercise(
        key="00-right-number", notebook=NOTEBOOK, title="Right numbers, convention ignored",
        objective="Count the share of Math answers whose number is right whether it is written bare or boxed, the "
                  "precondition notebook 00 checks: RL stages settle how the model answers, not the arithmetic.",
        difficulty=1, importance="core", minutes=10,
        hint="Take each completion's first line (up to the first newline), stripped. It must start with the number, "
             "bare (42) or in a closed box ((42)); whatever follows is allowed, and '(42' without its ')' is no "
             "number. Compare the number as text with the answer and return the share of completions that match.",
        function="my_right_number_share", compared_with="mdrl_lib.claims.nb00.right_number_share",
        cases=_right_number_cases),
)
