"""The base's preconditions, introduced in notebook ``00_toy_world`` and checked again at the top of
``04_sequential_rl``: what a toy base must meet before the later claim checks mean anything.

The base's GRPO signal comes from its cached :class:`~mdrl_lib.specs.GroupSignal`, so that both notebooks
read one stored measurement.
"""
from __future__ import annotations

from typing import Mapping

import pandas as pd

from mdrl_lib.specs import SIGNAL_COLUMNS, SIGNAL_GENERATIONS, Base, GroupSignal
from mdrl_lib.claims.rules import rule

SCORE_CEILING = rule("base", "score_ceiling")  # a held-out base score at or above this leaves an RL stage nothing to raise
MATH_RIGHT_NUMBER_FLOOR = rule("base", "math_right_number_floor")  # the base must know its arithmetic, box ignored (good bases reach 0.85-0.96)
def right_number_share(items: pd.DataFrame, domain: str) -> float:
    """Share of ``domain``'s held-out answers (a :meth:`Kit.item_results` table) whose number is right, the
    answer convention ignored (the verifier's ``right_number`` detail; Math and QA). Introduced in
    ``00_toy_world``."""
    part = items[items["domain"] == domain]
    if part.empty:
        raise ValueError(f"no items of domain {domain!r}; the table holds {sorted(set(items['domain']))}")
    return float(sum(bool(d.get("right_number")) for d in part["details"]) / len(part))


def base_preconditions(scores: pd.DataFrame, mixed_shares: Mapping[str, float], items: pd.DataFrame) -> pd.DataFrame:
    """The preconditions a toy base must meet before the later notebooks' claim checks mean anything.

    Introduced in ``00_toy_world``. ``scores``: the base's held-out scores (domain, score); ``mixed_shares``:
    per domain, the share of RL prompts whose sampled groups are mixed; ``items``: the base's per-item
    results (:meth:`Kit.item_results`). Rows: each domain's score below :data:`SCORE_CEILING` (room to rise
    and fall), each domain's mixed share above 0 (GRPO gets a signal), and Math's share of held-out answers
    with the right number, box ignored, at least :data:`MATH_RIGHT_NUMBER_FLOOR` (the base learned the
    arithmetic that RL will then settle the convention of). Columns: check, value, threshold, holds, why.
    """
    table = scores.set_index("domain")["score"]
    rows = []
    for name, score in table.items():
        rows.append({"check": f"{name}: held-out base score below {SCORE_CEILING}", "value": float(score),
                     "threshold": SCORE_CEILING, "holds": bool(score < SCORE_CEILING),
                     "why": "an RL stage needs room to raise the domain, and interference room to lower it"})
    for name, share in mixed_shares.items():
        rows.append({"check": f"{name}: some RL prompts give GRPO a signal (mixed groups)", "value": float(share),
                     "threshold": 0.0, "holds": bool(share > 0),
                     "why": "a group whose rewards are all equal teaches GRPO nothing"})
    if (items["domain"] == "math").any():
        share = right_number_share(items, "math")
        rows.append({"check": "math: held-out answers with the right number (box ignored)", "value": share,
                     "threshold": MATH_RIGHT_NUMBER_FLOOR, "holds": share >= MATH_RIGHT_NUMBER_FLOOR,
                     "why": "Math's RL stage settles the answer convention; it cannot teach arithmetic the base "
                            "lacks, and the chain's damage to Math is measured on that arithmetic"})
    return pd.DataFrame(rows, columns=["check", "value", "threshold", "holds", "why"])


def base_precondition_table(kit, spec=None, num_generations: int = SIGNAL_GENERATIONS) -> pd.DataFrame:
    """:func:`base_preconditions` of a kit's base (or of the model ``spec``), read from its cached scores and
    its cached :class:`GroupSignal` (``num_generations`` completions per RL prompt; built once, seconds at
    toy scale). Notebook ``00_toy_world`` shows it; ``04_sequential_rl`` repeats it at its top so that a base
    missing a precondition is flagged before anything is read from it."""
    spec = Base() if spec is None else spec
    signal = kit.open(GroupSignal(spec, num_generations))
    return base_preconditions(kit.scores_of(spec), signal[SIGNAL_COLUMNS["mixed"]].to_dict(), kit.item_results(spec))


def precondition_warning(table: pd.DataFrame) -> str:
    """A plain warning naming every failed row of a :func:`base_preconditions` table; ``""`` when all hold.
    Printed by notebooks ``00_toy_world`` and ``04_sequential_rl``."""
    failed = table[~table["holds"].astype(bool)]
    if failed.empty:
        return ""
    return (f"THIS BASE MISSES {len(failed)} PRECONDITION(S): " + "; ".join(
        f"{row.check}: {row.value:.3f} (threshold {row.threshold})" for row in failed.itertuples())
        + ". The notebooks' claim checks assume them: read them as not testable on this base, or rebuild it with "
          "another seed or more warm-up steps.")
