"""Toy Code: write an expression over single digits and ``+-*()`` that meets a spec.

Introduced in notebook ``00_toy_world``. The prompt ``c:17,3=`` asks for a program whose value is 17
and that uses the digit 3 (``3*5+2``). The program runs in :mod:`mdrl_lib.sandbox` against the
prompt's test cases; the reward is the fraction of tests passed. Answers share digits and operators
with Math, so the two domains share output routes. Targets 0-90 give 613 tasks: 150 RL prompts, 300
held-out prompts (a standard error of about 0.025; with 120 it was 0.04, larger than the seed spread
that the refresh check of issue 4 compares Code's moves with) and 163 for warm-up.
"""
from __future__ import annotations

import itertools
import json

from mdrl_lib.domains.base import Domain, Example, Splits, register
from mdrl_lib.domains.toy import first_line, prompt, rng_for, spec, take_split

TARGET_MAX = 90
MAX_PROGRAM_CHARS = 15

# Runs inside the sandbox: reads [[program, target, digit], ...] on stdin, prints one result list
# per program. Only digits, + - * and parentheses pass the grammar check, so no name, call or
# power can be evaluated even before the sandbox's limits apply.
HARNESS = r"""
import json, re, sys
GRAMMAR = re.compile(r"^[0-9+\-*() ]{1,%d}$")
results = []
for program, target, digit in json.load(sys.stdin):
    value = None
    if GRAMMAR.match(program) and "**" not in program and not re.search(r"[0-9][0-9]", program):
        try:
            value = eval(compile(program, "<program>", "eval"), {"__builtins__": {}}, {})
        except Exception:
            value = None
    results.append([value is not None, value == target, digit in program])
print(json.dumps(results))
""" % MAX_PROGRAM_CHARS


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


def run_programs(programs: list[str], targets: list[int], digits: list[str]) -> list[list[bool]]:
    """[parses, right value, uses digit] per program, from one sandboxed run of the harness."""
    from mdrl_lib.sandbox import run_python

    payload = json.dumps([[p, t, d] for p, t, d in zip(programs, targets, digits)])
    result = run_python(HARNESS, stdin=payload, timeout_s=10.0, max_output_bytes=64 * len(programs) + 4096)
    if not result.ok:
        reason = "its output was truncated" if result.output_truncated else result.stderr[-500:]
        raise RuntimeError(f"the code sandbox failed on a batch of {len(programs)} programs: {reason}")
    return json.loads(result.stdout)


@register("toy", "code")
class ToyCode(Domain):
    name, title = "code", "Code"
    default_sizes = (150, 300)

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
        results = run_programs(programs, [p["target"] for p in parsed], [p["digit"] for p in parsed])
        return [tests_passed(*r) for r in results]

    def score_one(self, completion: str, spec: dict) -> float:
        return self.score([completion], [json.dumps(spec)])[0]


def tests_passed(parses: bool, right_value: bool, uses_digit: bool) -> float:
    """Reward: fraction of the two tests passed (right value, uses the digit); 0 if it does not parse."""
    return (right_value + uses_digit) / 2 if parses else 0.0
