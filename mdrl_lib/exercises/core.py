"""The pieces of an implement-and-check exercise: the exercise itself, its cases, the comparison of an answer
with the kit's, and the verdict a check prints.

Introduced in every notebook's "Build it yourself" section. An :class:`Exercise` names the reader's function
and the kit function it is held against; its ``cases`` builds small seeded inputs and computes each expected
answer with that kit function (never with a copy of it). :func:`compare` walks an answer and the expected one
together (numbers, tensors, arrays, mappings, sequences, sets) and says where they part and by how much.
:mod:`mdrl_lib.exercises` runs the checks; this module imports nothing heavy, so the registry loads at once.
"""
from __future__ import annotations

import math
import numbers
import re
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

IMPORTANCE: tuple[str, ...] = ("core", "useful", "extra")
STATUSES: tuple[str, ...] = ("passed", "failed", "not implemented yet")
_KEY = re.compile(r"^(\d\d)-[a-z0-9]+(?:-[a-z0-9]+)*$")
_NOTEBOOK = re.compile(r"^\d\d_[a-z0-9_]+$")


@dataclass(frozen=True)
class Case:
    """One small input of an exercise and the kit's answer to it.

    ``label``: the case in words (shown when it fails); ``args`` and ``kwargs``: what the reader's function is
    called with (deep-copied first, so a function that edits its inputs cannot spoil the next case);
    ``expected``: the kit function's answer; ``rtol`` and ``atol``: how close a number must come;
    ``after``: an optional further check, given the arguments the reader's function received, that returns a
    problem in words or None (e.g. a hook left on a model)."""

    label: str
    args: tuple
    expected: Any
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    rtol: float = 1e-6
    atol: float = 1e-9
    after: Callable[[tuple], str | None] | None = None


@dataclass(frozen=True)
class Exercise:
    """An implement-and-check exercise of one notebook.

    ``key``: ``"NN-name"`` with NN the notebook's number (``"01-top-jaccard"``); ``notebook``: the notebook's
    file stem (``"01_sparse_edits"``); ``title``; ``objective``: what the reader's function shows, in a sentence
    or two; ``difficulty``: 1 (a few lines) to 3 (needs a new idea); ``importance``: ``core`` (the notebook's
    argument rests on it), ``useful`` or ``extra``; ``minutes``: a fair time to write it; ``hint``: what the
    student copy's stub raises and a failed check repeats; ``function``: the name the reader's function takes
    in the notebook; ``compared_with``: the kit function the check holds it against (dotted path); ``cases``:
    builds the :class:`Case` list (seeded, tiny, under a second). Introduced in every notebook's "Build it
    yourself" section."""

    key: str
    notebook: str
    title: str
    objective: str
    difficulty: int
    importance: str
    minutes: int
    hint: str
    function: str
    compared_with: str
    cases: Callable[[], Sequence[Case]] = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        match = _KEY.match(self.key) if isinstance(self.key, str) else None
        if match is None:
            raise ValueError(f"exercise key {self.key!r} must look like '01-top-jaccard' (notebook number, a dash, "
                             f"a lowercase slug)")
        if not (isinstance(self.notebook, str) and _NOTEBOOK.match(self.notebook)):
            raise ValueError(f"exercise {self.key}: notebook {self.notebook!r} must be a notebook's file stem, "
                             f"e.g. '01_sparse_edits'")
        if match.group(1) != self.notebook[:2]:
            raise ValueError(f"exercise {self.key}: its key's number does not match notebook {self.notebook!r}")
        if self.difficulty not in (1, 2, 3) or isinstance(self.difficulty, bool):
            raise ValueError(f"exercise {self.key}: difficulty must be 1, 2 or 3, got {self.difficulty!r}")
        if self.importance not in IMPORTANCE:
            raise ValueError(f"exercise {self.key}: importance must be one of {', '.join(IMPORTANCE)}, "
                             f"got {self.importance!r}")
        if isinstance(self.minutes, bool) or not isinstance(self.minutes, int) or self.minutes < 1:
            raise ValueError(f"exercise {self.key}: minutes must be a positive whole number, got {self.minutes!r}")
        if not (isinstance(self.function, str) and self.function.isidentifier()):
            raise ValueError(f"exercise {self.key}: function {self.function!r} must be a Python name")
        for name in ("title", "objective", "hint", "compared_with"):
            if not (isinstance(getattr(self, name), str) and getattr(self, name).strip()):
                raise ValueError(f"exercise {self.key}: {name} must be a non-empty string")
        if not callable(self.cases):
            raise TypeError(f"exercise {self.key}: cases must be a function that builds the cases")


@dataclass(frozen=True)
class Mismatch:
    """Where an answer parts from the kit's (``where``: a path into it such as ``['math'][3]``, ``""`` at the
    top), both values as short text and the difference in words."""

    where: str
    expected: str
    got: str
    difference: str


@dataclass(frozen=True)
class CheckResult:
    """The verdict of one check: ``status`` (one of :data:`STATUSES`), how many cases agreed out of how many,
    and for a failure the case, where the answer parts from the kit's, both values, the difference and the
    hint; for ``not implemented yet`` the message the function raised. ``str()`` gives the verdict as
    :func:`mdrl_lib.exercises.check` prints it."""

    key: str
    title: str
    status: str
    cases_passed: int
    cases_total: int
    compared_with: str
    function: str = ""
    case: str = ""
    case_number: int = 0
    where: str = ""
    expected: str = ""
    got: str = ""
    difference: str = ""
    hint: str = ""
    message: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def text(self) -> str:
        """The verdict in a few lines."""
        head = f"{self.key} · {self.title}: {self.status}"
        if self.status == "passed":
            return (f"{head}: {self.cases_passed} of {self.cases_total} cases agree with the kit's "
                    f"{self.compared_with}.")
        if self.status == "not implemented yet":
            lines = [f"{head}: write {self.function or 'your function'} above, then rerun this cell."]
            if self.message:
                lines.append(_wrapped("  hint:     ", self.message))
            return "\n".join(lines)
        where = f"{head} on case {self.case_number} of {self.cases_total} ({self.case})"
        if self.cases_passed:
            before = "the case" if self.cases_passed == 1 else f"the {self.cases_passed} cases"
            lines = [f"{where}; {before} before it agreed with the kit's {self.compared_with}."]
        else:
            lines = [f"{where}, compared with the kit's {self.compared_with}."]
        if self.where:
            lines.append(f"  where:    {self.where} in the answer")
        if self.expected:
            lines.append(f"  expected: {self.expected}")
        if self.got:
            lines.append(f"  got:      {self.got}")
        if self.difference:
            lines.append(_wrapped("  differs:  ", self.difference))
        if self.hint:
            lines.append(_wrapped("  hint:     ", self.hint))
        return "\n".join(lines)

    __str__ = text

    def __repr__(self) -> str:
        return f"CheckResult(key={self.key!r}, status={self.status!r}, cases={self.cases_passed}/{self.cases_total})"


def _wrapped(prefix: str, text: str) -> str:
    return textwrap.fill(text, width=110, initial_indent=prefix, subsequent_indent=" " * len(prefix),
                         break_long_words=False, break_on_hyphens=False)


# ---------------------------------------------------------------------------------------------- comparison

def short(value: Any) -> str:
    """A value as a short line of text: numbers to 6 significant digits, tensors and arrays by shape (and their
    entries when small), long containers cut."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return f"{float(value):.6g}"
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        kind = type(value).__name__
        flat = value.reshape(-1) if hasattr(value, "reshape") else value
        if len(flat) <= 8:
            entries = ", ".join(short(_item(v)) for v in flat)
            return f"{kind} of shape {tuple(shape)}: [{entries}]"
        return f"{kind} of shape {tuple(shape)}"
    if isinstance(value, str):
        return repr(value) if len(value) <= 80 else repr(value[:77] + "...")
    text = repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


def _item(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _is_tensor(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "shape") and hasattr(value, "dtype")


def _is_array(value: Any) -> bool:
    return type(value).__module__.startswith("numpy") and hasattr(value, "shape") and getattr(value, "ndim", 0) > 0


def _as_real(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if (_is_tensor(value) or type(value).__module__.startswith("numpy")) and getattr(value, "shape", None) in ((), ):
        return float(value)
    return None


def _number_difference(got: float, expected: float) -> str:
    text = f"off by {got - expected:+.3g}"
    if expected != 0 and math.isfinite(expected) and math.isfinite(got):
        text += f" ({100 * abs(got - expected) / abs(expected):.3g}% of the expected value)"
    return text


def compare(got: Any, expected: Any, *, rtol: float = 1e-6, atol: float = 1e-9, where: str = "") -> Mismatch | None:
    """None when ``got`` matches ``expected`` (numbers within ``rtol`` and ``atol``, NaN matching NaN), else the
    first :class:`Mismatch`. ``expected`` may be a number, bool, string, None, torch tensor, numpy array, a
    mapping, a list or tuple, or a set, nested; ``got`` must have the same structure (a list may stand for a
    tuple, a 0-d tensor for a number)."""
    if isinstance(expected, bool) or expected is None or isinstance(expected, str):
        if type(got) is type(expected) and got == expected:
            return None
        return Mismatch(where, short(expected), short(got), "")
    if _is_tensor(expected) or _is_array(expected):
        return _compare_arrays(got, expected, rtol=rtol, atol=atol, where=where)
    if isinstance(expected, numbers.Real) or _as_real(expected) is not None:
        expected_value = float(expected)
        value = _as_real(got)
        if value is None:
            return Mismatch(where, short(expected), short(got), f"expected a number, got a {type(got).__name__}")
        if math.isnan(expected_value) and math.isnan(value):
            return None
        if math.isclose(value, expected_value, rel_tol=rtol, abs_tol=atol):
            return None
        return Mismatch(where, short(expected), short(got), _number_difference(value, expected_value))
    if isinstance(expected, Mapping):
        if not isinstance(got, Mapping):
            return Mismatch(where, f"a mapping with keys {short(list(expected))}", short(got),
                            f"expected a dict, got a {type(got).__name__}")
        missing = [k for k in expected if k not in got]
        extra = [k for k in got if k not in expected]
        if missing or extra:
            parts = ([f"missing key(s) {short(missing)}"] if missing else []) + \
                    ([f"unexpected key(s) {short(extra)}"] if extra else [])
            return Mismatch(where, f"keys {short(list(expected))}", f"keys {short(list(got))}", "; ".join(parts))
        for key in expected:
            found = compare(got[key], expected[key], rtol=rtol, atol=atol, where=f"{where}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(expected, (set, frozenset)):
        if not isinstance(got, (set, frozenset)):
            return Mismatch(where, short(expected), short(got), f"expected a set, got a {type(got).__name__}")
        if set(got) == set(expected):
            return None
        missing, extra = set(expected) - set(got), set(got) - set(expected)
        return Mismatch(where, f"a set of {len(expected)}", f"a set of {len(got)}",
                        f"{len(missing)} missing (e.g. {short(sorted(missing, key=repr)[:3])}), "
                        f"{len(extra)} unexpected (e.g. {short(sorted(extra, key=repr)[:3])})")
    if isinstance(expected, (list, tuple)):
        if not isinstance(got, (list, tuple)):
            return Mismatch(where, short(expected), short(got), f"expected a {type(expected).__name__} of "
                                                                f"{len(expected)}, got a {type(got).__name__}")
        if expected and all(isinstance(e, str) for e in expected):  # names: compare the whole list at once
            if list(got) == list(expected):
                return None
            missing = [e for e in expected if e not in got]
            extra = [g for g in got if g not in expected]
            parts = ([f"missing {short(missing)}"] if missing else []) + ([f"not expected {short(extra)}"]
                                                                           if extra else [])
            return Mismatch(where, short(list(expected)), short(list(got)),
                            "; ".join(parts) or "the same names in another order")
        if len(got) != len(expected):
            return Mismatch(where, short(expected), short(got),
                            f"{len(got)} item(s) instead of {len(expected)}")
        for i, (g, e) in enumerate(zip(got, expected)):
            found = compare(g, e, rtol=rtol, atol=atol, where=f"{where}[{i}]")
            if found:
                return found
        return None
    if got == expected:
        return None
    return Mismatch(where, short(expected), short(got), "")


def _compare_arrays(got: Any, expected: Any, *, rtol: float, atol: float, where: str) -> Mismatch | None:
    import numpy as np

    exp = expected.detach().cpu().numpy() if _is_tensor(expected) else np.asarray(expected)
    try:
        value = got.detach().cpu().numpy() if _is_tensor(got) else np.asarray(got)
    except Exception:  # noqa: BLE001 (anything that is no array)
        value = None
    if value is None or value.dtype == object:
        return Mismatch(where, short(expected), short(got), f"expected an array of shape {tuple(exp.shape)}, got a "
                                                            f"{type(got).__name__}")
    if value.shape != exp.shape:
        return Mismatch(where, short(expected), short(got), f"shape {tuple(value.shape)} instead of "
                                                            f"{tuple(exp.shape)}")
    if exp.dtype == bool:
        value = value.astype(bool)
        bad = value != exp
    else:
        exp, value = exp.astype(np.float64), value.astype(np.float64)
        bad = ~np.isclose(value, exp, rtol=rtol, atol=atol, equal_nan=True)
    if not bad.any():
        return None
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    position = f"{where}[{', '.join(map(str, index))}]" if index else where
    count = f"{int(bad.sum())} of {bad.size} entries differ"
    if exp.dtype == bool:
        return Mismatch(position, short(bool(exp[index])), short(bool(value[index])), f"{count} (first at "
                                                                                       f"index {index})")
    gaps = np.where(bad, np.abs(value - exp), 0.0)
    gaps = np.where(np.isnan(gaps), np.inf, gaps)
    worst = tuple(int(i) for i in np.unravel_index(int(np.argmax(gaps)), exp.shape)) if exp.shape else ()
    return Mismatch(position, short(float(exp[index])), short(float(value[index])),
                    f"{count}; the largest gap is {float(gaps[worst]):.3g} at index {worst}")
