"""Notebook ``04_sequential_rl``'s exercises: a paired test of a drop, and an interval over seeds.

- ``04-mcnemar``: McNemar's exact test on the same items scored before and after, held against
  :func:`mdrl_lib.stats.mcnemar_exact`.
- ``04-seed-interval``: the mean over RL seeds with a Student t interval, held against
  :func:`mdrl_lib.stats.seed_mean_interval`.
"""
from __future__ import annotations

from mdrl_lib.exercises.core import Case, Exercise

NOTEBOOK = "04_sequential_rl"


def _paired(seed: int, n: int, right: float, lost: float, gained: float) -> tuple[list[int], list[int]]:
    """0/1 scores of n items before and after a stage: each item right before with probability ``right``; a
    right item lost with probability ``lost``, a wrong one gained with probability ``gained``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    before = (rng.random(n) < right).astype(int)
    flip = rng.random(n)
    after = np.where(before == 1, (flip >= lost).astype(int), (flip < gained).astype(int))
    return before.tolist(), after.tolist()


def _mcnemar_cases() -> list[Case]:
    from mdrl_lib import stats

    settings = (
        ("60 items, a clear drop", _paired(0, 60, 0.8, 0.25, 0.05)),
        ("200 items, a small drop", _paired(1, 200, 0.85, 0.06, 0.2)),
        ("40 items, a gain", _paired(2, 40, 0.5, 0.05, 0.4)),
        ("nothing changed", ([1, 0, 1, 1, 0, 1], [1, 0, 1, 1, 0, 1])),
        ("every change one way: 5 items lost", ([1, 1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0, 0])),
        ("as many lost as gained", ([1, 1, 0, 0, 1, 0], [0, 0, 1, 1, 1, 0])),
    )
    out = []
    for label, (before, after) in settings:
        r = stats.mcnemar_exact(before, after)
        out.append(Case(f"{label} (b + c = {r.b + r.c} discordant)", (before, after), (r.b, r.c, r.diff, r.p_value)))
    return out


def _interval_cases() -> list[Case]:
    from mdrl_lib import stats

    settings = (
        ("Math's drop over three RL seeds", [-0.171, -0.116, -0.143], 0.95),
        ("five seeds", [-0.05, -0.02, -0.04, -0.08, -0.01], 0.95),
        ("the same five seeds at level 0.9", [-0.05, -0.02, -0.04, -0.08, -0.01], 0.9),
        ("two seeds: a wide interval", [0.02, -0.03], 0.95),
    )
    out = []
    for label, values, level in settings:
        r = stats.seed_mean_interval(values, level=level)
        out.append(Case(f"{label}: {values}, level {level}", (values,), (r.mean, r.ci_low, r.ci_high),
                        kwargs={"level": level}))
    return out


EXERCISES = (
    Exercise(
        key="04-mcnemar", notebook=NOTEBOOK, title="McNemar's exact test of a drop",
        objective="Test a drop on the same items scored before and after a stage: count the items lost (b: 1 -> "
                  "0) and gained (c: 0 -> 1), the change (c - b) / n, and McNemar's exact two-sided p-value. Only "
                  "the items that changed carry information about the change.",
        difficulty=2, importance="core", minutes=15,
        hint="b = items right before and wrong after, c = wrong before and right after, diff = (c - b) / n. Under "
             "'no change' each of the b + c changed items goes either way with probability 1/2, so p = min(1, 2 * "
             "P(X <= min(b, c))) with X ~ Binomial(b + c, 1/2) (scipy.stats.binom.cdf); p = 1 when b + c = 0. "
             "Return (b, c, diff, p).",
        function="my_mcnemar", compared_with="mdrl_lib.stats.mcnemar_exact",
        cases=_mcnemar_cases),
    Exercise(
        key="04-seed-interval", notebook=NOTEBOOK, title="A t interval over seeds",
        objective="Summarise one figure over RL seeds: its mean and a Student t interval, mean +- t_{n-1} * sd / "
                  "sqrt(n). With two or three seeds the interval is wide, as it should be.",
        difficulty=1, importance="useful", minutes=10,
        hint="sd is the sample standard deviation (ddof=1); t is the (0.5 + level / 2) quantile of Student's t with "
             "n - 1 degrees of freedom (scipy.stats.t.ppf). Return (mean, low, high).",
        function="my_seed_interval", compared_with="mdrl_lib.stats.seed_mean_interval",
        cases=_interval_cases),
)
