"""Claims C3 (gradient conflict) and C4 (shared routes), introduced in notebook ``02_shared_routes``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import pandas as pd

from mdrl_lib.claims._format import _fmt
from mdrl_lib.claims.record import ClaimCheck
from mdrl_lib.domains.base import FRACTIONAL_DOMAINS
from mdrl_lib.claims.rules import rule

# ------------------------------------------------------------------------------------------- C3

C3_STATEMENT = ("Global gradients of two domains are near-orthogonal, yet individual modules conflict "
                "(negative cosine) or cooperate (positive cosine), and cancel in the global average.")
C3_PAPER = ("Math vs QA: global cosine about 0; a most-conflicting and a most-synergistic attention/MLP "
            "module whose effects cancel in the global average")
C3_RATIO = rule("C3", "ratio")  # a cosine within this fraction of its noise floor of 0 counts as orthogonal
C3_MIN_FLOOR = rule("C3", "min_floor")  # below this noise floor a gradient is mostly sampling noise


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
C4_ALPHA = rule("C4", "alpha")  # significance level of the overlap and ablation tests
C4_MIN_SHARE = rule("C4", "min_share")  # share of domain pairs that must share routes beyond chance


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


# ------------------------------------------------------------------------------------------- in words


def c3_pairs_table(checks: Sequence[ClaimCheck]) -> pd.DataFrame:
    """One row per C3 check (a domain pair): verdict, global cosine, noise floor, how many modules conflict
    and cooperate beyond their bands, and why."""
    return pd.DataFrame([{"pair": c.name.removesuffix("-gradients"), "verdict": c.verdict,
                          "global cosine": round(c.figures["global_cosine"], 4),
                          "noise floor": round(c.figures["noise_floor"], 3),
                          "conflicting / cooperating modules":
                              f"{c.figures['conflicting_modules']} / {c.figures['cooperating_modules']}",
                          "why": c.why} for c in checks]).set_index("pair")


def agreement(c3: ClaimCheck, c4: ClaimCheck) -> str:
    """Where a run agrees with the paper on C3 and C4, part by part, from the two checks' figures: C3's
    global part (orthogonal within its band) and module part (a module conflicts and one cooperates), C4's
    sharing part (pairs above chance) and use part (which of the ablated pair's domains the shared
    channels hurt more than random channels do)."""
    f3, f4 = c3.figures, c4.figures
    pair = " vs ".join(c3.name.removesuffix("-gradients").split("-"))
    lines = []
    if c3.supported is None:
        lines.append(f"C3 ({pair}): not testable on this run: {c3.why}.")
    else:
        orthogonal = f3["max_abs_global_cosine"] <= f3["ratio"] * f3["noise_floor"]
        modules = f3["conflicting_modules"] and f3["cooperating_modules"]
        lines.append(f"C3 ({pair}), global part {'agrees' if orthogonal else 'disagrees'}: the global cosine is "
                     f"{f3['global_cosine']:+.4f}, against a noise floor of {f3['noise_floor']:.3f}.")
        lines.append(f"C3, module part {'agrees' if modules else 'disagrees'}: {f3['conflicting_modules']} module(s) "
                     f"conflict and {f3['cooperating_modules']} cooperate beyond their noise bands; the most "
                     f"conflicting module ({f3['most_conflicting']}) has cosine {f3['most_conflicting_cosine']:+.4f} "
                     f"against its own floor {f3['most_conflicting_floor']:.3f}, the most synergistic "
                     f"({f3['most_synergistic']}) {f3['most_synergistic_cosine']:+.4f} against "
                     f"{f3['most_synergistic_floor']:.3f}.")
    lines.append(f"C4, sharing: {f4['pairs_above_chance']} of {f4['pairs']} pairs share more answer-position channels "
                 f"than chance; the largest overlap is {f4['largest_pair']} ({f4['largest_overlap']:.3f} against "
                 f"{f4['chance']:.3f}).")
    if c4.supported is not None:
        ablated = f4["ablated_pair"].split("-")
        used = [d for d in ablated if f4[f"{d}_shared_minus_random"] < 0 and f4[f"{d}_p"] < f4["alpha"]]
        lines.append(f"C4, use: ablating the {f4['shared_channels']} channels {f4['ablated_pair']} share hurts "
                     f"{len(used)} of its 2 domains more than random channels ({', '.join(used) or 'none'}).")
    return "\n".join(lines)
