"""Claim checks: each notebook ends by holding one of the paper's claims against its own run.

Introduced in notebook ``02_shared_routes`` (claims C3 and C4). A :class:`ClaimCheck` holds the claim,
the paper's figure, this run's figure, the baseline or control it was held against, a verdict
(``True``, ``False``, or ``None`` when this run cannot test it) and why. :func:`record_check` writes
it to ``<run_dir>/claims/<claim>-<name>.json`` so that a ledger can gather every notebook's checks.

C0 is the task-level observation the claims explain (a later domain's RL lowers an earlier domain;
notebook ``04_sequential_rl``, :func:`check_c0`). The verdict functions (:func:`check_c3`, :func:`check_c4`,
...) take measured numbers, not models, and
state their rule in their docstrings: the rule is fixed before the run, and the notebook prints the
numbers it was applied to.
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

CLAIMS_DIR = "claims"
# C0 is the task-level observation the paper starts from (a later domain's RL lowers an earlier domain);
# C1-C7 are the claims that explain it.
CLAIM_IDS: tuple[str, ...] = ("C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@dataclass(frozen=True)
class ClaimCheck:
    """One claim held against one run.

    ``claim``: the paper's claim id (``"C3"``); ``name``: a short slug naming this check
    (``"math-qa-gradients"``), unique per claim; ``statement``: the claim in words; ``paper``: the
    paper's figure; ``measured``: this run's figure, in words with its numbers; ``baseline``: what it
    was held against (chance, a control, a noise floor); ``supported``: the verdict (``None``: not
    testable on this run); ``why``: the rule and which part of it decided; ``figures``: the numbers
    behind the verdict by name (floats, ints, strings or None), for a ledger to tabulate.
    """

    claim: str
    name: str
    statement: str
    paper: str
    measured: str
    baseline: str
    supported: bool | None
    why: str
    figures: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.claim not in CLAIM_IDS:
            raise ValueError(f"unknown claim {self.claim!r}; valid claims: {', '.join(CLAIM_IDS)}")
        if not (isinstance(self.name, str) and _NAME.match(self.name)):
            raise ValueError(f"check name {self.name!r} must be a lowercase slug of letters, digits and '-'")
        if self.supported not in (True, False, None):
            raise TypeError(f"supported must be True, False or None, got {self.supported!r}")
        object.__setattr__(self, "figures", {k: _plain(v) for k, v in dict(self.figures).items()})

    @property
    def verdict(self) -> str:
        """``supported``, ``not supported`` or ``not testable``, as a table shows it."""
        return {True: "supported", False: "not supported", None: "not testable"}[self.supported]

    def as_dict(self) -> dict:
        return asdict(self)


def _plain(value: Any) -> Any:
    """A JSON-ready number or string: numpy and torch scalars become Python ones, nan becomes None."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"a claim figure must be a number, a string or None, got {value!r} ({type(value).__name__})")


def claim_path(run_dir: str | Path, check: ClaimCheck) -> Path:
    """Where ``check`` is recorded: ``<run_dir>/claims/<claim>-<name>.json``."""
    return Path(run_dir) / CLAIMS_DIR / f"{check.claim}-{check.name}.json"


def record_check(kit_or_run_dir, check: ClaimCheck, notebook: str = "") -> Path:
    """Write ``check`` as JSON to ``<run_dir>/claims/<claim>-<name>.json`` and return the path.

    ``kit_or_run_dir``: a :class:`~mdrl_lib.kit.Kit` (its run directory and configuration are recorded
    with the check) or a run directory. The file is written atomically (a temporary file in the same
    directory, then renamed over the old one), so a reader never sees half a record and a rerun replaces
    the previous verdict. Introduced in ``02_shared_routes``.
    """
    if not isinstance(check, ClaimCheck):
        raise TypeError(f"expected a ClaimCheck, got {type(check).__name__}")
    config = getattr(kit_or_run_dir, "config", None)
    run_dir = Path(kit_or_run_dir.run_dir if config is not None else kit_or_run_dir)
    record = {**check.as_dict(), "verdict": check.verdict, "notebook": notebook,
              "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if config is not None:
        record["run"] = {"scale": config.scale, "seed": config.seed, "model": config.model.name}
    path = claim_path(run_dir, check)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp",
                                         delete=False)
    try:
        with handle:
            json.dump(record, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return path


def load_check(path: str | Path) -> ClaimCheck:
    """The :class:`ClaimCheck` recorded at ``path`` (the extra fields of the record are dropped)."""
    record = json.loads(Path(path).read_text())
    names = ClaimCheck.__dataclass_fields__
    return ClaimCheck(**{k: v for k, v in record.items() if k in names})


def checks_table(checks: Sequence[ClaimCheck]) -> pd.DataFrame:
    """One row per check (claim, check, paper, this run, baseline, verdict, why), as a notebook shows them."""
    return pd.DataFrame([{"claim": c.claim, "check": c.name, "paper": c.paper, "this run": c.measured,
                          "baseline / control": c.baseline, "verdict": c.verdict, "why": c.why} for c in checks])


def _fmt(x: float) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.3f}"


# ------------------------------------------------------------------------------------------- C3

C3_STATEMENT = ("Global gradients of two domains are near-orthogonal, yet individual modules conflict "
                "(negative cosine) or cooperate (positive cosine), and cancel in the global average.")
C3_PAPER = ("Math vs QA: global cosine about 0; a most-conflicting and a most-synergistic attention/MLP "
            "module whose effects cancel in the global average")
C3_RATIO = 0.2  # a cosine within this fraction of its noise floor of 0 counts as orthogonal
C3_MIN_FLOOR = 0.2  # below this noise floor a gradient is mostly sampling noise


def check_c3(pair: Sequence[str], global_cosines: Sequence[float], noise_floor: float,
             module_cosines: Mapping[str, Sequence[float]], module_floors: Mapping[str, float],
             cancellation: float | None = None, *, ratio: float = C3_RATIO,
             min_floor: float = C3_MIN_FLOOR) -> ClaimCheck:
    """C3 on one domain pair, from gradient cosines measured on independent batch replicates.

    Inputs: ``global_cosines``, the pair's global gradient cosine on each replicate (replicate r pairs
    batch r of one domain with batch r of the other); ``noise_floor``, the smaller of the two domains'
    same-domain cosines (two independent batches of one domain: how far sampling noise alone pulls two
    gradients of one domain apart); ``module_cosines``, attention/MLP module -> its cross-domain cosine on
    each replicate; ``module_floors``, module -> the smaller same-domain cosine of that module;
    ``cancellation`` (reported only): 1 - |global dot| / sum of |module dots|.

    Rule, fixed before the run. A cosine within ``ratio`` times its noise floor of 0 counts as
    orthogonal; beyond it on the negative side as conflict, on the positive side as cooperation. Then:

    - not testable (``None``) when ``noise_floor < min_floor``: two batches of one domain barely agree,
      so a near-zero cross-domain cosine cannot be told from sampling noise;
    - near-orthogonal when every replicate has ``|global cosine| <= ratio * noise_floor``;
    - a module conflicts when its cosine is ``<= -ratio * module floor`` on every replicate and
      cooperates when it is ``>= +ratio * module floor`` on every replicate (the sign must reproduce on
      independent batches); modules whose own floor is below ``min_floor`` count as neither;
    - supported when near-orthogonal and at least one module conflicts and one cooperates.
    """
    pair = tuple(pair)
    cosines = [float(c) for c in global_cosines]
    if len(pair) != 2:
        raise ValueError(f"pair must name two domains, got {pair!r}")
    if not cosines:
        raise ValueError("global_cosines is empty: give the cosine of at least one replicate")
    replicates = {m: [float(c) for c in v] for m, v in module_cosines.items()}
    if not replicates:
        raise ValueError("module_cosines is empty: give the cosines of the attention/MLP modules")
    if any(len(v) != len(cosines) for v in replicates.values()):
        raise ValueError(f"every module needs one cosine per replicate ({len(cosines)})")
    missing = sorted(set(replicates) - set(module_floors))
    if missing:
        raise ValueError(f"module_floors lacks module(s) {missing}")
    floors = {m: float(module_floors[m]) for m in replicates}
    usable = {m: v for m, v in replicates.items() if floors[m] >= min_floor}
    conflicting = [m for m, v in usable.items() if max(v) <= -ratio * floors[m]]
    cooperating = [m for m, v in usable.items() if min(v) >= ratio * floors[m]]
    mean = {m: sum(v) / len(v) for m, v in replicates.items()}
    worst, best = min(mean, key=mean.get), max(mean, key=mean.get)
    mean_global = sum(cosines) / len(cosines)
    figures = {"global_cosine": mean_global, "max_abs_global_cosine": max(abs(c) for c in cosines),
               "noise_floor": noise_floor, "cancellation": cancellation, "replicates": len(cosines),
               "conflicting_modules": len(conflicting), "cooperating_modules": len(cooperating),
               "testable_modules": len(usable),
               "most_conflicting": worst, "most_conflicting_cosine": mean[worst],
               "most_conflicting_floor": floors[worst],
               "most_synergistic": best, "most_synergistic_cosine": mean[best],
               "most_synergistic_floor": floors[best], "ratio": ratio, "min_floor": min_floor}
    measured = (f"{pair[0]} vs {pair[1]}: global cosine {_fmt(mean_global)} (replicates "
                f"{', '.join(_fmt(c) for c in cosines)}); most conflicting module {worst} "
                f"({_fmt(mean[worst])}, its floor {floors[worst]:.3f}), most synergistic {best} "
                f"({_fmt(mean[best])}, its floor {floors[best]:.3f})"
                + (f"; cancellation {cancellation:.2f}" if cancellation is not None else ""))
    baseline = (f"noise floor: same-domain cosine of two independent batches, {noise_floor:.3f} globally "
                f"and per module; signs must reproduce on {len(cosines)} independent batch replicate(s)")
    if noise_floor < min_floor:
        supported, why = None, (f"noise floor {noise_floor:.3f} < {min_floor}: batches of one domain barely "
                                f"agree, so near-orthogonality cannot be told from sampling noise")
    else:
        band = ratio * noise_floor
        orthogonal = figures["max_abs_global_cosine"] <= band
        why = (f"|global cosine| {'<=' if orthogonal else '>'} {ratio} x noise floor ({band:.3f}); "
               f"of {len(usable)} module(s) with a floor >= {min_floor}, {len(conflicting)} conflict "
               f"(cosine <= -{ratio} x its floor on every replicate) and {len(cooperating)} cooperate "
               f"(>= +{ratio} x its floor)")
        supported = bool(orthogonal and conflicting and cooperating)
    return ClaimCheck(claim="C3", name=f"{pair[0]}-{pair[1]}-gradients", statement=C3_STATEMENT, paper=C3_PAPER,
                      measured=measured, baseline=baseline, supported=supported, why=why, figures=figures)


# ------------------------------------------------------------------------------------------- C4

C4_STATEMENT = "The domains share substantial active computation routes."
C4_PAPER = ("stated without a figure; the definition of an active route is not published (the kit: MLP "
            "channels in the top q of mean |activation| over a domain's tokens)")


@dataclass(frozen=True)
class AblationContrast:
    """One domain's held-out score under an ablated channel set against a matched random control set:
    ``change`` and ``control_change`` are each set's score minus the unablated score; ``difference`` =
    score(ablated) - score(control), paired over the same items, with its ``p_value``."""

    domain: str
    change: float
    control_change: float
    difference: float
    p_value: float


OVERLAP_COLUMNS = ("a", "b", "shared", "jaccard", "p_value")
C4_ALPHA = 0.05  # significance level of the overlap and ablation tests
C4_MIN_SHARE = 0.5  # share of domain pairs that must share routes beyond chance


def check_c4(overlaps: pd.DataFrame, chance: float, pair: Sequence[str], shared_channels: int,
             contrasts: Sequence[AblationContrast] | None, *, q: float, alpha: float = C4_ALPHA,
             min_share: float = C4_MIN_SHARE, positions: str = "answer") -> ClaimCheck:
    """C4 from the route overlaps of every domain pair and a causal test on one pair's shared channels.

    Inputs: ``overlaps``, one row per domain pair as :func:`mdrl_lib.routes.pairwise_overlaps` gives it
    (columns ``a``, ``b``, ``shared``, ``jaccard`` and ``p_value``, the chance of sharing at least that
    many channels if both routes were random); ``chance``, the Jaccard index of two random routes; ``pair``,
    the pair whose ``shared_channels`` were ablated; ``contrasts``, one :class:`AblationContrast` per
    domain of the pair (the shared set against random channels of the same per-layer counts), or
    ``None`` when the ablation was not run.

    Rule, fixed before the run: supported when (a) at least ``min_share`` of the domain pairs share more
    channels than chance at ``p < alpha``, and (b) ablating the pair's shared channels lowers both of
    its domains' held-out scores more than the random set does (difference < 0, paired p < ``alpha``
    for each). Not testable (``None``) when the ablation was not run or the pair shares no channel;
    otherwise not supported.
    """
    if not isinstance(overlaps, pd.DataFrame) or overlaps.empty:
        raise ValueError("overlaps must be a non-empty table with one row per domain pair")
    missing = [c for c in OVERLAP_COLUMNS if c not in overlaps.columns]
    if missing:
        raise ValueError(f"overlaps lacks columns {missing}; it needs {list(OVERLAP_COLUMNS)}")
    if not 0 < chance < 1:
        raise ValueError(f"chance must be in (0, 1), got {chance}")
    pair = tuple(pair)
    if len(pair) != 2:
        raise ValueError(f"pair must name two domains, got {pair!r}")
    names = [f"{a}-{b}" for a, b in zip(overlaps["a"], overlaps["b"])]
    above = [n for n, p in zip(names, overlaps["p_value"]) if p < alpha]
    jaccards = overlaps["jaccard"].astype(float)
    largest = int(jaccards.to_numpy().argmax())
    mean_overlap = float(jaccards.mean())
    figures: dict[str, Any] = {"q": q, "positions": positions, "mean_overlap": mean_overlap, "chance": chance,
                               "ratio_to_chance": mean_overlap / chance, "pairs": len(names),
                               "pairs_above_chance": len(above), "largest_pair": names[largest],
                               "largest_overlap": float(jaccards.iloc[largest]), "ablated_pair": "-".join(pair),
                               "shared_channels": shared_channels, "alpha": alpha, "min_share": min_share}
    measured = (f"{len(above)} of {len(names)} pairs share more than chance at {positions} positions "
                f"({', '.join(above) or 'none'}); mean Jaccard {mean_overlap:.3f} "
                f"({mean_overlap / chance:.2f} x chance); largest {names[largest]} {jaccards.iloc[largest]:.3f}")
    baseline = (f"chance: two random routes of the top {q:g} (Jaccard {chance:.3f}; hypergeometric p per pair); "
                f"ablation of the {shared_channels} {'-'.join(pair)} shared channels against random channels "
                f"of the same per-layer counts, paired over held-out items")
    overlap_ok = len(above) >= min_share * len(names)
    part_a = (f"(a) {len(above)} of {len(names)} pairs above chance at p < {alpha}, "
              f"{'at least' if overlap_ok else 'fewer than'} {min_share:.0%}")
    if contrasts is None or shared_channels == 0:
        reason = "the ablation was not run" if contrasts is None else f"{'-'.join(pair)} share no channel"
        return ClaimCheck(claim="C4", name="shared-routes", statement=C4_STATEMENT, paper=C4_PAPER,
                          measured=measured, baseline=baseline, supported=None,
                          why=f"{part_a}; (b) not testable: {reason}", figures=figures)
    by_domain = {c.domain: c for c in contrasts}
    lacking = [d for d in pair if d not in by_domain]
    if lacking:
        raise ValueError(f"contrasts lack the pair's domain(s) {lacking}")
    for d in pair:
        c = by_domain[d]
        figures.update({f"{d}_change_shared": c.change, f"{d}_change_random": c.control_change,
                        f"{d}_shared_minus_random": c.difference, f"{d}_p": c.p_value})
    measured += "; ablating the shared channels: " + ", ".join(
        f"{d} {_fmt(by_domain[d].change)} (random {_fmt(by_domain[d].control_change)}, p={by_domain[d].p_value:.2g})"
        for d in pair)
    hurt = [d for d in pair if by_domain[d].difference < 0 and by_domain[d].p_value < alpha]
    part_b = (f"(b) the shared channels hurt {len(hurt)} of 2 domains ({', '.join(hurt) or 'none'}) more "
              f"than random channels at p < {alpha}")
    return ClaimCheck(claim="C4", name="shared-routes", statement=C4_STATEMENT, paper=C4_PAPER, measured=measured,
                      baseline=baseline, supported=bool(overlap_ok and len(hurt) == len(pair)),
                      why=f"{part_a}; {part_b}", figures=figures)


FRACTIONAL_DOMAINS = {"code": "fractional", "cw": "fractional"}


def ablation_contrasts(scores: pd.DataFrame, ablated: str, control: str, unablated: str,
                       domains: Sequence[str] | None = None, *, n_boot: int = 10_000,
                       seed: int = 0) -> list[AblationContrast]:
    """Per domain, the held-out score with channel set ``ablated`` against the ``control`` set, paired
    over items (:func:`mdrl_lib.stats.paired_difference_table`: McNemar for 0/1 domains, Wilcoxon
    signed-rank for Code and CW, whose scores are fractions). ``scores``: tidy per-item table with
    columns ``item``, ``domain``, ``checkpoint`` (here: the ablated set's name, ``unablated`` for none)
    and ``score``. Introduced in ``02_shared_routes``."""
    from mdrl_lib.stats import paired_difference_table

    if domains is not None:
        scores = scores[scores["domain"].isin(list(domains))]
    kinds = dict(FRACTIONAL_DOMAINS)
    contrast = paired_difference_table(scores, before=control, after=ablated, kind=kinds, n_boot=n_boot,
                                       seed=seed).set_index("domain")
    means = scores.groupby(["checkpoint", "domain"])["score"].mean()
    return [AblationContrast(domain=d, change=float(means[(ablated, d)] - means[(unablated, d)]),
                             control_change=float(means[(control, d)] - means[(unablated, d)]),
                             difference=float(contrast.loc[d, "diff"]), p_value=float(contrast.loc[d, "p_value"]))
            for d in contrast.index]


# ------------------------------------------------------------------------------------------- C1

C1_STATEMENT = "Single-domain RL edits are sparse and small."
C1_PAPER = ("77-89% of parameters change by less than 1e-7 absolute and less than 1e-3 relative, per "
            "single-domain expert vs base (the paper's rate and precision are not published)")
C1_PAPER_RANGE = (0.77, 0.89)  # the paper's range of unchanged shares
C1_ALPHA = 0.05  # significance level of an expert's held-out gain
C1_COLUMNS = ("regime", "expert", "share", "gain", "gain_p")


def check_c1(experts: pd.DataFrame, *, name: str, low: float = C1_PAPER_RANGE[0],
             alpha: float = C1_ALPHA) -> ClaimCheck:
    """C1 from the experts of one or more training regimes.

    ``experts``: one row per expert, columns ``regime`` (a label of how it was trained: precision,
    rate, steps), ``expert`` (its name), ``share`` (the share of entries unchanged by the paper's
    criterion, |delta| < 1e-7 *and* |delta| / |base| < 1e-3, compared in the precision the regime
    stores its weights in), ``gain`` (its held-out score on its own domain minus the reference's:
    the base, rounded to the same precision) and ``gain_p`` (the paired p-value of that gain).

    Rule, fixed before the run. An expert is *sparse* when ``share >= low`` (the bottom of the
    paper's range; above the range is sparser still and counts) and has *learned* when
    ``gain > 0`` at ``gain_p < alpha``: a model that RL left alone is trivially sparse, so sparsity
    only says something about RL edits that do something. A regime qualifies when every one of its
    experts is sparse and has learned. Supported when at least one regime qualifies (the paper does
    not publish its rate, so any rate of the grid may stand for it); not testable (``None``) when
    ``experts`` is empty; otherwise not supported, and ``why`` says whether the edits were dense in
    every regime or sparse only where RL learned nothing measurable.
    """
    if not isinstance(experts, pd.DataFrame):
        raise TypeError(f"experts must be a pandas DataFrame with columns {list(C1_COLUMNS)}, "
                        f"got {type(experts).__name__}")
    missing = [c for c in C1_COLUMNS if c not in experts.columns]
    if missing:
        raise ValueError(f"experts lacks columns {missing}; it needs {list(C1_COLUMNS)}")
    if not 0 < low <= 1:
        raise ValueError(f"low must be in (0, 1], got {low}")
    figures: dict[str, Any] = {"low": low, "alpha": alpha, "regimes": 0, "qualifying_regimes": 0}
    baseline = ("the expert's own held-out gain over the base (rounded to the same precision), paired over "
                "items: an edit counts only if RL learned something with it")
    if experts.empty:
        return ClaimCheck(claim="C1", name=name, statement=C1_STATEMENT, paper=C1_PAPER,
                          measured="no experts were measured", baseline=baseline, supported=None,
                          why="not testable: no experts in this regime", figures=figures)
    shares = experts["share"].astype(float)
    if ((shares < 0) | (shares > 1)).any():
        raise ValueError(f"share must lie in [0, 1], got {shares.tolist()}")
    rows = experts.assign(sparse=shares >= low,
                          learned=(experts["gain"].astype(float) > 0) & (experts["gain_p"].astype(float) < alpha))
    parts, qualifying, sparse_unlearned = [], [], []
    for regime, group in rows.groupby("regime", sort=False):
        ok = bool(group["sparse"].all() and group["learned"].all())
        if ok:
            qualifying.append(str(regime))
        if group["sparse"].any() and not group["learned"].all():
            sparse_unlearned.append(str(regime))
        figures[f"min_share[{regime}]"] = float(group["share"].min())
        figures[f"learned[{regime}]"] = f"{int(group['learned'].sum())}/{len(group)}"
        parts.append(f"{regime}: " + ", ".join(
            f"{r.expert} {r.share:.3g} unchanged, gain {_fmt(float(r.gain))} (p={float(r.gain_p):.2g})"
            for r in group.itertuples()))
    figures.update(regimes=len(parts), qualifying_regimes=len(qualifying),
                   max_share=float(shares.max()), min_share=float(shares.min()))
    measured = "; ".join(parts)
    rule = f"sparse: >= {low:.0%} unchanged; learned: gain > 0 at p < {alpha}"
    if qualifying:
        why = f"{rule}; every expert of {' and '.join(repr(q) for q in qualifying)} is sparse and learned"
    elif not rows["sparse"].any():
        why = f"{rule}; no expert is sparse: the largest unchanged share is {figures['max_share']:.3g}"
    else:
        why = (f"{rule}; edits were sparse only where RL learned nothing measurable "
               f"({' and '.join(repr(r) for r in sparse_unlearned)})")
    return ClaimCheck(claim="C1", name=name, statement=C1_STATEMENT, paper=C1_PAPER, measured=measured,
                      baseline=baseline, supported=bool(qualifying), why=why, figures=figures)


# ------------------------------------------------------------------------------------------- C2

C2_STATEMENT = "The top-changed neurons of single-domain experts overlap weakly across domains."
C2_PAPER = ("neuron = one MLP intermediate channel, its edit magnitude aggregating its gate, up and down "
            "projection changes; top 10% per domain; mean pairwise Jaccard below 0.19")
C2_PAPER_MAX = 0.19  # the paper's bound on the mean cross-domain Jaccard
C2_RATIO = 0.5  # cross-domain overlap must be at most this fraction of the same-domain (two-seed) overlap


def check_c2(cross_domain: Mapping[str, float], same_domain: Mapping[str, float], random_expectation: float, *,
             fraction: float, paper_max: float = C2_PAPER_MAX, ratio: float = C2_RATIO) -> ClaimCheck:
    """C2 from top-neuron Jaccard indices.

    Inputs: ``cross_domain``, pair label -> Jaccard index of the top-``fraction`` neuron sets of two
    experts of different domains; ``same_domain``, label -> Jaccard of two experts of the *same*
    domain trained with different RL seeds (how much two runs agree when the domain is the same);
    ``random_expectation``, the Jaccard of two random sets of that size (reported).

    Rule, fixed before the run: supported when the mean cross-domain Jaccard is below ``paper_max``
    *and* at most ``ratio`` times the mean same-domain Jaccard. Low overlap across domains only says
    something about the domains when the same domain, retrained, overlaps clearly more; if two seeds
    of one domain overlap as little as two domains do, the top neurons are set by the run, not the
    domain, and the check is not supported. Not testable (``None``) without a same-domain pair.
    """
    cross = {str(k): float(v) for k, v in dict(cross_domain).items()}
    same = {str(k): float(v) for k, v in dict(same_domain).items()}
    if not cross:
        raise ValueError("cross_domain is empty: give the Jaccard index of at least one pair of domains")
    for label, value in {**cross, **same}.items():
        if not 0 <= value <= 1:
            raise ValueError(f"Jaccard index of {label!r} must lie in [0, 1], got {value}")
    if not 0 <= random_expectation <= 1:
        raise ValueError(f"random_expectation must lie in [0, 1], got {random_expectation}")
    mean_cross = sum(cross.values()) / len(cross)
    largest = max(cross, key=cross.get)
    figures: dict[str, Any] = {"fraction": fraction, "mean_cross_domain": mean_cross, "pairs": len(cross),
                               "largest_pair": largest, "largest_cross_domain": cross[largest],
                               "random_expectation": random_expectation, "paper_max": paper_max, "ratio": ratio,
                               "same_domain_pairs": len(same)}
    measured = (f"mean cross-domain Jaccard {mean_cross:.3f} over {len(cross)} pairs (largest {largest} "
                f"{cross[largest]:.3f}) at the top {fraction:.0%}")
    baseline = f"random sets of the same size: {random_expectation:.3f}"
    below_paper = mean_cross < paper_max
    part_a = f"mean cross-domain {mean_cross:.3f} {'<' if below_paper else '>='} {paper_max}"
    if not same:
        return ClaimCheck(claim="C2", name="top-neuron-overlap", statement=C2_STATEMENT, paper=C2_PAPER,
                          measured=measured, baseline=baseline, supported=None,
                          why=f"{part_a}; not testable: no same-domain two-seed pair to compare with",
                          figures=figures)
    mean_same = sum(same.values()) / len(same)
    figures["mean_same_domain"] = mean_same
    measured += "; same domain, two RL seeds: " + ", ".join(f"{k} {v:.3f}" for k, v in same.items())
    baseline += f"; the same domain retrained with another RL seed: {mean_same:.3f}"
    distinct = mean_cross <= ratio * mean_same
    part_b = (f"{'<=' if distinct else '>'} {ratio} x the mean same-domain two-seed Jaccard "
              f"({ratio * mean_same:.3f})")
    return ClaimCheck(claim="C2", name="top-neuron-overlap", statement=C2_STATEMENT, paper=C2_PAPER,
                      measured=measured, baseline=baseline, supported=bool(below_paper and distinct),
                      why=f"{part_a}; {part_b}", figures=figures)


# ----------------------------------------------------------------------------- the claims ledger


def ledger(run_dir: str | Path) -> pd.DataFrame:
    """Every claim check a run recorded, gathered in claim order (C1-C7), one row per check; a claim with
    no recorded check gets one row saying so (its notebook has not run, or does not exist yet).

    Columns: claim, check, notebook, paper, this run, baseline / control, verdict, why. Introduced with
    ``python -m mdrl_lib report RUN_DIR``.
    """
    folder = Path(run_dir) / CLAIMS_DIR
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"no run directory at {run_dir}")
    rows = []
    for path in sorted(folder.glob("C*-*.json")) if folder.is_dir() else []:
        record = json.loads(path.read_text())
        check = load_check(path)
        rows.append({"claim": check.claim, "check": check.name, "notebook": record.get("notebook", ""),
                     "paper": check.paper, "this run": check.measured, "baseline / control": check.baseline,
                     "verdict": check.verdict, "why": check.why})
    recorded = {r["claim"] for r in rows}
    for claim in CLAIM_IDS:
        if claim not in recorded:
            rows.append({"claim": claim, "check": "", "notebook": "", "paper": "", "this run": "",
                         "baseline / control": "", "verdict": "not measured",
                         "why": "no check of this claim is recorded in this run directory"})
    table = pd.DataFrame(rows)
    table["order"] = table["claim"].map(CLAIM_IDS.index)
    return table.sort_values(["order", "check"], kind="stable").drop(columns="order").reset_index(drop=True)


# ------------------------------------------------------------------------------------------- C5

C5_STATEMENT = ("Later-domain damage is mainly second-order and concentrated in a low-dimensional shared "
                "conflict subspace.")
C5_PAPER = ("derivation only: Delta_{B->A} ~= g_A^T delta_B + 1/2 delta_B^T H_A delta_B with the first-order "
            "term suppressed near theta_A*, and the dominant term 1/2 (P_S delta_B)^T H_A (P_S delta_B); no figure")
C5_RTOL = 0.1  # the quadratic prediction must be within this fraction of the measured damage at t = 1
C5_MIN_SHARE = 0.5  # the top-r subspace must carry at least this share of the second-order damage on its coordinates


def check_c5(local: Mapping[str, float], shares: pd.DataFrame, *, r: int, coordinates_part: float = 1.0,
             far: Mapping[str, float] | None = None, rtol: float = C5_RTOL,
             min_share: float = C5_MIN_SHARE) -> ClaimCheck:
    """C5 from the Taylor terms of a local-regime displacement and the conflict subspace's captured share.

    Inputs: ``local``, the row ``t = 1`` of :func:`mdrl_lib.perturbation.taylor_terms` for a displacement
    ``delta_B`` small enough to be local (keys ``measured``, ``first_order``, ``second_order``,
    ``predicted``); ``shares``, the table of :func:`mdrl_lib.perturbation.captured_share` (columns ``r``,
    ``top``, ``random_mean``, ``random_std``, ``random_max``): share of ``delta_B``'s second-order damage
    on the shared-route coordinates carried by the top-``r`` Hessian eigenvectors, against random
    ``r``-dimensional subspaces of the same coordinates; ``coordinates_part``, the part of the *full*
    second-order term that those coordinates hold, ``delta_S^T H_A delta_S / delta_B^T H_A delta_B`` (1 when
    the subspace was sought among all coordinates), so that ``top * coordinates_part`` is the top-``r``
    subspace's share of the whole second-order damage; ``far`` (reported only), the same row for the
    default-rate stage, far from the local regime.

    Rule, fixed in the kit's code before it was applied to a seed other than 0:

    - not testable (``None``) when the measured local damage is not positive (B did not hurt A);
    - (a) second order: at ``t = 1`` the second-order term alone is closer to the measured damage than
      the first-order term alone, ``|measured - second| < |measured - first|``, and the quadratic
      prediction (first + second) is within ``rtol`` of the measured damage;
    - (b) concentration: at ``r`` the top-``r`` subspace carries at least ``min_share`` of the *whole*
      second-order damage (``top * coordinates_part``; a subspace that is dominant only among a few
      coordinates holding little of the damage does not count), *and* its share is larger than the largest
      share of any random subspace of the same dimension and coordinates;
    - supported when (a) and (b) hold.
    """
    for key in ("measured", "first_order", "second_order", "predicted"):
        if key not in local:
            raise KeyError(f"local lacks {key!r}; give the t = 1 row of taylor_terms")
    missing = {"r", "top", "random_mean", "random_max"} - set(shares.columns)
    if missing:
        raise ValueError(f"shares lacks column(s) {sorted(missing)}; give the table of captured_share")
    if r not in set(shares["r"].astype(int)):
        raise ValueError(f"r={r} is not in the shares table (r = 1..{int(shares['r'].max())})")
    measured, first, second = (float(local[k]) for k in ("measured", "first_order", "second_order"))
    predicted = float(local["predicted"])
    row = shares.set_index(shares["r"].astype(int)).loc[r]
    top, random_mean, random_max = float(row["top"]), float(row["random_mean"]), float(row["random_max"])
    rel = abs(predicted - measured) / abs(measured) if measured != 0 else math.inf
    whole = top * float(coordinates_part)
    figures: dict[str, Any] = {"local_measured": measured, "local_first_order": first, "local_second_order": second,
                               "local_relative_error": rel, "r": r, "top_share": top,
                               "random_share_mean": random_mean, "random_share_max": random_max,
                               "coordinates_part": float(coordinates_part), "share_of_whole": whole,
                               "rtol": rtol, "min_share": min_share}
    measured_text = (f"local regime, t = 1: measured {measured:.3g}, first-order {first:.3g}, second-order "
                     f"{second:.3g} (quadratic error {rel:.1%}); rank-{r} conflict subspace carries {top:.2f} of "
                     f"the second-order damage on its coordinates (random subspaces: mean {random_mean:.3f}, max "
                     f"{random_max:.3f}), which hold {coordinates_part:.3g} of the whole second-order term: "
                     f"{whole:.3g} of the whole")
    if far is not None:
        far_measured = float(far["measured"])
        far_predicted = float(far["first_order"]) + float(far["second_order"])
        figures.update(far_measured=far_measured, far_first_order=float(far["first_order"]),
                       far_second_order=float(far["second_order"]), far_predicted=far_predicted)
        measured_text += (f"; default-rate stage, t = 1: measured {far_measured:.3g} against a quadratic "
                          f"prediction of {far_predicted:.3g}")
    baseline = (f"the first-order term g_A^T delta_B; random {r}-dimensional subspaces of the same coordinates")
    if not measured > 0:
        return ClaimCheck(claim="C5", name="second-order-subspace", statement=C5_STATEMENT, paper=C5_PAPER,
                          measured=measured_text, baseline=baseline, supported=None,
                          why=f"not testable: the local stage did not hurt A (measured change {measured:.3g})",
                          figures=figures)
    closer = abs(measured - second) < abs(measured - first)
    accurate = rel <= rtol
    part_a = (f"(a) second order {'closer' if closer else 'not closer'} to the measured damage than first order, "
              f"quadratic error {rel:.1%} {'<=' if accurate else '>'} {rtol:.0%}")
    concentrated = whole >= min_share and top > random_max
    part_b = (f"(b) rank-{r} subspace carries {whole:.3g} of the whole second-order damage "
              f"({'>=' if whole >= min_share else '<'} {min_share}; {top:.2f} of the part on its coordinates, "
              f"which hold {coordinates_part:.3g}), {'above' if top > random_max else 'not above'} every random "
              f"subspace ({random_max:.3f})")
    return ClaimCheck(claim="C5", name="second-order-subspace", statement=C5_STATEMENT, paper=C5_PAPER,
                      measured=measured_text, baseline=baseline,
                      supported=bool(closer and accurate and concentrated), why=f"{part_a}; {part_b}",
                      figures=figures)


# ------------------------------------------------------------------------------------------- C6

C6_STATEMENT = ("A short refresh contracts the harmful component (theory: gradient steps on A shrink "
                "||P_S(theta_t - theta_A*)|| at least as fast as (1 - alpha mu_A)^t).")
C6_PAPER = ("Theorem 1: ||P_S(theta_t - theta_A*)|| <= (1 - alpha mu_A)^t ||P_S delta_B|| under curvature >= mu_A on S, "
            "weak back-flow and plain gradient steps; Math 57.66 -> 66.04 after a brief Re-Math refresh")


def check_c6_theory(distance_s: Sequence[float], mu: float, alpha: float, *, name: str = "gd-contraction",
                    drift_corrected: Sequence[float] | None = None) -> ClaimCheck:
    """C6's theorem on one plain gradient-descent refresh.

    Inputs: ``distance_s``, ``||P_S(theta_t - theta_A*)||`` for ``t = 0..T`` (the ``distance_s`` column of
    :func:`mdrl_lib.perturbation.gd_refresh`); ``mu``, the smallest curvature of ``L_A`` on ``S`` (e.g. the
    first value of :func:`mdrl_lib.perturbation.curvature_on_subspace`); ``alpha``, the constant rate;
    ``drift_corrected`` (reported only), the same distance measured against the gradient-descent path
    started at ``theta_A*`` itself rather than against the fixed point ``theta_A*``.

    Rule, fixed before it was applied to a seed other than 0: not testable (``None``) when ``mu <= 0``
    (no positive curvature on ``S``: the theorem does not apply), when ``alpha mu >= 2`` (the rate is too
    large for any contraction) or when ``distance_s[0] == 0``; otherwise supported when the measured ratio
    ``distance_s[T] / distance_s[0]`` is at most the bound's ratio ``|1 - alpha mu|^T``.
    """
    distances = [float(x) for x in distance_s]
    if len(distances) < 2:
        raise ValueError("distance_s needs at least two entries (t = 0 and t = T)")
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    steps = len(distances) - 1
    bound = abs(1.0 - alpha * mu) ** steps
    ratio = distances[-1] / distances[0] if distances[0] > 0 else math.nan
    figures: dict[str, Any] = {"steps": steps, "alpha": alpha, "mu": mu, "alpha_mu": alpha * mu,
                               "distance_s_start": distances[0], "distance_s_end": distances[-1],
                               "measured_ratio": ratio, "bound_ratio": bound}
    measured = (f"after {steps} gradient steps at alpha = {alpha:.3g}: ||P_S(theta_t - theta_A*)|| went "
                f"{distances[0]:.3g} -> {distances[-1]:.3g} (ratio {ratio:.4f})")
    if drift_corrected is not None:
        drift = [float(x) for x in drift_corrected]
        if len(drift) != len(distances):
            raise ValueError(f"drift_corrected needs {len(distances)} entries, got {len(drift)}")
        figures["drift_corrected_ratio"] = drift[-1] / drift[0] if drift[0] > 0 else None
        measured += (f"; against gradient descent from theta_A* itself: ratio "
                     f"{figures['drift_corrected_ratio']:.4f}" if drift[0] > 0 else "")
    baseline = f"the theorem's bound |1 - alpha mu|^T = {bound:.4f} with mu = {mu:.3g} (alpha mu = {alpha * mu:.3g})"
    if mu <= 0 or alpha * mu >= 2 or not distances[0] > 0:
        reason = ("mu <= 0: no positive curvature on S, the theorem does not apply" if mu <= 0 else
                  "alpha mu >= 2: the rate is too large for the bound to contract" if alpha * mu >= 2 else
                  "the damaged point has no component on S")
        return ClaimCheck(claim="C6", name=name, statement=C6_STATEMENT, paper=C6_PAPER, measured=measured,
                          baseline=baseline, supported=None, why=f"not testable: {reason}", figures=figures)
    ok = ratio <= bound
    why = f"measured ratio {ratio:.4f} {'<=' if ok else '>'} the bound's {bound:.4f}"
    if figures.get("drift_corrected_ratio") is not None:
        drift_ok = figures["drift_corrected_ratio"] <= bound
        why += (f" (reported, not judged: against the GD path from theta_A* the ratio is "
                f"{figures['drift_corrected_ratio']:.4f}, {'within' if drift_ok else 'beyond'} the bound)")
    return ClaimCheck(claim="C6", name=name, statement=C6_STATEMENT, paper=C6_PAPER, measured=measured,
                      baseline=baseline, supported=bool(ok), why=why, figures=figures)


# ----------------------------------------------------------------------------- the base's preconditions

SCORE_CEILING = 0.95  # a held-out base score at or above this leaves an RL stage nothing to raise
MATH_RIGHT_NUMBER_FLOOR = 0.8  # the base must know its arithmetic, box ignored (good bases reach 0.85-0.96)


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
    math_items = items[items["domain"] == "math"]
    if not math_items.empty:
        share = float(sum(bool(d.get("right_number")) for d in math_items["details"]) / len(math_items))
        rows.append({"check": "math: held-out answers with the right number (box ignored)", "value": share,
                     "threshold": MATH_RIGHT_NUMBER_FLOOR, "holds": share >= MATH_RIGHT_NUMBER_FLOOR,
                     "why": "Math's RL stage settles the answer convention; it cannot teach arithmetic the base "
                            "lacks, and the chain's damage to Math is measured on that arithmetic"})
    return pd.DataFrame(rows, columns=["check", "value", "threshold", "holds", "why"])


# ------------------------------------------------------------------------------ C6 and C7 (notebook 05)

C6_REFRESH_STATEMENT = ("After a later domain damaged A, a short refresh on A recovers A selectively: A rises, the "
                        "other domains hold, and the refresh does more than further training on A would.")
C6_REFRESH_PAPER = ("Code -> Math -> QA -> CW, then a brief Re-Math refresh: Math 57.66 -> 66.04 (peak 66.49), "
                    "average 64.25 -> 66.39 at best")
C6_COLLATERAL = 0.02  # no other domain may fall by more than this (about one evaluation standard error)
C7_STATEMENT = ("Training-free rollback of a sparse set of proxy conflict coordinates (A-B pair) partially restores "
                "A, beyond random coordinates and the largest changes of the same count.")
C7_PAPER = "Math-QA pair: partial restoration of Math; selection rule and numbers not published"


def _share(share: float) -> str:
    return f"{share:.0%}" if math.isfinite(share) else "n/a"


def _interval(change: Mapping[str, float]) -> str:
    return f"{change['diff']:+.3f} [{change['ci_low']:+.3f}, {change['ci_high']:+.3f}]"


def check_c6_refresh(drop: Mapping[str, float], recovery: Mapping[str, float], others: Mapping[str, Mapping[str, float]],
                     excess: Mapping[str, float], *, domain: str, steps: int, control_gain: Mapping[str, float] | None = None,
                     collateral: float = C6_COLLATERAL, name: str = "refresh-selective") -> ClaimCheck:
    """C6 on the real (GRPO) refresh of notebook ``05_refresh_vs_rollback``.

    Each argument is a paired change on the same held-out items, a mapping with ``diff``, ``ci_low`` and
    ``ci_high`` (a 95% interval, e.g. a row of :func:`mdrl_lib.recovery.paired_changes`): ``drop``, A at the
    chain's end minus A at theta_A* (its own stage's end); ``recovery``, A after the refresh minus A at the
    chain's end; ``others``, each other domain's change over the refresh; ``excess``, the refresh's gain on A
    minus the gain the same steps give from theta_A* (``control_gain``, reported), per item
    (:func:`mdrl_lib.recovery.difference_in_changes`).

    Rule, fixed before notebook 05 was first run: not testable (``None``) when A's drop is not significant
    (its interval reaches 0 or above): there is nothing to recover. Otherwise supported when (a) A's recovery
    interval lies above 0, (b) no other domain falls by more than ``collateral`` (point estimates), and (c)
    the excess over the control lies above 0 (the refresh restores, not merely trains A further).
    """
    others = dict(others)
    fall = -float(drop["diff"])
    share = float(recovery["diff"]) / fall if fall > 0 else math.nan
    worst = min(others, key=lambda d: others[d]["diff"]) if others else None
    figures: dict[str, Any] = {"domain": domain, "steps": steps, "drop": drop["diff"], "drop_ci_high": drop["ci_high"],
                               "recovery": recovery["diff"], "recovery_ci_low": recovery["ci_low"],
                               "recovered_share": share, "excess": excess["diff"], "excess_ci_low": excess["ci_low"],
                               "worst_other": worst, "worst_other_change": others[worst]["diff"] if worst else None,
                               "collateral": collateral}
    if control_gain is not None:
        figures["control_gain"] = control_gain["diff"]
        figures["control_gain_ci_high"] = control_gain.get("ci_high")
    measured = (f"{domain}: chain end minus theta_A* {_interval(drop)}; a {steps}-step refresh {_interval(recovery)} "
                f"({_share(share)} of the drop); others: " + ", ".join(f"{d} {v['diff']:+.3f}" for d, v in others.items())
                + f"; excess over the same steps from theta_A* {_interval(excess)}")
    baseline = (f"the same {steps} {domain} steps from theta_A* (gain "
                f"{'n/a' if control_gain is None else format(control_gain['diff'], '+.3f')}); the other domains' "
                f"collateral (tolerance {collateral})")
    if not drop["ci_high"] < 0:
        return ClaimCheck(claim="C6", name=name, statement=C6_REFRESH_STATEMENT, paper=C6_REFRESH_PAPER,
                          measured=measured, baseline=baseline, supported=None,
                          why=f"not testable: {domain} did not fall significantly over the later stages "
                              f"({_interval(drop)}), so there is nothing to recover", figures=figures)
    recovers = recovery["ci_low"] > 0
    holds = all(v["diff"] >= -collateral for v in others.values())
    restores = excess["ci_low"] > 0
    why = (f"(a) recovery interval {'above' if recovers else 'not above'} 0; (b) "
           + (f"the worst other domain, {worst}, moved {others[worst]['diff']:+.3f} "
              f"({'>=' if holds else '<'} -{collateral})" if worst else "no other domain")
           + f"; (c) excess over the control {'above' if restores else 'not above'} 0 ({_interval(excess)})")
    return ClaimCheck(claim="C6", name=name, statement=C6_REFRESH_STATEMENT, paper=C6_REFRESH_PAPER,
                      measured=measured, baseline=baseline, supported=bool(recovers and holds and restores), why=why,
                      figures=figures)


def check_c7(drop: Mapping[str, float], recovery: Mapping[str, float], over_controls: Mapping[str, Mapping[str, float]],
             *, pair: Sequence[str], rule: str, fraction: float, count: int,
             others: Mapping[str, Mapping[str, float]] | None = None, name: str | None = None) -> ClaimCheck:
    """C7 on one rollback of notebook ``05_refresh_vs_rollback``, at a budget fixed in advance.

    Paired changes on the same items (mappings with ``diff``, ``ci_low``, ``ci_high``): ``drop``, A at the
    chain's end minus A before B's stage; ``recovery``, A after the rollback minus A at the chain's end;
    ``over_controls``, A after the rollback minus A after each control of the same count (``random``,
    ``magnitude``); ``others`` (reported), every other domain's change over the rollback.

    Rule, fixed before notebook 05 was first run: not testable (``None``) when A's drop is not significant
    (its interval reaches 0 or above). Otherwise supported when (a) A's recovery interval lies above 0 and
    (b) for every control, the interval of the rollback's advantage over it lies above 0. "Partially" is
    reported (the recovered share of the drop), not judged.
    """
    a, b = pair
    fall = -float(drop["diff"])
    share = float(recovery["diff"]) / fall if fall > 0 else math.nan
    figures: dict[str, Any] = {"pair": f"{a},{b}", "rule": rule, "fraction": fraction, "count": count,
                               "drop": drop["diff"], "drop_ci_high": drop["ci_high"], "recovery": recovery["diff"],
                               "recovery_ci_low": recovery["ci_low"], "recovered_share": share}
    for control, gap in over_controls.items():
        figures[f"over_{control}"] = gap["diff"]
        figures[f"over_{control}_ci_low"] = gap["ci_low"]
    measured = (f"{a}: chain end minus before {b}'s stage {_interval(drop)}; rolling back {count} coordinates "
                f"({fraction:g} of all) by {rule}: {_interval(recovery)} ({_share(share)} of the drop); over "
                + ", ".join(f"{c} {_interval(g)}" for c, g in over_controls.items()))
    if others:
        measured += "; others: " + ", ".join(f"{d} {v['diff']:+.3f}" for d, v in others.items())
    baseline = f"{', '.join(over_controls)} coordinates of the same count ({count})"
    name = name or f"rollback-{a}-{b}"
    if not drop["ci_high"] < 0:
        return ClaimCheck(claim="C7", name=name, statement=C7_STATEMENT, paper=C7_PAPER, measured=measured,
                          baseline=baseline, supported=None,
                          why=f"not testable: {a} did not fall significantly after {b}'s stage ({_interval(drop)})",
                          figures=figures)
    if not over_controls:
        raise ValueError("C7 needs at least one control of the same count")
    recovers = recovery["ci_low"] > 0
    beats = {c: g["ci_low"] > 0 for c, g in over_controls.items()}
    why = (f"(a) recovery interval {'above' if recovers else 'not above'} 0; (b) "
           + "; ".join(f"over {c}: {'above' if ok else 'not above'} 0" for c, ok in beats.items()))
    return ClaimCheck(claim="C7", name=name, statement=C7_STATEMENT, paper=C7_PAPER, measured=measured,
                      baseline=baseline, supported=bool(recovers and all(beats.values())), why=why, figures=figures)


def base_precondition_table(kit, spec=None, num_generations: int = 8) -> pd.DataFrame:
    """:func:`base_preconditions` of a kit's base (or of the model ``spec``): scores it (cached), samples
    ``num_generations`` completions per RL prompt of every domain for the mixed-group shares (as notebook
    ``00_toy_world`` does; seconds at toy scale) and reads Math's per-item answers. Used at the top of
    ``04_sequential_rl`` so that a base missing a precondition is flagged before anything is read from it."""
    from mdrl_lib.domains.base import DOMAIN_NAMES
    from mdrl_lib.evaluation import mixed_group_share
    from mdrl_lib.kit import Base

    spec = Base() if spec is None else spec
    model, tokenizer = kit.load(spec)
    with kit._compute_threads():
        shares = {n: mixed_group_share(model, tokenizer, kit.domain(n), kit.splits(n).train,
                                       num_generations=num_generations,
                                       max_new_tokens=kit.config.rl.max_completion_length,
                                       seed=kit.config.seed)["mixed"] for n in DOMAIN_NAMES}
    return base_preconditions(kit.scores_of(spec), shares, kit.item_results(spec))


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


# ------------------------------------------------------------------------------------------- C0

C0_STATEMENT = ("RL on later domains lowers an earlier domain: after Code -> Math -> QA -> CW, Math ends below "
                "the score it reached in its own stage, and by more than RL without the later domains' "
                "learning signal would move it.")
C0_PAPER = ("Math 66.49 right after its own stage (secondary summaries of the full text) -> 57.66 at the end of "
            "Code -> Math -> QA -> CW (abstract), AIME25 accuracy in %; one training run")
C0_ALPHA = 0.05  # significance level of the paired comparison with the shuffled-reward control
DROP_COLUMNS = ("rl_seed", "change", "ci_low", "ci_high", "p_value")


def check_c0(drops: pd.DataFrame, versus_shuffled: Mapping[str, float] | None, *, domain: str = "math",
             shuffled_change: float | None = None, same_domain_change: float | None = None,
             preconditions_hold: bool = True, level: float = 0.95, alpha: float = C0_ALPHA) -> ClaimCheck:
    """C0, the task-level observation, on one base: does ``domain`` fall after the later stages?

    Inputs: ``drops``, one row per RL seed of the chain on the run's base (columns ``rl_seed``,
    ``change`` = score at the chain's end - score right after ``domain``'s own stage, and its paired
    interval ``ci_low``, ``ci_high`` and ``p_value`` over the held-out items); ``versus_shuffled``,
    the paired comparison of the real chain's end with the shuffled-reward control's end, from the same
    checkpoint and with the same steps (keys ``diff`` = real - control, ``ci_low``, ``ci_high``,
    ``p_value``), or None when the control was not run; ``shuffled_change`` and ``same_domain_change``
    (reported only): ``domain``'s change under the shuffled-reward control and under as many more
    steps of ``domain`` itself; ``preconditions_hold``: whether the base met notebook 00's preconditions.

    Rule, fixed before the run:

    - not testable (``None``) when the base misses a precondition, or the control was not run;
    - (a) the fall is larger than the RL-seed spread: with two or more RL seeds, the Student t interval
      at ``level`` of the mean change across seeds (:func:`mdrl_lib.stats.seed_mean_interval`) lies below
      0; with one seed, that seed's paired interval lies below 0;
    - (b) the fall is more than RL drift: the real chain ends below the shuffled-reward control
      (``diff < 0`` at paired ``p < alpha``);
    - supported when (a) and (b) hold.
    """
    from mdrl_lib.stats import seed_mean_interval

    missing = [c for c in DROP_COLUMNS if c not in drops.columns]
    if missing:
        raise ValueError(f"drops lacks columns {missing}; it needs {list(DROP_COLUMNS)}")
    if drops.empty:
        raise ValueError("drops is empty: give one row per RL seed")
    changes = drops["change"].astype(float).tolist()
    seeds = [int(s) for s in drops["rl_seed"]]
    figures: dict[str, Any] = {"domain": domain, "rl_seeds": len(seeds), "level": level, "alpha": alpha,
                               "shuffled_change": shuffled_change, "same_domain_change": same_domain_change,
                               "preconditions_hold": bool(preconditions_hold)}
    for seed, row in zip(seeds, drops.itertuples()):
        figures[f"change_rl{seed}"] = float(row.change)
        figures[f"p_rl{seed}"] = float(row.p_value)
    if len(changes) >= 2:
        interval = seed_mean_interval(changes, level=level)
        mean, low, high = interval.mean, interval.ci_low, interval.ci_high
        spread = f"t interval over {len(changes)} RL seeds"
    else:
        mean, low, high = changes[0], float(drops["ci_low"].iloc[0]), float(drops["ci_high"].iloc[0])
        spread = "paired interval of the one RL seed"
    figures.update(mean_change=mean, mean_ci_low=low, mean_ci_high=high)
    measured = (f"{domain} at the chain's end minus right after its own stage: "
                + ", ".join(f"RL seed {s}: {_fmt(c)} (p={p:.2g})" for s, c, p in zip(seeds, changes, drops["p_value"]))
                + f"; mean {_fmt(mean)} [{_fmt(low)}, {_fmt(high)}] ({spread}, {level:.0%})")
    baseline = "the RL-seed spread on one base; the shuffled-reward control (same checkpoint, same later steps)"
    if versus_shuffled is not None:
        v = {k: float(versus_shuffled[k]) for k in ("diff", "ci_low", "ci_high", "p_value")}
        figures.update(real_minus_shuffled=v["diff"], real_minus_shuffled_ci_low=v["ci_low"],
                       real_minus_shuffled_ci_high=v["ci_high"], real_minus_shuffled_p=v["p_value"])
        measured += (f"; real chain's end minus the shuffled-reward control's: {_fmt(v['diff'])} "
                     f"[{_fmt(v['ci_low'])}, {_fmt(v['ci_high'])}] (p={v['p_value']:.2g})")
    if shuffled_change is not None:
        measured += f"; shuffled-reward control's own change {_fmt(shuffled_change)}"
    if same_domain_change is not None:
        measured += f"; more steps of {domain} itself: {_fmt(same_domain_change)}"
    name = f"{domain}-falls-after-later-stages"
    if not preconditions_hold:
        return ClaimCheck(claim="C0", name=name, statement=C0_STATEMENT, paper=C0_PAPER, measured=measured,
                          baseline=baseline, supported=None,
                          why="not testable: the base misses notebook 00's preconditions", figures=figures)
    if versus_shuffled is None:
        return ClaimCheck(claim="C0", name=name, statement=C0_STATEMENT, paper=C0_PAPER, measured=measured,
                          baseline=baseline, supported=None,
                          why="not testable: the shuffled-reward control was not run", figures=figures)
    falls = high < 0
    beyond_drift = v["diff"] < 0 and v["p_value"] < alpha
    why = (f"(a) the {spread} of the change is {'below' if falls else 'not below'} 0 (upper end {_fmt(high)}); "
           f"(b) the real chain ends {'below' if beyond_drift else 'not below'} the shuffled-reward control at "
           f"p < {alpha} (difference {_fmt(v['diff'])}, p={v['p_value']:.2g})")
    return ClaimCheck(claim="C0", name=name, statement=C0_STATEMENT, paper=C0_PAPER, measured=measured,
                      baseline=baseline, supported=bool(falls and beyond_drift), why=why, figures=figures)
