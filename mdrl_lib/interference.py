"""What a drop is made of, and the controls that tell its explanations apart.

Introduced in notebook ``04_sequential_rl``. Per-item results (:meth:`mdrl_lib.kit.Kit.item_results`)
say what the verifier read in each completion; :func:`error_category` sorts an item into one of four
kinds of answer, :func:`breakdown` counts them, and :func:`drop_breakdown` says, for the items a domain
lost between two checkpoints, what they became: answers in the wrong convention or wrong content.
:func:`control_specs` builds the artifacts that separate the cheap explanations of a drop from the
paper's (more RL of any kind, more of the same domain, RL on the later domains with shuffled rewards).
"""
from __future__ import annotations

from typing import Mapping

import pandas as pd

from mdrl_lib.domains.base import DOMAIN_NAMES

CATEGORIES: tuple[str, ...] = ("right", "right content, wrong convention", "wrong content", "no answer")


def error_category(domain: str, score: float, details: Mapping) -> str:
    """The kind of answer one toy item got (one of :data:`CATEGORIES`).

    - Math: ``right`` when the verifier accepts it; the right number boxed or followed by other text is
      ``right content, wrong convention``; another number is ``wrong content``; no leading number is
      ``no answer``.
    - QA: the right number without its unit (or with another) is the wrong convention; another number
      is wrong content; no number is no answer.
    - Code: a program that parses but misses a test (wrong value or missing digit) is wrong content; one
      that does not parse is no answer.
    - CW: a verse in the right form that fails some rubric check is wrong content; no verse form is no answer.
    """
    if domain not in DOMAIN_NAMES:
        raise ValueError(f"unknown domain {domain!r}; valid domains: {', '.join(DOMAIN_NAMES)}")
    if score >= 1.0:
        return "right"
    if domain in ("math", "qa"):
        if details.get("number") is None:
            return "no answer"
        return "right content, wrong convention" if details.get("right_number") else "wrong content"
    if domain == "code":
        return "wrong content" if details.get("parses") else "no answer"
    return "wrong content" if details.get("form") else "no answer"


def categorize(items: pd.DataFrame) -> pd.DataFrame:
    """``items`` (a :meth:`Kit.item_results` table) with a ``category`` column added."""
    missing = {"domain", "score", "details"} - set(items.columns)
    if missing:
        raise ValueError(f"per-item results need the columns domain, score, details; missing {sorted(missing)}")
    out = items.copy()
    out["category"] = [error_category(d, s, det) for d, s, det in zip(items["domain"], items["score"], items["details"])]
    return out


def breakdown(items: pd.DataFrame) -> pd.DataFrame:
    """Share of each domain's items in each category: rows domains, columns :data:`CATEGORIES` (rows sum to 1)."""
    sorted_items = categorize(items)
    table = pd.crosstab(sorted_items["domain"], sorted_items["category"], normalize="index")
    return table.reindex(columns=list(CATEGORIES), fill_value=0.0)


def drop_breakdown(before: pd.DataFrame, after: pd.DataFrame, domain: str) -> pd.Series:
    """How ``domain``'s score changed between two checkpoints, item by item, split by kind of answer.

    Pairs the two per-item tables on (domain, item). ``lost`` counts items right before and not after,
    split by what they became (``lost: <category>``); ``gained`` items wrong before and right after.
    ``change`` = (gained - lost) / n, the change of the exact-match score for 0/1 domains. The shares
    ``lost: right content, wrong convention`` and ``lost: wrong content`` answer notebook 04's question:
    is a drop convention drift or wrong answers?
    """
    pair = _paired(before, after, domain)
    right_before = pair["category_before"] == "right"
    right_after = pair["category_after"] == "right"
    lost = pair[right_before & ~right_after]
    out = {"n": len(pair), "lost": len(lost), "gained": int((~right_before & right_after).sum())}
    for category in CATEGORIES[1:]:
        out[f"lost: {category}"] = int((lost["category_after"] == category).sum())
    out["change"] = (out["gained"] - out["lost"]) / len(pair)
    return pd.Series(out, name=domain)


def _paired(before: pd.DataFrame, after: pd.DataFrame, domain: str) -> pd.DataFrame:
    a = categorize(before[before["domain"] == domain])
    b = categorize(after[after["domain"] == domain])
    if a.empty or b.empty:
        raise ValueError(f"no items of domain {domain!r} in both tables")
    pair = a.merge(b, on=["domain", "item"], suffixes=("_before", "_after"), validate="one_to_one")
    if len(pair) != len(a) or len(pair) != len(b):
        raise ValueError(f"the two tables hold different items of {domain!r} ({len(a)} and {len(b)}; {len(pair)} in "
                         f"common): pair checkpoints scored on the same held-out items")
    return pair


def control_specs(kit, order=None, domain: str = "math", rl_seed: int = 0) -> dict[str, object]:
    """The artifacts that separate the explanations of ``domain``'s drop along the chain ``order``.

    All start from the checkpoint right after ``domain``'s stage and take the same number of RL steps
    as the later stages of the chain:

    - ``real chain``: the chain's later stages (the paper's setting);
    - ``shuffled rewards``: the same later domains, with each step's verifier rewards shuffled among its
      completions (RL drift of a comparable size that learns nothing about those domains);
    - ``more of the same``: the same number of steps continuing ``domain`` itself.

    Returns {name: spec of the final checkpoint}, plus ``after`` (the checkpoint right after the stage).
    """
    from mdrl_lib.kit import Stage, check_domain

    domain = check_domain(domain)
    chain = kit.chain_specs(order, rl_seed)
    names = [spec.domain for spec in chain]
    if domain not in names:
        raise ValueError(f"{domain!r} is not in the chain {names}; valid: {', '.join(names)}")
    at = names.index(domain)
    later = names[at + 1:]
    if not later:
        raise ValueError(f"{domain!r} is the chain's last stage: no later stage can damage it")
    after = chain[at]
    shuffled = after
    for name in later:
        shuffled = Stage(shuffled, name, rl_seed=rl_seed, reward="shuffled")
    steps = sum(spec.resolved_steps(kit) for spec in chain[at + 1:])
    return {"after": after, "real chain": chain[-1], "shuffled rewards": shuffled,
            "more of the same": Stage(after, domain, rl_seed=rl_seed, steps=steps)}
