"""Toy Math: ``m:a+b=`` or ``m:a-b=`` with operands 0-29, answered by the number, exact match.

Introduced in notebook ``00_toy_world``. 1,365 distinct problems (900 sums, 465 differences that are
not negative). Arithmetic is a task GRPO can climb once warm-up gives partial skill: sampling
several answers often finds the right one that greedy decoding misses.
"""
from __future__ import annotations

from mdrl_lib.domains.base import Domain, Example, Splits, register
from mdrl_lib.domains.toy import first_line, prompt, spec, take_split

OPERAND_MAX = 29


def all_problems() -> list[tuple[int, str, int]]:
    """Every (a, op, b) problem in canonical order: 1,365 items."""
    problems = []
    for a in range(OPERAND_MAX + 1):
        for b in range(OPERAND_MAX + 1):
            problems.append((a, "+", b))
            if a >= b:
                problems.append((a, "-", b))
    return problems


@register("toy", "math")
class ToyMath(Domain):
    name, title = "math", "Math"
    default_sizes = (300, 300)

    def build_splits(self, seed: int, train_size: int, eval_size: int) -> Splits:
        parts = take_split(all_problems(), seed, self.name, train_size, eval_size)
        return Splits(*([self._example(*item) for item in part] for part in parts))

    def _example(self, a: int, op: str, b: int) -> Example:
        answer = str(a + b if op == "+" else a - b)
        return Example(self.name, prompt("m", f"{a}{op}{b}"), answer, spec(answer=answer))

    def score_one(self, completion: str, spec: dict) -> float:
        return float(first_line(completion) == spec["answer"])
