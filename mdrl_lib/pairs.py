"""Which later stage does the damage: the pair (A, B) that the theory notebooks study.

Notebook ``04_sequential_rl``'s chain shows how much each later stage B lowers the earlier domain A. The kit
studies the pair whose stage does most of the damage, chosen by a rule fixed in the rules file
(``[pairs]``): split A's held-out items into two halves once (a seeded permutation of the sorted item ids),
pick the later stage over which A falls most on the *selection* half, and report that fall on the *report*
half, which played no part in the choice. Notebooks ``03_perturbation_theory`` and ``05_refresh_vs_rollback``
take the pair ``"auto"`` from here (:func:`choose_pair`); notebook ``04`` shows the table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from mdrl_lib.claims.rules import rule

AUTO = "auto"  # a pair parameter's value that asks for the chosen pair
HALVES: tuple[str, ...] = ("selection", "report")
DAMAGE_COLUMNS = ("stage", "half", "items", "before", "after", "change", "ci_low", "ci_high", "p_value")


def half_items(items: Sequence, half: str, seed: int | None = None) -> list:
    """The item ids of ``items`` (any hashable, sortable ids, each once) that fall in ``half`` (``selection``
    or ``report``): the sorted ids in a permutation seeded by ``seed`` (default: the rules file's
    ``[pairs] split_seed``), the first ``len // 2`` for ``selection`` and the rest for ``report``. The two
    halves are disjoint, cover ``items`` and do not depend on the order ``items`` is given in."""
    if half not in HALVES:
        raise ValueError(f"unknown half {half!r}; valid: {', '.join(HALVES)}")
    ids = sorted(items)
    if len(set(ids)) != len(ids):
        raise ValueError("item ids must be unique")
    seed = int(rule("pairs", "split_seed")) if seed is None else seed
    order = np.random.default_rng(seed).permutation(len(ids))
    chosen = order[: len(ids) // 2] if half == "selection" else order[len(ids) // 2:]
    return sorted(ids[i] for i in chosen)


def split_items(table: pd.DataFrame, half: str, seed: int | None = None) -> pd.DataFrame:
    """The rows of a per-item table (:meth:`Kit.item_results`: columns ``domain`` and ``item``) whose item is in
    ``half`` of its own domain's items (:func:`half_items`, domain by domain)."""
    parts = []
    for domain, part in table.groupby("domain", sort=False):
        keep = set(half_items(part["item"].unique().tolist(), half, seed))
        parts.append(part[part["item"].isin(keep)])
    return pd.concat(parts) if parts else table.iloc[:0]


def later_stage_damage(items_by_stage: Mapping[str, pd.DataFrame], domain: str, *, seed: int | None = None,
                       level: float = 0.95) -> pd.DataFrame:
    """``domain``'s paired change over each stage that comes after its own, on each half of its held-out items.

    ``items_by_stage``: checkpoint name -> per-item table, in chain order (:func:`~mdrl_lib.interference.chain_items`:
    ``base``, then each stage's domain). One row per later stage and half (columns :data:`DAMAGE_COLUMNS`):
    ``change`` = score after the stage - score before it, on that half's items, with its paired interval and
    p-value (:func:`~mdrl_lib.interference.paired_change`). Introduced in ``04_sequential_rl``."""
    from mdrl_lib.interference import paired_change

    names = list(items_by_stage)
    if domain not in names:
        raise ValueError(f"{domain!r} is not a stage of the chain; stages: {', '.join(names[1:])}")
    later = names[names.index(domain) + 1:]
    if not later:
        raise ValueError(f"{domain!r} is the chain's last stage: no later stage can damage it")
    rows = []
    for previous, stage in zip(names[names.index(domain):], later):
        for half in HALVES:
            before = split_items(items_by_stage[previous], half, seed)
            after = split_items(items_by_stage[stage], half, seed)
            r = paired_change(before, after, domain, level=level)
            rows.append({"stage": stage, "half": half, "items": int((before["domain"] == domain).sum()),
                         "before": r.mean_before, "after": r.mean_after, "change": r.diff, "ci_low": r.ci_low,
                         "ci_high": r.ci_high, "p_value": r.p_value})
    return pd.DataFrame(rows, columns=list(DAMAGE_COLUMNS))


@dataclass(frozen=True)
class PairChoice:
    """The studied pair: ``domain`` (A), ``stage`` (B, the later stage that lowered A most on the selection
    half), ``table`` (:func:`later_stage_damage`), and the rule in words."""

    domain: str
    stage: str
    table: pd.DataFrame
    rule: str

    @property
    def pair(self) -> str:
        """``"A,B"``, as a pair parameter takes it."""
        return f"{self.domain},{self.stage}"

    def reported(self) -> pd.Series:
        """The chosen stage's row on the report half (the fall read by a reader, unbiased by the choice)."""
        rows = self.table[(self.table["stage"] == self.stage) & (self.table["half"] == "report")]
        return rows.iloc[0]

    def text(self) -> str:
        """The choice in words: the rule, each candidate's fall on the selection half, the chosen stage's fall on
        the report half."""
        from mdrl_lib.domains.base import DOMAIN_TITLES

        sel = self.table[self.table["half"] == "selection"]
        rep = self.reported()
        return (f"{self.rule}. On the selection half ({int(sel['items'].iloc[0])} items): "
                + ", ".join(f"{DOMAIN_TITLES[r.stage]}'s stage {r.change:+.3f}" for r in sel.itertuples())
                + f". Chosen: {DOMAIN_TITLES[self.domain]}-{DOMAIN_TITLES[self.stage]}. On the report half "
                  f"({int(rep['items'])} items, not used to choose): {rep['change']:+.3f} "
                  f"[{rep['ci_low']:+.3f}, {rep['ci_high']:+.3f}] (p={rep['p_value']:.2g}).")


RULE_TEXT = ("The studied pair is (A, B) with B the later stage over which A falls most on the selection half of "
             "A's held-out items (seeded split, fixed in the rules file); the fall is reported on the other half")


def choose_pair(items_by_stage: Mapping[str, pd.DataFrame], domain: str, *, seed: int | None = None) -> PairChoice:
    """The pair the theory notebooks study (the rule of :data:`RULE_TEXT`): ``domain`` and the later stage with the
    most negative change on the selection half (ties: the earlier stage). A stage that raised A may be chosen
    when none lowered it: the notebooks' damage premise then fails, and their checks say "not testable here"."""
    table = later_stage_damage(items_by_stage, domain, seed=seed)
    selection = table[table["half"] == "selection"]
    stage = str(selection.loc[selection["change"].idxmin(), "stage"])  # idxmin: the first of equal minima
    return PairChoice(domain=domain, stage=stage, table=table, rule=RULE_TEXT)


def chain_choice(kit, order: Sequence[str], domain: str, rl_seed: int = 0, *, build: bool = True) -> PairChoice | None:
    """:func:`choose_pair` on the run's chain ``order`` (RL seed ``rl_seed``, notebook 04's first), from the
    stored per-item results of its stages. ``build``: score or train what is missing (False: return ``None``
    when any stage's scores are not stored yet, so that a plan can be listed without training)."""
    from mdrl_lib.interference import chain_items
    from mdrl_lib.specs import Base, Scores

    chain = kit.chain_specs(list(order), rl_seed)
    if not build and any(kit.store.get(kit.key(Scores(spec))) is None for spec in [Base(), *chain]):
        return None
    return choose_pair(chain_items(kit, chain), domain)


def prerequisites(kit, order: Sequence[str], rl_seed: int = 0) -> list:
    """What :func:`chain_choice` reads: the chain's stages and the scores of the base and of each stage."""
    from mdrl_lib.specs import Base, Scores

    chain = kit.chain_specs(list(order), rl_seed)
    return [*chain, *(Scores(spec) for spec in [Base(), *chain])]
