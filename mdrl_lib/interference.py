"""What a drop is made of, and the controls that tell its explanations apart.

Introduced in notebook ``04_sequential_rl``. Per-item results (:meth:`mdrl_lib.kit.Kit.item_results`)
say what the verifier read in each completion; :func:`error_category` sorts an item into one of four
kinds of answer, :func:`breakdown` counts them, and :func:`drop_breakdown` says, for the items a domain
lost between two checkpoints, what they became: answers in the wrong convention or wrong content.
:func:`control_specs` builds the artifacts that separate the cheap explanations of a drop from the
paper's (more of the same domain, optional; RL on the later domains with the real stages' group rewards
replayed, permuted within each group whatever the completions, several control seeds; a random Gaussian
displacement of the real chain's size, :class:`RandomDirections`).
GRPO's per-step diagnostics of a run (:func:`run_diagnostics`) and the distance it moved
(:func:`displacement_norm`) show whether a control moves like RL.

Paired over the same held-out items: :func:`paired_change` (one domain, two checkpoints),
:func:`stage_changes` (every domain over every stage: forgetting and transfer), :func:`forgetting` (each
domain from its own stage to the chain's end) and :func:`control_table` (the damaged domain under each
control, and the real chain's end against each control's end). Notebook 04's tables over stages, RL
seeds and worlds: :func:`change_matrix`, :func:`starred_changes`, :func:`seed_spread`,
:func:`chain_curves`, :func:`drops_by_seed`, :func:`drop_splits`, :func:`world_drops`. Notebook 04's
recipe (:mod:`mdrl_lib.recipes.nb04`) lists every artifact it asks the kit for.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

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


REPLAYED = "replayed rewards"  # the replayed control's name; replicates are "replayed rewards (seed <s>)"
REAL = "real chain"
MORE = "more of the same"


def control_seeds(rl_seed: int, replicates: int) -> tuple[int, ...]:
    """The RL seeds of the replayed control's replicates: ``rl_seed``, ``rl_seed + 1``, ... (the first shares
    the real chain's trainer seed, so its first step samples the same completions)."""
    if replicates < 1:
        raise ValueError(f"replicates must be >= 1, got {replicates}")
    return tuple(rl_seed + i for i in range(replicates))


def replicate_name(seed: int) -> str:
    """The control table's name of the replayed control's replicate with RL seed ``seed``."""
    return f"{REPLAYED} (seed {seed})"


def control_specs(kit, order=None, domain: str = "math", rl_seed: int = 0, replicates: int = 3, *,
                  more_of_the_same: bool = True) -> dict[str, object]:
    """The artifacts that separate the explanations of ``domain``'s drop along the chain ``order``.

    All start from the checkpoint right after ``domain``'s stage and take the same number of RL steps
    as the later stages of the chain (the distance rule fixed in advance, ``[C0] distance_rule`` of the
    rules file: same steps, same rate schedule):

    - ``real chain``: the chain's later stages (the paper's setting);
    - ``replayed rewards (seed <s>)``, one per control seed (:func:`control_seeds`): the same later domains,
      each stage replaying the real stage's recorded rewards (``Stage(..., reward="replayed", replay=<real
      stage>)``, :func:`mdrl_lib.training.replayed_reward`): at its ``t``-th step group ``g`` gets a random
      permutation of the real run's group ``g`` rewards at step ``t``, whatever the control's completions. Every
      step has exactly the real run's zero-advantage groups and advantage sizes by construction, and since the
      rewards do not depend on the completions the updates learn nothing about those domains;
    - ``more of the same`` (only with ``more_of_the_same``): the same number of steps continuing ``domain``
      itself (notebook 04 leaves it out by default, to keep the toy pipeline's budget).

    Returns {name: spec of the final checkpoint}, plus ``after`` (the checkpoint right after the stage).
    """
    from mdrl_lib.claims.rules import rule

    if rule("C0", "distance_rule") != "same steps":
        raise ValueError(f"control_specs knows the distance rule 'same steps' only, the rules file says "
                         f"{rule('C0', 'distance_rule')!r}")
    domain = check_domain(domain)
    chain = kit.chain_specs(order, rl_seed)
    names = [spec.domain for spec in chain]
    if domain not in names:
        raise ValueError(f"{domain!r} is not in the chain {names}; valid: {', '.join(names)}")
    at = names.index(domain)
    later = chain[at + 1:]
    if not later:
        raise ValueError(f"{domain!r} is the chain's last stage: no later stage can damage it")
    after = chain[at]
    out: dict[str, object] = {"after": after, REAL: chain[-1]}
    for seed in control_seeds(rl_seed, replicates):
        control = after
        for spec in later:
            control = Stage(control, spec.domain, steps=spec.steps, rl_seed=seed, reward="replayed", replay=spec)
        out[replicate_name(seed)] = control
    if more_of_the_same:
        steps = sum(spec.resolved_steps(kit) for spec in later)
        out[MORE] = Stage(after, domain, rl_seed=rl_seed, steps=steps)
    return out


def replicate_names(controls: Mapping[str, object]) -> list[str]:
    """The names of the replayed control's replicates among ``controls`` (:func:`control_specs`), in order."""
    return [name for name in controls if name.startswith(REPLAYED)]


def stages_between(end: Spec, start: Spec) -> list[Spec]:
    """The stage specs from right after ``start`` to ``end`` (inclusive), oldest first; ``start`` must be an
    ancestor of ``end``."""
    out, spec = [], end
    while spec != start:
        if spec is None or isinstance(spec, Base):
            raise ValueError(f"{start.label()} is not an ancestor of {end.label()}")
        out.append(spec)
        spec = getattr(spec, "parent", None)
    return out[::-1]


# ---- GRPO diagnostics and the distance a run moved ----------------------------------------------------

def stage_diagnostics(kit, spec: Spec) -> pd.DataFrame | None:
    """GRPO's per-step diagnostics of a stored stage (:data:`mdrl_lib.training.DIAGNOSTICS`: zero-advantage
    share, mean |advantage|, loss, entropy), one row per optimizer step (column ``step`` from 1), or ``None``
    when the stage was built before the kit recorded them ("not recorded"). Introduced in ``04_sequential_rl``."""
    log = kit.get(spec).metrics.get("log", {})
    diagnostics = log.get("diagnostics")
    if not diagnostics:
        return None
    table = pd.DataFrame(diagnostics)
    table.insert(0, "step", range(1, len(table) + 1))
    return table.astype(float)


def stage_own_rewards(kit, spec: Spec) -> list[float] | None:
    """The mean verifier reward of a stored stage's own sampled completions at each call of its reward function
    (one optimizer step at toy scale): from its :data:`~mdrl_lib.training.GROUP_REWARDS_FILE`, the rewards its
    trainer was given for a verifier stage, what the verifier said of the same completions for a control (whose
    trainer was given other rewards). ``None`` when the stage stored no group rewards. Introduced in
    ``04_sequential_rl``: a replayed control's rewards are the real run's, so only this shows what its own
    completions are worth as it trains."""
    import json

    from mdrl_lib.training import GROUP_REWARDS_FILE

    where = getattr(kit.get(spec), "path", None)
    path = Path(where) / GROUP_REWARDS_FILE if where is not None else None
    if path is None or not path.is_file():
        return None
    record = json.loads(path.read_text())
    calls = record.get("calls") if record.get("mode") == "verifier" else record.get("verifier_calls")
    if not calls:
        return None
    return [sum(sum(g) for g in call) / sum(len(g) for g in call) for call in calls]


OWN_REWARD = "own_reward"  # run_diagnostics' column: mean verifier reward of the run's own completions per step


def run_diagnostics(kit, runs: Mapping[str, Spec], start: Spec) -> pd.DataFrame:
    """Per-step GRPO diagnostics of each run in ``runs`` (name -> its last stage) over its stages after ``start``,
    stacked: columns ``run``, ``stage`` (the stage's domain), ``step`` (counted over the run's stages),
    ``recorded``, the :data:`~mdrl_lib.training.DIAGNOSTICS` and ``own_reward`` (:func:`stage_own_rewards`; NaN
    where not stored). A stage built before diagnostics were recorded gives one row with ``recorded`` False and
    NaN values. Introduced in ``04_sequential_rl``."""
    from mdrl_lib.training import DIAGNOSTICS

    frames = []
    for name, end in runs.items():
        offset = 0
        for spec in stages_between(end, start):
            table = stage_diagnostics(kit, spec)
            if table is None:
                table = pd.DataFrame([{"step": offset + 1, **{d: float("nan") for d in DIAGNOSTICS}}])
                recorded = False
            else:
                table = table.assign(step=table["step"] + offset)
                recorded = True
            own = stage_own_rewards(kit, spec) if recorded else None
            table[OWN_REWARD] = own if own is not None and len(own) == len(table) else float("nan")
            offset = int(table["step"].max())
            frames.append(table.assign(run=name, stage=spec.domain, recorded=recorded))
    columns = ["run", "stage", "step", "recorded", *DIAGNOSTICS, OWN_REWARD]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def per_step(diagnostics: pd.DataFrame, name: str) -> dict[str, list[float] | None]:
    """Each run's values of the diagnostic ``name`` step by step over all its stages (a :func:`run_diagnostics`
    table): run -> list (one value per step, in step order), or ``None`` when any of its stages was not recorded.
    Introduced in ``04_sequential_rl`` (C0(b)'s zero-advantage premise compares these step by step)."""
    out: dict[str, list[float] | None] = {}
    for run, group in diagnostics.groupby("run", sort=False):
        out[run] = ([float(v) for v in group.sort_values("step")[name]] if bool(group["recorded"].all()) else None)
    return out


def diagnostics_means(diagnostics: pd.DataFrame) -> pd.DataFrame:
    """Each run's mean of each diagnostic over all its steps (a :func:`run_diagnostics` table): rows the runs,
    columns the diagnostics and ``recorded`` (False when any of its stages was not recorded, and then every
    mean is NaN: a mean over part of a run is not the run's)."""
    from mdrl_lib.training import DIAGNOSTICS

    rows = {}
    for name, group in diagnostics.groupby("run", sort=False):
        recorded = bool(group["recorded"].all())
        rows[name] = {"recorded": recorded, **{d: (float(group[d].mean()) if recorded else float("nan"))
                                                 for d in DIAGNOSTICS}}
    return pd.DataFrame.from_dict(rows, orient="index")


def displacement_norm(kit, start: Spec, end: Spec) -> float:
    """||theta_end - theta_start||, the global L2 norm of the weight change from ``start`` to ``end`` over every
    stored tensor (fp32 weights; tied tensors once). Introduced in ``04_sequential_rl``: the distance a run
    moved, which a control must match."""
    before = dict(kit.weights(start))
    total = 0.0
    for name, tensor in kit.weights(end):
        if name not in before or before[name].shape != tensor.shape:
            raise ValueError(f"{start.label()} and {end.label()} hold different tensors ({name})")
        total += float(((tensor.double() - before[name].double()) ** 2).sum())
    return total ** 0.5


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


# ---- the random-direction baseline: a Gaussian displacement of the real chain's size ---------------------

MATCHINGS: tuple[str, ...] = ("per_tensor", "global")
RANDOM_ITEMS = "items.jsonl"


def random_displacement(norms: Mapping[str, float], shapes: Mapping[str, Sequence[int]], generator,
                        matching: str = "per_tensor") -> dict:
    """A Gaussian random displacement with a prescribed size: {name: tensor of ``shapes[name]``}.

    Each tensor is drawn i.i.d. N(0, 1) (names in sorted order, from ``generator``, a ``torch.Generator``), then
    scaled: ``per_tensor`` makes tensor ``name``'s L2 norm exactly ``norms[name]`` (the layer-by-layer size of
    the real displacement, hence its global norm too); ``global`` scales all tensors by one factor so the global
    norm is sqrt(sum of ``norms``^2) (the direction's share per tensor is then proportional to its size, not
    to where RL moved). Float64 arithmetic, float32 result. Introduced in ``04_sequential_rl``."""
    import torch

    if matching not in MATCHINGS:
        raise ValueError(f"unknown matching {matching!r}; valid: {', '.join(MATCHINGS)}")
    if set(norms) != set(shapes):
        raise ValueError(f"norms and shapes name different tensors: {sorted(set(norms) ^ set(shapes))[:3]}")
    draws = {n: torch.randn(tuple(shapes[n]), generator=generator, dtype=torch.float64) for n in sorted(shapes)}
    if matching == "per_tensor":
        out = {}
        for name, z in draws.items():
            size = float(z.norm())
            out[name] = (z * (float(norms[name]) / size) if size > 0 else z * 0).float()
        return out
    target = sum(float(v) ** 2 for v in norms.values()) ** 0.5
    size = sum(float((z ** 2).sum()) for z in draws.values()) ** 0.5
    return {n: (z * (target / size)).float() for n, z in draws.items()}


@dataclass(frozen=True)
class RandomDirections(Spec):
    """``domain``'s held-out per-item scores at ``draws`` random displacements of ``start``, each of the size of
    the displacement from ``start`` to ``end`` (:func:`random_displacement` with ``matching``; draw ``i`` seeded
    by ``seed`` and ``i``). A derived artifact (introduced in ``04_sequential_rl``: the random-direction
    baseline beside C0's controls): the displaced models live in memory only; ``items.jsonl`` holds the
    scores (columns ``draw``, ``domain``, ``item``, ``score``), the manifest each draw's mean and norm."""

    start: Spec
    end: Spec
    domain: str = "math"
    draws: int = 10
    seed: int = 0
    matching: str = "per_tensor"
    kind: ClassVar[str] = "random_directions"

    def __post_init__(self) -> None:
        from mdrl_lib.config import ConfigError, Param

        object.__setattr__(self, "domain", check_domain(self.domain))
        Param(int, "", minimum=1, maximum=10_000).check("random_directions draws", self.draws)
        Param(int, "", minimum=0, maximum=2**31 - 1).check("random_directions seed", self.seed)
        if self.matching not in MATCHINGS:
            raise ConfigError(f"random_directions matching: unknown value {self.matching!r}; valid choices: "
                              f"{', '.join(MATCHINGS)}")

    def inputs(self) -> tuple[Spec, ...]:
        return (self.start, self.end)

    def key_fields(self, kit) -> dict:
        return {"start": kit.key(self.start), "end": kit.key(self.end), "domain": self.domain, "draws": self.draws,
                "seed": self.seed, "matching": self.matching, "max_new_tokens": kit.config.rl.max_completion_length,
                "dtype": str(kit.compute_dtype).removeprefix("torch.")}

    def build(self, kit, directory: Path, progress: bool) -> dict:
        import json
        import time

        import torch

        from mdrl_lib.evaluation import score_items
        from mdrl_lib.recovery import _load_weights
        from mdrl_lib.training import stage_seed

        began = time.perf_counter()
        start = dict(kit.weights(self.start))
        end = dict(kit.weights(self.end))
        norms = {n: float((end[n].double() - start[n].double()).norm()) for n in start}
        shapes = {n: tuple(t.shape) for n, t in start.items()}
        model, tokenizer = kit.load(self.start)
        rows, frames = [], []
        for draw in range(self.draws):
            generator = torch.Generator().manual_seed(stage_seed(self.seed, "random-direction", str(draw)))
            step = random_displacement(norms, shapes, generator, self.matching)
            _load_weights(model, {n: start[n] + step[n] for n in start})
            items = score_items(model, tokenizer, {self.domain: kit.evals[self.domain]},
                                max_new_tokens=kit.config.rl.max_completion_length,
                                batch_size=kit.config.compute.eval_batch_size or None)
            frames.append(items[["domain", "item", "score"]].assign(draw=draw))
            norm = sum(float((t.double() ** 2).sum()) for t in step.values()) ** 0.5
            rows.append({"draw": draw, "norm": round(norm, 6), "score": round(float(items["score"].mean()), 6)})
        table = pd.concat(frames, ignore_index=True)[["draw", "domain", "item", "score"]]
        with open(directory / RANDOM_ITEMS, "w") as handle:
            for row in table.to_dict("records"):
                handle.write(json.dumps({k: (float(v) if k == "score" else v) for k, v in row.items()}) + "\n")
        return {"draws": rows, "real_norm": round(sum(v ** 2 for v in norms.values()) ** 0.5, 6),
                "seconds": round(time.perf_counter() - began, 2)}

    def open(self, kit, artifact) -> pd.DataFrame:
        """The per-item scores: columns ``draw``, ``domain``, ``item``, ``score``."""
        return pd.read_json(artifact.path / RANDOM_ITEMS, orient="records", lines=True)

    def toy_seconds(self, config) -> float:
        return 0.5 * self.draws

    def label(self) -> str:
        return f"{self.draws} random directions from {self.start.label()} of the size of {self.end.label()}"


RANDOM_ROW = "random directions"


def random_direction_changes(start_items: pd.DataFrame, draws: pd.DataFrame, domain: str) -> pd.DataFrame:
    """``domain``'s change from the start (per-item table, :meth:`Kit.item_results`) at each random draw (the
    :class:`RandomDirections` table): one row per draw, columns ``draw``, ``before``, ``after``, ``change``
    (mean after - mean before over the same items). Introduced in ``04_sequential_rl``."""
    before = item_scores(start_items, domain)
    rows = []
    for draw, group in draws[draws["domain"] == domain].groupby("draw", sort=True):
        after = group.set_index("item")["score"].astype(float).sort_index()
        if not after.index.equals(before.index):
            raise ValueError(f"draw {draw} was scored on other {domain} items than the start")
        rows.append({"draw": int(draw), "before": float(before.mean()), "after": float(after.mean()),
                     "change": float(after.mean() - before.mean())})
    return pd.DataFrame(rows, columns=["draw", "before", "after", "change"])


def random_direction_row(start_items: pd.DataFrame, draws: pd.DataFrame, reference_end: pd.DataFrame,
                         domain: str, *, level: float = 0.95, n_boot: int = 10_000, seed: int = 0) -> dict:
    """The random-direction baseline as one row of a :func:`control_table` (columns :data:`CONTROL_COLUMNS`):
    each item's score averaged over the draws (a fraction), its change from ``start_items`` and the real end
    (``reference_end``) minus it, both paired over the items by the fractional test (paired bootstrap interval,
    signed-rank p), plus ``draws``, ``change_min`` and ``change_max`` (the range of the draws' changes).
    Introduced in ``04_sequential_rl``."""
    from mdrl_lib.stats import paired_difference

    before = item_scores(start_items, domain)
    pooled = draws[draws["domain"] == domain].groupby("item")["score"].mean().sort_index()
    real = item_scores(reference_end, domain)
    if not (pooled.index.equals(before.index) and real.index.equals(before.index)):
        raise ValueError(f"the random draws, the start and the real end hold different {domain} items")
    r = paired_difference(before.to_numpy(), pooled.to_numpy(), "fractional", level=level, n_boot=n_boot, seed=seed)
    v = paired_difference(pooled.to_numpy(), real.to_numpy(), "fractional", level=level, n_boot=n_boot, seed=seed)
    changes = random_direction_changes(start_items, draws, domain)["change"]
    return {"control": f"{RANDOM_ROW} (mean of {draws['draw'].nunique()})", "n": r.n, "before": r.mean_before,
            "after": r.mean_after, "change": r.diff, "ci_low": r.ci_low, "ci_high": r.ci_high, "p_value": r.p_value,
            "test": r.test, "minus_reference": v.diff, "minus_reference_ci_low": v.ci_low,
            "minus_reference_ci_high": v.ci_high, "minus_reference_p": v.p_value,
            "draws": int(draws["draw"].nunique()), "change_min": float(changes.min()),
            "change_max": float(changes.max())}

