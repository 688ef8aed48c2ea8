"""Claims C1 (sparse edits) and C2 (weak top-neuron overlap), introduced in notebook ``01_sparse_edits``."""
from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

from mdrl_lib.claims._format import _fmt
from mdrl_lib.claims.record import ClaimCheck
from mdrl_lib.claims.rules import rule

# ------------------------------------------------------------------------------------------- C1

C1_STATEMENT = "Single-domain RL edits are sparse and small."
C1_PAPER = ("77-89% of parameters change by less than 1e-7 absolute and less than 1e-3 relative, per "
            "single-domain expert vs base (the paper's rate and precision are not published)")
C1_PAPER_RANGE = rule("C1", "paper_range")  # the paper's range of unchanged shares
C1_ALPHA = rule("C1", "alpha")  # significance level of an expert's held-out gain
C1_ROUNDING_MARGIN = rule("C1", "rounding_margin")  # a share this close to a dense edit's is rounding
C1_COLUMNS = ("regime", "expert", "share", "gain", "gain_p")


def c1_caveats(experts: pd.DataFrame, qualifying: list[str], *, seeds: int = 1,
               margin: float = C1_ROUNDING_MARGIN, low: float = C1_PAPER_RANGE[0]) -> list[str]:
    """What a reader must know about a C1 verdict (notebook ``01_sparse_edits``), from :func:`check_c1`'s
    ``experts`` table and the regimes that qualified: the domains and RL seeds the verdict rests on, when a
    supported verdict is the best of several settings (and the qualifying regime's gain), and, with a
    ``dense_share`` column (the unchanged share of a dense edit of the same size, rounded the same way),
    when a sparse expert's share (at least ``low``) lies within ``margin`` of it: then its sparsity is storage rounding of a dense
    edit, not RL choosing few weights. Empty when none applies."""
    caveats = []
    judged = experts[experts["regime"].astype(str).isin(qualifying)] if qualifying else experts
    domains = sorted(set(judged["expert"].astype(str)))
    if len(domains) == 1:
        caveats.append(f"rests on one domain ({domains[0]})")
    if seeds == 1:
        caveats.append("rests on one RL seed")
    regimes = list(dict.fromkeys(experts["regime"].astype(str)))
    if qualifying and len(regimes) > 1:
        gains = ", ".join(f"{r.expert} gain {_fmt(float(r.gain))} (p={float(r.gain_p):.2g})"
                          for r in judged.itertuples())
        caveats.append(f"the best of {len(regimes)} settings: {len(qualifying)} of {len(regimes)} qualif"
                       f"{'ies' if len(qualifying) == 1 else 'y'} ({', '.join(qualifying)}; {gains})")
    if "dense_share" in experts.columns:
        close = judged[((judged["share"].astype(float) - judged["dense_share"].astype(float)).abs() < margin)
                       & (judged["share"].astype(float) >= low)]
        if len(close):
            caveats.append("the unchanged share is that of a dense edit of the same size rounded the same way ("
                           + ", ".join(f"{r.regime}, {r.expert}: {float(r.share):.3g} vs {float(r.dense_share):.3g}"
                                       for r in close.itertuples())
                           + f"; within {margin}): the sparsity is rounding of a dense edit, not RL choosing few weights")
    return caveats


def check_c1(experts: pd.DataFrame, *, name: str, low: float = C1_PAPER_RANGE[0],
             alpha: float = C1_ALPHA, seeds: int = 1) -> ClaimCheck:
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

    The check measures an outcome (a share of weights unchanged), not the mechanism the paper reads into
    it (RL choosing few weights), so it is recorded with ``tested="outcome"``. Its caveats
    (:func:`c1_caveats`: ``seeds`` is the number of RL seeds per expert; an optional ``dense_share``
    column holds each expert's dense control) say when a verdict rests on one domain, one seed, the best
    of several settings, or a share that rounding of a dense edit gives as well.
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
                          why="not testable: no experts in this regime", figures=figures, tested="outcome")
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
    if "dense_share" in rows.columns:
        baseline += "; a dense edit of the same size, rounded the same way (the share rounding alone gives)"
    figures.update(seeds=seeds, domains=len(set(rows["expert"].astype(str))))
    return ClaimCheck(claim="C1", name=name, statement=C1_STATEMENT, paper=C1_PAPER, measured=measured,
                      baseline=baseline, supported=bool(qualifying), why=why, figures=figures, tested="outcome",
                      caveats=c1_caveats(rows, qualifying, seeds=seeds, low=low))


# ------------------------------------------------------------------------------------------- C2

C2_STATEMENT = "The top-changed neurons of single-domain experts overlap weakly across domains."
C2_PAPER = ("neuron = one MLP intermediate channel, its edit magnitude aggregating its gate, up and down "
            "projection changes; top 10% per domain; mean pairwise Jaccard below 0.19")
C2_PAPER_MAX = rule("C2", "paper_max")  # the paper's bound on the mean cross-domain Jaccard
C2_RATIO = rule("C2", "ratio")  # cross-domain overlap must be at most this fraction of the same-domain (two-seed) overlap


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

    Recorded with ``tested="outcome"``: the overlap of top-changed neurons is what the paper reports, not
    why domains edit different neurons. Caveats: each cross-domain pair is one expert per domain (one RL
    seed), and the same-domain reference rests on the domains in ``same_domain`` (one pair of seeds each).
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
    caveats = ["each cross-domain pair is one expert per domain (one RL seed)"]
    if len(same) == 1:
        caveats.append(f"the same-domain reference rests on one domain ({next(iter(same))}) with two RL seeds")
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
                          figures=figures, tested="outcome", caveats=caveats)
    mean_same = sum(same.values()) / len(same)
    figures["mean_same_domain"] = mean_same
    measured += "; same domain, two RL seeds: " + ", ".join(f"{k} {v:.3f}" for k, v in same.items())
    baseline += f"; the same domain retrained with another RL seed: {mean_same:.3f}"
    distinct = mean_cross <= ratio * mean_same
    part_b = (f"{'<=' if distinct else '>'} {ratio} x the mean same-domain two-seed Jaccard "
              f"({ratio * mean_same:.3f})")
    return ClaimCheck(claim="C2", name="top-neuron-overlap", statement=C2_STATEMENT, paper=C2_PAPER,
                      measured=measured, baseline=baseline, supported=bool(below_paper and distinct),
                      why=f"{part_a}; {part_b}", figures=figures, tested="outcome", caveats=caveats)


# ------------------------------------------------------------------------------------------- the verdicts in words


def explain_c1_c2(c1_paper: ClaimCheck, c1_default: ClaimCheck, c2: ClaimCheck, *, default_label: str,
                  expert_shares: pd.DataFrame, grid: pd.DataFrame) -> str:
    """Where a run agrees with the paper on C1 and C2, in sentences (notebook ``01_sparse_edits``'s
    closing summary), from the three checks and the tables they were computed from.

    ``expert_shares``: one row per expert of the run's default regime (``default_label``), columns
    ``fp32`` and ``bf16``: its unchanged share by the paper's joint criterion. ``grid``: the bf16 rate
    grid indexed by rate, columns ``unchanged, bf16 checkpoint``, ``unchanged, dense control in bf16``,
    ``held-out gain`` and ``gain p``. A rate is *learned* at gain > 0 with p < :data:`C1_ALPHA` and
    *sparse* at a bf16 share of at least the bottom of :data:`C1_PAPER_RANGE`, as in :func:`check_c1`;
    the bf16 share minus its dense control's is called near zero below 0.05 everywhere.
    """
    low, high = C1_PAPER_RANGE
    fp32, bf16 = expert_shares["fp32"], expert_shares["bf16"]
    lines = [f"C1 at the run's defaults ({default_label}): {fp32.min():.1e} to {fp32.max():.1e} of the entries are "
             f"unchanged by the paper's criterion in fp32, and {bf16.min():.3f} to {bf16.max():.3f} once both "
             f"checkpoints are rounded to bf16, against the paper's {low:.0%}-{high:.0%}: {c1_default.verdict}."]
    share = grid["unchanged, bf16 checkpoint"]
    learned = grid[(grid["held-out gain"] > 0) & (grid["gain p"] < C1_ALPHA)]
    sparse = grid[share >= low]
    lines.append(f"C1 on the bf16 grid: the bf16 checkpoint leaves {share.min():.3f} to {share.max():.3f} unchanged "
                 f"across rates {', '.join(f'{r:g}' for r in grid.index)}; rates with a significant gain: "
                 f"{', '.join(f'{r:g}' for r in learned.index) or 'none'}; rates at or above {low:.0%}: "
                 f"{', '.join(f'{r:g}' for r in sparse.index) or 'none'}: {c1_paper.verdict}.")
    both = grid.loc[sorted(set(learned.index) & set(sparse.index))]
    if len(both):
        r = both.index.max()
        lines.append(f"  The largest rate that is both: {r:g}, with {both.loc[r, 'unchanged, bf16 checkpoint']:.4f} "
                     f"unchanged ({both.loc[r, 'unchanged, bf16 checkpoint'] - low:+.4f} from the bottom of the "
                     f"paper's range) and a gain of {both.loc[r, 'held-out gain']:+.3f}.")
    excess = share - grid["unchanged, dense control in bf16"]
    lines.append("  The bf16 share minus that of a dense edit of the same size, rounded the same way: "
                 + ", ".join(f"{v:+.3f} at {r:g}" for r, v in excess.items()) + ". "
                 + ("Near zero everywhere: the toy's bf16 sparsity is the size of a dense edit meeting bf16 rounding, "
                    "not RL choosing few weights." if excess.abs().max() < 0.05 else
                    "Where it is clearly positive, the edit is more concentrated than a dense one of its size."))
    f2 = c2.figures
    if c2.supported is None:
        lines.append(f"C2: not testable: {c2.why}.")
    else:
        lines.append(f"C2: the mean cross-domain Jaccard at the top {f2['fraction']:.0%} is "
                     f"{f2['mean_cross_domain']:.3f} (paper: below {C2_PAPER_MAX}; random sets "
                     f"{f2['random_expectation']:.3f}), against {f2['mean_same_domain']:.3f} for the same domain "
                     f"with two RL seeds: {c2.verdict}.")
    return "\n".join(lines)
