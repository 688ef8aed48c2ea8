"""Toy Math: ``m:a+b=`` or ``m:a-b=`` with operands 0-49, answered by the number, exact match.

Introduced in notebook ``00_toy_world``. 3,775 distinct problems (2,500 sums, 1,275 differences that
are not negative): 500 RL prompts, 1,000 held-out prompts (a standard error of about 0.015, small
enough to see a drop of 0.04) and 2,275 for warm-up. The verifier wants the bare number, but the
warm-up writes 40% of Math answers boxed, ``(42)`` (``BOXED_SHARE``): the base's answer convention is
unsettled, and a Math RL stage settles it, a skill that carries over to held-out prompts (unlike the
per-prompt memorising that RL on exact answers does in so small a model).
"""
from __future__ import annotations

import json

from mdrl_lib.domains.base import Convention, Domain, Example, Splits, register
from mdrl_lib.domains.toy import first_line, prompt, read_number, spec, take_split, with_boxed_answers

OPERAND_MAX = 49
BOXED_SHARE = 0.4  # of warm-up answers written (42) instead of 42


def all_problems() -> list[tuple[int, str, int]]:
    """Every (a, op, b) problem in canonical order: 3,775 items."""
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
    default_sizes = (500, 1000)
    # arithmetic is the hardest skill and must be learned on every seed (right number on at least 0.8 of
    # held-out problems), so Math gets most of the warm-up batch (notebook 00, section 4; docs/toy_world.md)
    warmup_weight = 10.0

    @classmethod
    def convention(cls) -> Convention:
        return Convention("bare number", "boxed, (42)", BOXED_SHARE,
                          lambda d: d.get("number") is not None, lambda d: bool(d.get("boxed")))

    @classmethod
    def error_category(cls, details) -> str:
        """The right number boxed or followed by other text is ``right content, wrong convention``;
        another number is ``wrong content``; no leading number is ``no answer``."""
        if details.get("number") is None:
            return "no answer"
        return "right content, wrong convention" if details.get("right_number") else "wrong content"

    def build_splits(self, seed: int, train_size: int, eval_size: int) -> Splits:
        parts = take_split(all_problems(), seed, self.name, train_size, eval_size)
        return Splits(*([self._example(*item) for item in part] for part in parts))

    def _example(self, a: int, op: str, b: int) -> Example:
        answer = str(a + b if op == "+" else a - b)
        return Example(self.name, prompt("m", f"{a}{op}{b}"), answer, spec(answer=answer))

    def world_settings(self) -> dict:
        return {"boxed_share": BOXED_SHARE}

    def warmup_pairs(self, splits: Splits) -> list[tuple[str, str]]:
        """The warm-up pool's problems, about ``BOXED_SHARE`` of them answered boxed."""
        return with_boxed_answers(super().warmup_pairs(splits), self.name, BOXED_SHARE)

    def score_one(self, completion: str, spec: dict) -> float:
        return float(first_line(completion) == spec["answer"])

    def details(self, completions: list[str], specs: list[str]) -> list[dict]:
        """Per completion: the leading ``number`` (box ignored), whether it is ``right_number``, ``boxed``,
        and ``trailing`` (text after it): the error breakdown of ``04_sequential_rl`` reads these."""
        super().details(completions, specs)
        out = []
        for completion, spec_text in zip(completions, specs):
            read = read_number(first_line(completion))
            answer = json.loads(spec_text)["answer"]
            out.append({"number": read["number"], "right_number": read["number"] == answer,
                        "boxed": read["boxed"], "trailing": read["number"] is not None and bool(read["rest"])})
        return out
