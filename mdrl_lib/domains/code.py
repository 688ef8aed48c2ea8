"""Toy Code: write an expression over single digits and ``+-*()`` that meets a spec.

Introduced in notebook ``00_toy_world``. The prompt ``c:17,3=`` asks for a program whose value is 17
and that uses the digit 3 (``3*5+2``). The program is checked against the grammar, parsed with
:mod:`ast` and evaluated by walking its tree, so nothing is executed and no sandbox is needed; the
reward is the fraction of the prompt's two tests passed (right value, uses the digit). Answers
share digits and operators with Math, so the two domains share output routes. Targets 0-90 give 613
tasks: 150 RL prompts, 300 held-out prompts (a standard error of about 0.025; with 120 it was 0.04,
larger than the seed spread that the refresh check compares Code's moves with) and 163 for warm-up.
"""
from __future__ import annotations

import ast
import itertools
import json
import operator
import re

from mdrl_lib.domains.base import Domain, Example, Splits, register
from mdrl_lib.domains.toy import first_line, prompt, rng_for, spec, take_split

TARGET_MAX = 90
MAX_PROGRAM_CHARS = 15

# Digits, + - * and parentheses only; no power, no two adjacent digits (so every literal is one
# digit). ``$`` also matches before a final newline, as it always has for this grammar.
GRAMMAR = re.compile(r"^[0-9+\-*() ]{1,%d}$" % MAX_PROGRAM_CHARS)
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def in_grammar(program: str) -> bool:
    """Whether `program` passes the grammar check: at most MAX_PROGRAM_CHARS of ``0-9+-*() ``, no
    ``**`` and no two adjacent digits."""
    return bool(GRAMMAR.match(program)) and "**" not in program and not re.search(r"[0-9][0-9]", program)


def evaluate(program: str) -> int | tuple | None:
    """The value of `program`, or None when it is outside the grammar or does not evaluate.

    Parsed with :mod:`ast` and evaluated by walking the tree: single-digit int literals, ``+ - *``
    and unary ``+ -``; the empty tuple ``()`` is a value too, as Python's ``eval`` gives it (so
    ``()*3`` is ``()``, and ``-()`` does not evaluate). Nothing is executed.
    """
    if not in_grammar(program):
        return None
    try:
        tree = ast.parse(program, "<program>", mode="eval")
        return _value(tree.body)
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
        return None


def _value(node: ast.AST):
    if type(node) is ast.Constant and type(node.value) is int and 0 <= node.value <= 9:
        return node.value
    if type(node) is ast.BinOp and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_value(node.left), _value(node.right))
    if type(node) is ast.UnaryOp and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_value(node.operand))
    if type(node) is ast.Tuple and not node.elts:
        return ()
    raise ValueError(f"{type(node).__name__} is outside the grammar")


def check_program(program: str, target: int, digit: str) -> tuple[bool, bool, bool]:
    """(parses, right value, uses digit) for one program: the two tests and whether it evaluates."""
    value = evaluate(program)
    return value is not None, value == target, digit in program


def reference_programs() -> dict[int, list[str]]:
    """Short programs by value: ``a+b``, ``a-b``, ``a*b``, ``a*b+c``, ``a*b-c`` over digits 0-9."""
    by_value: dict[int, list[str]] = {}
    for a, b in itertools.product(range(10), repeat=2):
        for text in (f"{a}+{b}", f"{a}-{b}", f"{a}*{b}"):
            by_value.setdefault(eval(text), []).append(text)
        for c in range(1, 10):
            for text in (f"{a}*{b}+{c}", f"{a}*{b}-{c}"):
                by_value.setdefault(eval(text), []).append(text)
    return by_value


def all_tasks() -> list[tuple[int, str, list[str]]]:
    """Every (target, required digit, reference programs) task with at least one solution."""
    programs = reference_programs()
    tasks = []
    for target in range(TARGET_MAX + 1):
        for digit in "123456789":
            solutions = sorted(p for p in programs.get(target, []) if digit in p)
            if solutions:
                tasks.append((target, digit, solutions))
    return tasks


@register("toy", "code")
class ToyCode(Domain):
    name, title = "code", "Code"
    default_sizes = (150, 300)
    score_kind = "fractional"
    warmup_weight = 1.5  # Code needs some practice (notebook 00, section 4)

    @classmethod
    def error_category(cls, details) -> str:
        """A program that parses but misses a test (wrong value or missing digit) is wrong content; one
        that does not parse is no answer."""
        return "wrong content" if details.get("parses") else "no answer"

    def build_splits(self, seed: int, train_size: int, eval_size: int) -> Splits:
        rng = rng_for(seed, "code-references")
        tasks = [(t, d, rng.choice(s)) for t, d, s in all_tasks()]
        parts = take_split(tasks, seed, self.name, train_size, eval_size)
        return Splits(*([self._example(*item) for item in part] for part in parts))

    def _example(self, target: int, digit: str, reference: str) -> Example:
        return Example(self.name, prompt("c", f"{target},{digit}"), reference, spec(target=target, digit=digit))

    def score(self, completions: list[str], specs: list[str]) -> list[float]:
        if len(completions) != len(specs):
            raise ValueError(f"{len(completions)} completions but {len(specs)} specs")
        if not completions:
            return []
        parsed = [json.loads(s) for s in specs]
        programs = [first_line(c)[:MAX_PROGRAM_CHARS + 1] for c in completions]
        return [tests_passed(*check_program(program, p["target"], p["digit"])) for program, p in zip(programs, parsed)]

    def score_one(self, completion: str, spec: dict) -> float:
        return self.score([completion], [json.dumps(spec)])[0]

    def details(self, completions: list[str], specs: list[str]) -> list[dict]:
        """Per completion: whether the program ``parses`` (is in the grammar and has a value), has the
        ``right_value`` and ``uses_digit``: a program that parses but misses a test is wrong content."""
        super().details(completions, specs)
        out = []
        for completion, spec_text in zip(completions, specs):
            spec_dict = json.loads(spec_text)
            program = first_line(completion)[:MAX_PROGRAM_CHARS + 1]
            parses, right_value, uses_digit = check_program(program, spec_dict["target"], spec_dict["digit"])
            out.append({"parses": parses, "right_value": right_value, "uses_digit": uses_digit})
        return out


def tests_passed(parses: bool, right_value: bool, uses_digit: bool) -> float:
    """Reward: fraction of the two tests passed (right value, uses the digit); 0 if it does not parse."""
    return (right_value + uses_digit) / 2 if parses else 0.0
