"""What a drop is made of, and the controls that tell its explanations apart.

Introduced in notebook ``04_sequential_rl``. Per-item results (:meth:`mdrl_lib.kit.Kit.item_results`)
say what the verifier read in each completion; :func:`error_category` sorts an item into one of four
kinds of answer, :func:`breakdown` counts them, and :func:`drop_breakdown` says, for the items a domain
lost between two checkpoints, what they became: answers in the wrong convention or wrong content.
:func:`control_specs` builds the artifacts that separate the cheap explanations of a drop from the
paper's (more RL of any kind, more of the same domain, RL on the later domains with shuffled rewards).

Paired over the same held-out items: :func:`paired_change` (one domain, two checkpoints),
:func:`stage_changes` (every domain over every stage: forgetting and transfer), :func:`forgetting` (each
domain from its own stage to the chain's end) and :func:`control_table` (the damaged domain under each
control, and the real chain's end against each control's end). Notebook 04's tables over stages, RL
seeds and worlds: :func:`change_matrix`, :func:`starred_changes`, :func:`seed_spread`,
:func:`chain_curves`, :func:`drops_by_seed`, :func:`drop_splits`, :func:`world_drops`. Notebook 04's
recipe (:mod:`mdrl_lib.recipes.nb04`) lists every artifact it asks the kit for.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd

from mdrl_lib.domains.base import DOMAIN_NAMES, FRACTIONAL_DOMAINS, domain_class
from mdrl_lib.specs import Base, Spec, Stage, check_domain  # light: this module imports no torch

CATEGORIES: tuple[str, ...] = ("right", "right content, wrong convention", "wrong content", "no answer")


def error_category(domain: str, score: float, details: Mapping) -> str:
    """The kind of answer one toy item got (one of :data:`CATEGORIES`): ``right`` when the verifier
    accepts it, else what the domain's toy class reads in its details (:meth:`Domain.error_category`)."""
    kind = domain_class(domain).error_category
    return "right" if score >= 1.0 else kind(details)


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


# ---- paired changes along a chain ------------------------------------------------------------------

def paired_test_kind(domain: str) -> str:
    """The paired test a domain's per-item scores take: ``binary`` (0/1: Math, QA; McNemar's exact test
    and Newcombe's interval) or ``fractional`` (Code, CW; paired bootstrap interval, signed-rank p)."""
    if domain not in DOMAIN_NAMES:
        raise ValueError(f"unknown domain {domain!r}; valid domains: {', '.join(DOMAIN_NAMES)}")
    return FRACTIONAL_DOMAINS.get(domain, "binary")


def item_scores(items: pd.DataFrame, domain: str) -> pd.Series:
    """``domain``'s per-item scores of a :meth:`Kit.item_results` table, indexed by item, in item order."""
    part = items[items["domain"] == domain]
    if part.empty:
        raise ValueError(f"no items of domain {domain!r}; the table holds {sorted(set(items['domain']))}")
    if part["item"].duplicated().any():
        raise ValueError(f"domain {domain!r}: an item appears more than once")
    return part.set_index("item")["score"].astype(float).sort_index()


def paired_change(before: pd.DataFrame, after: pd.DataFrame, domain: str, *, level: float = 0.95,
                  n_boot: int = 10_000, seed: int = 0):
    """``domain``'s score change from checkpoint ``before`` to ``after`` (two :meth:`Kit.item_results`
    tables), paired item by item: a :class:`mdrl_lib.stats.PairedDifference` (``diff`` = after - before,
    its interval at ``level`` and p-value; the test by :func:`paired_test_kind`). Both must hold the same items.
    Introduced in ``04_sequential_rl``."""
    from mdrl_lib.stats import paired_difference

    a, b = item_scores(before, domain), item_scores(after, domain)
    if not a.index.equals(b.index):
        raise ValueError(f"domain {domain!r}: the two checkpoints were scored on different items ({len(a)} and "
                         f"{len(b)}); pair checkpoints scored on the same held-out items")
    return paired_difference(a.to_numpy(), b.to_numpy(), paired_test_kind(domain), level=level, n_boot=n_boot, seed=seed)


CHANGE_COLUMNS = ("stage", "domain", "before", "after", "change", "ci_low", "ci_high", "p_value", "test")


def stage_changes(items_by_stage: Mapping[str, pd.DataFrame], *, level: float = 0.95, n_boot: int = 10_000,
                  seed: int = 0) -> pd.DataFrame:
    """Each domain's change over each stage of a chain, paired over the held-out items.

    ``items_by_stage``: checkpoint name -> per-item table, in chain order starting with the start
    (``{"base": ..., "code": ..., "math": ...}``). One row per stage after the first and per domain:
    ``before`` and ``after`` (mean scores), ``change`` = after - before (negative: forgetting; positive
    on a domain not trained in that stage: transfer), its interval and p-value (:func:`paired_change`).
    Introduced in ``04_sequential_rl``."""
    names = list(items_by_stage)
    if len(names) < 2:
        raise ValueError("give at least two checkpoints (the start and one stage)")
    rows = []
    for previous, stage in zip(names, names[1:]):
        before, after = items_by_stage[previous], items_by_stage[stage]
        for domain in [d for d in DOMAIN_NAMES if d in set(before["domain"])]:
            r = paired_change(before, after, domain, level=level, n_boot=n_boot, seed=seed)
            rows.append({"stage": stage, "domain": domain, "before": r.mean_before, "after": r.mean_after,
                         "change": r.diff, "ci_low": r.ci_low, "ci_high": r.ci_high, "p_value": r.p_value,
                         "test": r.test})
    return pd.DataFrame(rows, columns=list(CHANGE_COLUMNS))


def chain_items(kit, chain: list[Spec]) -> dict[str, pd.DataFrame]:
    """Per-item results of the base and of every stage of ``chain`` (stage specs in order), keyed
    ``base`` and then by each stage's domain: what :func:`stage_changes` and :func:`forgetting` take.
    Scores what is not stored yet; trains nothing that notebook 04's recipe does not plan.
    Introduced in ``04_sequential_rl``."""
    out = {"base": kit.item_results(Base())}
    for spec in chain:
        out[spec.domain] = kit.item_results(spec)
    return out


def forgetting(items_by_stage: Mapping[str, pd.DataFrame], *, level: float = 0.95, n_boot: int = 10_000,
               seed: int = 0, domains: Sequence[str] | None = None) -> pd.DataFrame:
    """Each trained domain's change from right after its own stage to the chain's end, paired over its
    held-out items (``items_by_stage`` as :func:`chain_items` gives it: ``base``, then one entry per
    stage, named by the stage's domain, in chain order). One row per domain trained before the last
    stage (or per one of ``domains``, each the same row as without them), columns as
    :func:`stage_changes` with ``stage`` naming the domain's own stage: the paper's "fallen from the
    value it reached in its own stage". Introduced in ``04_sequential_rl``."""
    stages = [s for s in items_by_stage if s != "base"]
    if len(stages) < 2:
        raise ValueError("a chain of at least two stages is needed for a later stage to change an earlier one")
    end = items_by_stage[stages[-1]]
    if domains is not None and not set(domains) <= set(stages[:-1]):
        raise ValueError(f"domains {sorted(set(domains) - set(stages[:-1]))} have no stage before the chain's last; "
                         f"valid: {', '.join(stages[:-1])}")
    rows = []
    for stage in [s for s in stages[:-1] if domains is None or s in domains]:
        r = paired_change(items_by_stage[stage], end, stage, level=level, n_boot=n_boot, seed=seed)
        rows.append({"stage": stage, "domain": stage, "before": r.mean_before, "after": r.mean_after,
                     "change": r.diff, "ci_low": r.ci_low, "ci_high": r.ci_high, "p_value": r.p_value,
                     "test": r.test})
    return pd.DataFrame(rows, columns=list(CHANGE_COLUMNS))


def stage_breakdown(items_by_stage: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """:func:`breakdown` of every checkpoint, stacked: columns ``stage``, ``domain`` and the
    :data:`CATEGORIES` shares (each row sums to 1). Introduced in ``04_sequential_rl``."""
    frames = [breakdown(items).reset_index().assign(stage=stage) for stage, items in items_by_stage.items()]
    table = pd.concat(frames, ignore_index=True)
    table.columns.name = None
    return table[["stage", "domain", *CATEGORIES]]


CONTROL_COLUMNS = ("control", "n", "before", "after", "change", "ci_low", "ci_high", "p_value", "test",
                   "minus_reference", "minus_reference_ci_low", "minus_reference_ci_high", "minus_reference_p")


def control_table(runs: Mapping[str, tuple[pd.DataFrame, pd.DataFrame]], domain: str = "math",
                  reference: str = "real chain", *, level: float = 0.95, n_boot: int = 10_000,
                  seed: int = 0) -> pd.DataFrame:
    """``domain``'s change under each control, and each control's end against the reference's end.

    ``runs``: name -> (per-item table right after ``domain``'s stage, per-item table at the run's end);
    one of them is ``reference`` (the real chain). Every pair is scored on the same held-out items of
    ``domain`` (a control in another world, such as the digit-free one, shares the Math items when it
    shares the run seed). Rows, in the order given: ``before`` and ``after`` (mean scores), ``change`` =
    after - before with its paired interval and p (:func:`paired_change`), and ``minus_reference`` =
    the reference's end minus this control's end, paired over the same items (negative: the real chain
    left ``domain`` lower than this control did), with its interval and p; empty on the reference's row.
    Introduced in ``04_sequential_rl``."""
    if reference not in runs:
        raise ValueError(f"the reference {reference!r} is not among the runs {list(runs)}")
    reference_end = runs[reference][1]
    rows = []
    for name, (before, after) in runs.items():
        r = paired_change(before, after, domain, level=level, n_boot=n_boot, seed=seed)
        row = {"control": name, "n": r.n, "before": r.mean_before, "after": r.mean_after, "change": r.diff,
               "ci_low": r.ci_low, "ci_high": r.ci_high, "p_value": r.p_value, "test": r.test,
               "minus_reference": float("nan"), "minus_reference_ci_low": float("nan"),
               "minus_reference_ci_high": float("nan"), "minus_reference_p": float("nan")}
        if name != reference:
            v = paired_change(after, reference_end, domain, level=level, n_boot=n_boot, seed=seed)
            row.update(minus_reference=v.diff, minus_reference_ci_low=v.ci_low, minus_reference_ci_high=v.ci_high,
                       minus_reference_p=v.p_value)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(CONTROL_COLUMNS))


# ---- notebook 04's tables over RL seeds and worlds ---------------------------------------------------

def _plain(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` without its ``attrs`` (:meth:`Kit.score_matrix` keeps its standard errors there, which
    pandas cannot compare when it concatenates tables)."""
    out = table.copy()
    out.attrs = {}
    return out


def change_matrix(changes: pd.DataFrame, order) -> pd.DataFrame:
    """A :func:`stage_changes` table as a stage x domain matrix of changes (rows the stages in ``order``,
    columns every domain in :data:`DOMAIN_NAMES` order). Introduced in ``04_sequential_rl``."""
    return changes.pivot(index="stage", columns="domain", values="change").loc[list(order), list(DOMAIN_NAMES)]


def starred_changes(changes: pd.DataFrame, order, alpha: float = 0.05) -> pd.DataFrame:
    """:func:`change_matrix` written as text (``+0.105``), with `` *`` after each change whose paired p-value
    is below ``alpha``. Introduced in ``04_sequential_rl``."""
    matrix = change_matrix(changes, order)
    significant = changes.assign(sig=changes["p_value"] < alpha).pivot(index="stage", columns="domain", values="sig")
    stars = significant.loc[matrix.index, matrix.columns].map(lambda sig: " *" if sig else "")
    return matrix.map(lambda x: f"{x:+.3f}") + stars


def seed_spread(matrices: Mapping[int, pd.DataFrame]) -> pd.DataFrame:
    """Mean, min and max over RL seeds of each checkpoint's score on each domain. ``matrices``: RL seed ->
    :meth:`Kit.score_matrix` (stage x domain); columns (domain, statistic), rows the stages in chain
    order. With one seed min = max = mean. Introduced in ``04_sequential_rl``."""
    stacked = pd.concat({s: _plain(m) for s, m in matrices.items()}, names=["rl_seed", "stage"])
    return stacked.groupby(level="stage", sort=False).agg(["mean", "min", "max"])


def chain_curves(matrices: Mapping[int, pd.DataFrame], domain: str) -> pd.DataFrame:
    """``domain``'s score at each checkpoint of each RL seed's chain, long: columns ``stage``, ``score``,
    ``run`` (``RL seed <s>``), what :func:`mdrl_lib.plots.plot_chain_curves` draws. Introduced in
    ``04_sequential_rl``."""
    return pd.concat([_plain(m)[domain].rename("score").rename_axis("stage").reset_index().assign(run=f"RL seed {s}")
                      for s, m in matrices.items()])


DROP_TABLE_COLUMNS = ("rl_seed", "domain", "before", "after", "change", "ci_low", "ci_high", "p_value", "test")


def drops_by_seed(items_by_seed: Mapping[int, Mapping[str, pd.DataFrame]], **options) -> pd.DataFrame:
    """:func:`forgetting` of every RL seed's chain, stacked: one row per RL seed and earlier domain, columns
    :data:`DROP_TABLE_COLUMNS`. ``items_by_seed``: RL seed -> :func:`chain_items`; ``options`` go to
    :func:`forgetting`. Introduced in ``04_sequential_rl``."""
    tables = [forgetting(items, **options).assign(rl_seed=seed) for seed, items in items_by_seed.items()]
    return pd.concat(tables, ignore_index=True)[list(DROP_TABLE_COLUMNS)]


def drop_splits(items_by_seed: Mapping[int, Mapping[str, pd.DataFrame]], domain: str, end: str) -> pd.DataFrame:
    """:func:`drop_breakdown` of ``domain`` from right after its own stage to the checkpoint ``end`` (the
    chain's last stage), one row per RL seed (``RL seed <s>``), plus the shares of the lost items ``lost to
    convention`` and ``lost to wrong content`` (NaN when none was lost). Introduced in ``04_sequential_rl``."""
    split = pd.DataFrame([drop_breakdown(items[domain], items[end], domain).rename(f"RL seed {seed}")
                          for seed, items in items_by_seed.items()])
    lost = split["lost"].where(split["lost"] > 0)
    split["lost to convention"] = split["lost: right content, wrong convention"] / lost
    split["lost to wrong content"] = split["lost: wrong content"] / lost
    return split


def world_drops(worlds: Mapping[str, Mapping[str, pd.DataFrame]], domain: str) -> pd.DataFrame:
    """``domain``'s :func:`forgetting` row in each world's chain (``worlds``: world name ->
    :func:`chain_items`): rows the worlds, columns ``before``, ``after``, ``change``, ``ci_low``,
    ``ci_high``, ``p_value`` (floats). Introduced in ``04_sequential_rl``."""
    columns = ["before", "after", "change", "ci_low", "ci_high", "p_value"]
    rows = {name: forgetting(items).set_index("domain").loc[domain, columns] for name, items in worlds.items()}
    return pd.DataFrame(rows, index=columns).T.astype(float)
