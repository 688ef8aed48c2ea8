"""Paired comparisons of two checkpoints scored on the same held-out items, and intervals over seeds.

Introduced in ``04_sequential_rl`` (a domain's drop after a later RL stage); used again in
``05_refresh_vs_rollback`` (a recovery after a refresh). Both checkpoints answer the SAME items, so a
difference of their mean scores is judged with a paired test, not with the standard error of one
evaluation: the items both get right or both get wrong carry no information about the change.

Scores are per item: 0/1 for Math and QA (McNemar's exact test, Newcombe's interval), fractions in
[0, 1] for Code and CW (a paired bootstrap interval and the Wilcoxon signed-rank test).
``paired_difference`` picks between them; ``paired_difference_table`` does it per domain from a tidy
table. Differences are always ``after - before``: negative is a drop.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as _sps

KINDS = ("auto", "binary", "fractional")
ZERO_METHODS = ("wilcox", "pratt", "zsplit")
_BOOT_CHUNK = 1024  # bootstrap replicates drawn at a time: bounds memory at 1024 x n indices


# ---- input checks --------------------------------------------------------------------------------

def _check_level(level: float) -> float:
    if not isinstance(level, (int, float)) or not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be a number strictly between 0 and 1 (e.g. 0.95), got {level!r}")
    return float(level)


def _vector(values, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise TypeError(f"{name} must be numeric scores (0/1 or fractions), got dtype {array.dtype}")
    array = array.astype(float)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one score per item (1-D), got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty: no items to compare")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds {int((~np.isfinite(array)).sum())} NaN or infinite scores")
    return array


def _pair(before, after) -> tuple[np.ndarray, np.ndarray]:
    before, after = _vector(before, "before"), _vector(after, "after")
    if before.shape != after.shape:
        raise ValueError(f"before and after must score the same items: got {before.size} and {after.size} "
                         "scores")
    return before, after


def _is_binary(values: np.ndarray) -> bool:
    return bool(np.isin(values, (0.0, 1.0)).all())


def _check_binary(values: np.ndarray, name: str) -> None:
    if not _is_binary(values):
        bad = np.unique(values[~np.isin(values, (0.0, 1.0))])
        raise ValueError(f"{name} must hold only 0 and 1 for McNemar's test; found {bad[:5].tolist()}"
                         " (use paired_bootstrap / signed_rank for fractional scores)")


# ---- McNemar ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class McNemarResult:
    """McNemar's exact test on paired 0/1 scores. ``b``: items right before and wrong after (1 -> 0);
    ``c``: wrong before and right after (0 -> 1); ``diff = mean_after - mean_before = (c - b) / n``."""

    n: int
    b: int
    c: int
    mean_before: float
    mean_after: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    level: float
    ci_method: str = "newcombe"


def _wilson(successes: int, n: int, z: float) -> tuple[float, float]:
    p = successes / n
    centre = p + z * z / (2 * n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    return (centre - half) / scale, (centre + half) / scale


def newcombe_paired_interval(both: int, only_first: int, only_second: int, neither: int,
                             level: float = 0.95) -> tuple[float, float]:
    """Newcombe's (1998) hybrid score interval ("method 10", square-and-add of two Wilson intervals)
    for ``p_first - p_second`` of two paired proportions, from the paired 2x2 counts: ``both`` (1, 1),
    ``only_first`` (1, 0), ``only_second`` (0, 1), ``neither`` (0, 0). The correlation of the two
    proportions enters with Newcombe's continuity correction (0 when ``ad - bc`` lies in [0, n/2]).
    Better coverage than the Wald interval when a score is near 0 or 1 or the sample is small; always
    inside [-1, 1]. Introduced in ``04_sequential_rl``."""
    level = _check_level(level)
    counts = (both, only_first, only_second, neither)
    if any(int(k) != k or k < 0 for k in counts):
        raise ValueError(f"the 2x2 counts must be non-negative integers, got {counts}")
    n = both + only_first + only_second + neither
    if n == 0:
        raise ValueError("the 2x2 counts are all zero: no items to compare")
    z = float(_sps.norm.ppf(0.5 + level / 2))
    first, second = both + only_first, both + only_second
    p1, p2 = first / n, second / n
    l1, u1 = _wilson(first, n, z)
    l2, u2 = _wilson(second, n, z)
    margins = first * (n - first) * second * (n - second)
    phi = 0.0
    if margins > 0:
        cross = both * neither - only_first * only_second
        if cross > n / 2:
            phi = (cross - n / 2) / np.sqrt(margins)
        elif cross < 0:
            phi = cross / np.sqrt(margins)
    diff = p1 - p2
    low = diff - np.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    high = diff + np.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    return float(low), float(high)


def mcnemar_exact(before: Sequence[float], after: Sequence[float], level: float = 0.95) -> McNemarResult:
    """McNemar's exact test for paired 0/1 scores ``before`` and ``after`` (shape ``(n,)`` each, the
    same items in the same order).

    The p-value is the exact two-sided conditional test: given ``b + c`` discordant items, ``min(b, c)``
    is Binomial(b + c, 1/2) under "no change", so ``p = min(1, 2 * P(X <= min(b, c)))``; with
    ``b + c = 0`` nothing changed and ``p = 1``. The interval for ``mean_after - mean_before`` at
    ``level`` is Newcombe's hybrid score interval (:func:`newcombe_paired_interval`).
    Introduced in ``04_sequential_rl``."""
    level = _check_level(level)
    before, after = _pair(before, after)
    _check_binary(before, "before")
    _check_binary(after, "after")
    n = before.size
    b = int(((before == 1) & (after == 0)).sum())
    c = int(((before == 0) & (after == 1)).sum())
    both = int(((before == 1) & (after == 1)).sum())
    discordant = b + c
    p_value = 1.0 if discordant == 0 else min(1.0, 2.0 * float(_sps.binom.cdf(min(b, c), discordant, 0.5)))
    # Newcombe's interval is for p_first - p_second: "first" is after, so only_first = c, only_second = b.
    low, high = newcombe_paired_interval(both, c, b, n - both - b - c, level)
    return McNemarResult(n=n, b=b, c=c, mean_before=float(before.mean()), mean_after=float(after.mean()),
                         diff=(c - b) / n, ci_low=low, ci_high=high, p_value=p_value, level=level)


# ---- paired bootstrap ------------------------------------------------------------------------------

@dataclass(frozen=True)
class BootstrapResult:
    """Paired bootstrap of ``mean(after - before)``: a percentile interval at ``level`` and a two-sided
    p-value for a zero mean difference, from ``n_boot`` resamples of items drawn with ``seed``."""

    n: int
    mean_before: float
    mean_after: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    level: float
    n_boot: int
    seed: int


def _bootstrap_means(differences: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = differences.size
    means = np.empty(n_boot)
    for start in range(0, n_boot, _BOOT_CHUNK):
        count = min(_BOOT_CHUNK, n_boot - start)
        means[start:start + count] = differences[rng.integers(0, n, size=(count, n))].mean(axis=1)
    return means


def paired_bootstrap(before: Sequence[float], after: Sequence[float], n_boot: int = 10_000, seed: int = 0,
                     level: float = 0.95) -> BootstrapResult:
    """Paired bootstrap for ``mean(after - before)`` over items (``before``, ``after``: shape ``(n,)``,
    the same items in the same order; any finite scores, typically fractions in [0, 1]).

    Items are resampled with replacement (a seeded ``numpy.random.Generator``), keeping each item's two
    scores together, so the pairing is respected. The interval is the percentile interval of the
    ``n_boot`` resampled mean differences (percentile rather than BCa: the mean of bounded differences
    is close to symmetric at the kit's hundreds of items, and percentile stays defined when most
    differences are 0). The p-value tests "mean difference 0" with the same resamples shifted to the
    null (Efron and Tibshirani 1993, sec. 16.4): the share of resampled means of the centred
    differences ``d - mean(d)`` at least as far from 0 as the observed mean, counted as
    ``(1 + hits) / (1 + n_boot)`` so that it is never 0. It is an approximation that improves with the
    number of items; when every difference is 0 it is 1. Introduced in ``04_sequential_rl``."""
    level = _check_level(level)
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer (e.g. 10_000), got {n_boot!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    before, after = _pair(before, after)
    differences = after - before
    observed = float(differences.mean())
    means = _bootstrap_means(differences, int(n_boot), int(seed))
    alpha = 1.0 - level
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    # Resampling the centred differences gives means - observed, with the same draws.
    tolerance = 1e-12 * max(1.0, abs(observed))
    hits = int((np.abs(means - observed) >= abs(observed) - tolerance).sum())
    p_value = 1.0 if np.all(differences == 0) else (1 + hits) / (1 + int(n_boot))
    return BootstrapResult(n=before.size, mean_before=float(before.mean()), mean_after=float(after.mean()),
                           diff=observed, ci_low=float(low), ci_high=float(high), p_value=float(p_value),
                           level=level, n_boot=int(n_boot), seed=int(seed))


# ---- Wilcoxon signed-rank --------------------------------------------------------------------------

@dataclass(frozen=True)
class SignedRankResult:
    """Wilcoxon signed-rank test of ``after - before``. ``statistic`` is scipy's (the smaller of the two
    rank sums, two-sided); ``n_nonzero`` counts items whose score changed; ``diff`` is the plain mean
    difference (not the Hodges-Lehmann estimate)."""

    n: int
    n_nonzero: int
    mean_before: float
    mean_after: float
    diff: float
    statistic: float
    p_value: float
    zero_method: str


def signed_rank(before: Sequence[float], after: Sequence[float], zero_method: str = "wilcox") -> SignedRankResult:
    """Two-sided Wilcoxon signed-rank test of ``after - before`` (shape ``(n,)`` each, the same items)
    through ``scipy.stats.wilcoxon``, with the plain mean difference beside it.

    ``zero_method``: how items whose score did not change (difference 0, most items here) are treated:
    ``"wilcox"`` (default) drops them before ranking, so the test asks only whether the changed items
    moved more up than down; ``"pratt"`` ranks them and then drops their ranks (more conservative);
    ``"zsplit"`` splits their ranks between the two sides. scipy 1.16 (``method="auto"``) uses the
    exact null distribution when there are no ties or zeros and ``n <= 50``, an exhaustive sign-flip
    permutation when there are and ``n <= 13``, and the normal approximation with tie correction
    otherwise. When no score changed, ``p = 1`` (scipy would return NaN). Introduced in
    ``04_sequential_rl``."""
    if zero_method not in ZERO_METHODS:
        raise ValueError(f"unknown zero_method {zero_method!r}; choose one of {list(ZERO_METHODS)}")
    before, after = _pair(before, after)
    differences = after - before
    nonzero = int((differences != 0).sum())
    if nonzero == 0:
        statistic, p_value = 0.0, 1.0
    else:
        result = _sps.wilcoxon(after, before, zero_method=zero_method, alternative="two-sided", method="auto")
        statistic, p_value = float(result.statistic), float(result.pvalue)
    return SignedRankResult(n=before.size, n_nonzero=nonzero, mean_before=float(before.mean()),
                            mean_after=float(after.mean()), diff=float(differences.mean()),
                            statistic=statistic, p_value=p_value, zero_method=zero_method)


# ---- one row per comparison ------------------------------------------------------------------------

@dataclass(frozen=True)
class PairedDifference:
    """One paired comparison: ``diff = mean_after - mean_before`` with its interval and p-value.
    ``test`` names the p-value's test, ``ci_method`` the interval's; ``b`` and ``c`` (items 1 -> 0 and
    0 -> 1) only for McNemar, else None."""

    n: int
    mean_before: float
    mean_after: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    test: str
    ci_method: str
    level: float
    b: int | None = None
    c: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def paired_difference(before: Sequence[float], after: Sequence[float], kind: str = "auto", *,
                      level: float = 0.95, n_boot: int = 10_000, seed: int = 0) -> PairedDifference:
    """The paired comparison fit for the scores: ``kind="binary"`` (0/1 scores: McNemar's exact p and
    Newcombe's interval), ``"fractional"`` (paired bootstrap percentile interval and Wilcoxon
    signed-rank p, zeros dropped), or ``"auto"``: binary when every score is 0 or 1, else fractional.
    ``before``, ``after``: shape ``(n,)``, the same items in the same order.
    Introduced in ``04_sequential_rl``."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {list(KINDS)}")
    level = _check_level(level)
    before, after = _pair(before, after)
    if kind == "auto":
        kind = "binary" if _is_binary(before) and _is_binary(after) else "fractional"
    if kind == "binary":
        m = mcnemar_exact(before, after, level=level)
        return PairedDifference(n=m.n, mean_before=m.mean_before, mean_after=m.mean_after, diff=m.diff,
                                ci_low=m.ci_low, ci_high=m.ci_high, p_value=m.p_value, test="mcnemar_exact",
                                ci_method="newcombe", level=level, b=m.b, c=m.c)
    boot = paired_bootstrap(before, after, n_boot=n_boot, seed=seed, level=level)
    rank = signed_rank(before, after)
    return PairedDifference(n=boot.n, mean_before=boot.mean_before, mean_after=boot.mean_after, diff=boot.diff,
                            ci_low=boot.ci_low, ci_high=boot.ci_high, p_value=rank.p_value,
                            test="wilcoxon_signed_rank", ci_method="bootstrap_percentile", level=level)


SCORE_COLUMNS = ("item", "domain", "checkpoint", "score")


def paired_difference_table(scores: pd.DataFrame, before: str, after: str,
                            kind: str | Mapping[str, str] = "auto", *, level: float = 0.95,
                            n_boot: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """One row per domain comparing checkpoint ``after`` with checkpoint ``before`` on the same items.

    ``scores``: a tidy per-item table with columns ``item``, ``domain``, ``checkpoint``, ``score`` (one
    row per item, domain and checkpoint). Items are paired by ``(domain, item)``; every item of a domain
    must be scored by both checkpoints. ``kind``: as in :func:`paired_difference`, for all domains or as
    a mapping ``{domain: kind}`` (domains it leaves out get ``"auto"``); pass
    ``{"code": "fractional", "cw": "fractional"}`` to keep those domains on one test even when a run's
    fractional scores happen to be all 0 or 1. Columns: ``domain`` and the
    fields of :class:`PairedDifference`; domains in order of first appearance.
    Introduced in ``04_sequential_rl``."""
    if not isinstance(scores, pd.DataFrame):
        raise TypeError(f"scores must be a pandas DataFrame with columns {list(SCORE_COLUMNS)}, "
                        f"got {type(scores).__name__}")
    missing = [c for c in SCORE_COLUMNS if c not in scores.columns]
    if missing:
        raise ValueError(f"scores lacks columns {missing}; it needs {list(SCORE_COLUMNS)}")
    checkpoints = list(dict.fromkeys(scores["checkpoint"]))
    for name in (before, after):
        if name not in checkpoints:
            raise ValueError(f"unknown checkpoint {name!r}; the table holds {checkpoints}")
    if before == after:
        raise ValueError(f"before and after are the same checkpoint {before!r}")
    duplicated = scores.duplicated(["domain", "item", "checkpoint"])
    if duplicated.any():
        first = scores.loc[duplicated, ["domain", "item", "checkpoint"]].iloc[0].tolist()
        raise ValueError(f"{int(duplicated.sum())} (domain, item, checkpoint) rows appear more than once, "
                         f"e.g. {first}")
    kinds = dict(kind) if isinstance(kind, Mapping) else {}
    for domain, k in kinds.items():
        if k not in KINDS:
            raise ValueError(f"unknown kind {k!r} for domain {domain!r}; choose one of {list(KINDS)}")
    default_kind = "auto" if isinstance(kind, Mapping) else kind
    if default_kind not in KINDS:
        raise ValueError(f"unknown kind {default_kind!r}; choose one of {list(KINDS)}")
    rows = []
    pair = scores[scores["checkpoint"].isin([before, after])]
    for domain in dict.fromkeys(pair["domain"]):
        wide = pair[pair["domain"] == domain].pivot(index="item", columns="checkpoint", values="score")
        wide = wide.reindex(columns=[before, after])
        unpaired = wide.isna().any(axis=1)
        if unpaired.any():
            raise ValueError(f"domain {domain!r}: {int(unpaired.sum())} items are scored by only one of "
                             f"{before!r} and {after!r} (e.g. item {wide.index[unpaired][0]!r}); "
                             "a paired comparison needs both")
        result = paired_difference(wide[before].to_numpy(), wide[after].to_numpy(),
                                   kinds.get(domain, default_kind), level=level, n_boot=n_boot, seed=seed)
        rows.append({"domain": domain, **result.as_dict()})
    return pd.DataFrame(rows)


# ---- across seeds ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SeedInterval:
    """Mean of one figure across ``n`` seeds, its sample standard deviation (``ddof=1``) and the
    Student t interval ``mean +- t_{n-1} * sd / sqrt(n)`` at ``level``."""

    n: int
    mean: float
    sd: float
    ci_low: float
    ci_high: float
    level: float


def seed_mean_interval(values: Sequence[float], level: float = 0.95) -> SeedInterval:
    """Mean across seeds of one figure (``values``: shape ``(n_seeds,)``, ``n_seeds >= 2``) with a
    Student t interval (``scipy.stats.t`` with ``n - 1`` degrees of freedom) and the standard deviation.
    Assumes the seeds' values are independent and roughly normal; with 2 or 3 seeds the interval is
    wide, as it should be. Introduced in ``04_sequential_rl``."""
    level = _check_level(level)
    values = _vector(values, "values")
    n = values.size
    if n < 2:
        raise ValueError(f"a t interval needs at least 2 seeds, got {n}")
    mean = float(values.mean())
    sd = float(values.std(ddof=1))
    half = float(_sps.t.ppf(0.5 + level / 2, df=n - 1)) * sd / np.sqrt(n)
    return SeedInterval(n=n, mean=mean, sd=sd, ci_low=float(mean - half), ci_high=float(mean + half), level=level)
