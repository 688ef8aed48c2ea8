"""Implement-and-check exercises: the reader writes the short function at the heart of a notebook's step, and a
check holds it against the kit's own function on small seeded cases.

Introduced in every notebook's "Build it yourself" section (``00_toy_world`` ... ``06_recovery_methods``). One
module per notebook (:mod:`~mdrl_lib.exercises.nb00` ... ``nb06``) holds that notebook's exercises; each builds
its cases (tiny tensors and tables, seeded) and computes the expected answers with a kit function, so a check
needs no trained artifact and runs in well under a second once the kit's modules are imported.

- :func:`check` runs one exercise on the reader's function and prints its verdict: ``passed``; ``failed`` (the
  case, expected against got, by how much, and a hint); or ``not implemented yet`` (the function raised
  NotImplementedError, as the stubs of a student copy do: ``make lab``). A wrong answer never raises.
- :func:`exercise_table` lists the exercises; :func:`exercise` looks one up by key; :data:`EXERCISES` holds them
  all, by key, in notebook order.

The analysis modules are imported only inside each exercise's cases; nothing in the library imports this package.
"""
from __future__ import annotations

import copy
from typing import Any, Callable

from mdrl_lib.exercises import nb00, nb01, nb02, nb03, nb04, nb05, nb06
from mdrl_lib.exercises.core import IMPORTANCE, STATUSES, Case, CheckResult, Exercise, Mismatch, compare, short

EXERCISES: dict[str, Exercise] = {}
for _module in (nb00, nb01, nb02, nb03, nb04, nb05, nb06):
    for _exercise in _module.EXERCISES:
        if _exercise.key in EXERCISES:
            raise ValueError(f"exercise key {_exercise.key!r} is registered twice")
        EXERCISES[_exercise.key] = _exercise
del _module, _exercise

TABLE_COLUMNS = ("key", "notebook", "title", "difficulty", "importance", "minutes", "compared_with")


def exercise(key: str) -> Exercise:
    """The exercise ``key`` (``"01-top-jaccard"``); an unknown key is a ValueError naming the valid ones."""
    found = EXERCISES.get(key) if isinstance(key, str) else None
    if found is None:
        raise ValueError(f"unknown exercise {key!r}; valid keys: {', '.join(EXERCISES)}")
    return found


def notebook_stems() -> list[str]:
    """The notebooks that have exercises, by file stem, in order."""
    return list(dict.fromkeys(e.notebook for e in EXERCISES.values()))


def exercise_table(notebook: str | None = None):
    """The exercises as a DataFrame, one row each (columns :data:`TABLE_COLUMNS`), of every notebook or of one
    (``"01"`` or ``"01_sparse_edits"``; an unknown notebook is a ValueError naming the valid ones)."""
    import pandas as pd

    chosen = list(EXERCISES.values())
    if notebook is not None:
        stems = notebook_stems()
        matches = [s for s in stems if notebook in (s, s[:2])]
        if not matches:
            raise ValueError(f"no exercises for notebook {notebook!r}; valid: {', '.join(stems)} "
                             f"(or their numbers {', '.join(s[:2] for s in stems)})")
        chosen = [e for e in chosen if e.notebook == matches[0]]
    return pd.DataFrame([{c: getattr(e, c) for c in TABLE_COLUMNS} for e in chosen], columns=list(TABLE_COLUMNS))


def run_check(key: str, student_function: Callable[..., Any]) -> CheckResult:
    """:func:`check` without printing: the :class:`CheckResult` of ``student_function`` on exercise ``key``."""
    item = exercise(key)
    base = dict(key=item.key, title=item.title, compared_with=item.compared_with, function=item.function)
    cases = list(item.cases())
    total = len(cases)
    if not callable(student_function):
        return CheckResult(status="failed", cases_passed=0, cases_total=total, case="no function given",
                           case_number=1, expected=f"a function {item.function}(...)", got=repr(student_function)[:80],
                           difference=f"pass the function itself: check({key!r}, {item.function})",
                           hint=item.hint, **base)
    for number, case in enumerate(cases, start=1):
        args = copy.deepcopy(tuple(case.args))
        kwargs = copy.deepcopy(dict(case.kwargs))
        failure = dict(status="failed", cases_passed=number - 1, cases_total=total, case=case.label,
                       case_number=number, hint=item.hint, **base)
        try:
            got = student_function(*args, **kwargs)
        except NotImplementedError as error:
            return CheckResult(status="not implemented yet", cases_passed=number - 1, cases_total=total,
                               message=str(error) or item.hint, **base)
        except Exception as error:  # noqa: BLE001 (a wrong answer is reported, never raised)
            return CheckResult(expected=short(case.expected), got=f"it raised {type(error).__name__}: {error}",
                               **failure)
        try:
            mismatch = compare(got, case.expected, rtol=case.rtol, atol=case.atol)
            problem = case.after(args) if mismatch is None and case.after is not None else None
        except Exception as error:  # noqa: BLE001 (an answer too odd to compare is a wrong answer too)
            return CheckResult(expected=short(case.expected), got=short(got),
                               difference=f"cannot compare it: {type(error).__name__}: {error}", **failure)
        if mismatch is not None:
            return CheckResult(where=mismatch.where, expected=mismatch.expected, got=mismatch.got,
                               difference=mismatch.difference, **failure)
        if problem:
            return CheckResult(difference=problem, **failure)
    return CheckResult(status="passed", cases_passed=total, cases_total=total, **base)


def check(key: str, student_function: Callable[..., Any], *, quiet: bool = False) -> CheckResult:
    """Hold ``student_function`` against the kit on exercise ``key``'s cases, print the verdict (unless
    ``quiet``) and return it as a :class:`CheckResult`: ``passed``, ``failed`` (the first case that differs:
    expected against got, by how much, and the hint; also when the function raises) or ``not implemented yet``
    (it raised NotImplementedError). Only an unknown ``key`` raises. Introduced in every notebook's "Build it
    yourself" section."""
    result = run_check(key, student_function)
    if not quiet:
        print(result.text())
    return result


__all__ = ["EXERCISES", "IMPORTANCE", "STATUSES", "TABLE_COLUMNS", "Case", "CheckResult", "Exercise", "Mismatch",
           "check", "compare", "exercise", "exercise_table", "notebook_stems", "run_check"]
