"""Claims C3 (gradient conflict) and C4 (shared routes), introduced in notebook ``02_shared_routes``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import pandas as pd

from mdrl_lib.claims._format import _fmt
from mdrl_lib.claims.record import ClaimCheck, premise
from mdrl_lib.domains.base import FRACTIONAL_DOMAINS
from mdrl_lib.claims.rules import rule

# ------------------------------------------------------------------------------------------- C3

C3_STATEMENT = ("Global gradients of two domains are near-orthogonal, yet individual modules conflict "
                "(negative cosine) or cooperate (positive cosine), and cancel in the global average.")
C3_PAPER = ("Math vs QA: global cosine about 0; a most-conflicting and a most-synergistic attention/MLP "
            "module whose effects cancel in the global average")
C3_RATIO = rule("C3", "ratio")  # a global cosine within this fraction of its noise floor of 0 counts as orthogonal
C3_MIN_FLOOR = rule("C3", "min_floor")  # below this noise floor a gradient is mostly sampling noise
C3_MIN_REPLICATES = rule("C3", "min_replicates")  # batch replicates a module's sign must reproduce on
C3_NULL_DRAWS = rule("C3", "null_draws")  # sign-flip draws of the null of the most extreme module
C3_NULL_LEVEL = rule("C3", "null_level")  # a module is beyond chance past this quantile of that null


def check_c3(pair: Sequence[str], global_cosines: Sequence[float], noise_floor: float,
             module_cosines: Mapping[str, Sequence[float]], module_floors: Mapping[str, float],
             cancellation: float | None = None, *, module_bands: Mapping[str, float],
             module_p: Mapping[str, float] | None = None, global_without_embeddings: Sequence[float] | None = None,
             embedding_contribution: float | None = None, where: str = "base", null_draws: int | None = None,
             caveats: Sequence[str] = (), ratio: float = C3_RATIO, min_floor: float = C3_MIN_FLOOR,
             min_replicates: int = C3_MIN_REPLICATES, level: float = C3_NULL_LEVEL) -> ClaimCheck:
    """C3 on one domain pair at one checkpoint, from gradient cosines on independent batch replicates.

    Inputs: ``global_cosines``, the pair's global gradient cosine over *every* parameter (embeddings
    included) on each replicate (replicate r pairs batch r of one domain with batch r of the other);
    ``noise_floor``, the smaller of the two domains' same-domain global cosines (two batches of one
    domain); ``module_cosines``, every module (attention and MLP blocks, the embeddings, ``other``: the
    norms) -> its cross-domain cosine on each replicate; ``module_floors``, module -> the smaller
    same-domain cosine of that module; ``module_bands``, module -> the |cosine| (averaged over replicates)
    beyond which it is beyond chance: the ``level`` quantile of the sign-flip null of the most extreme
    standardized module cosine times the module's null sd
    (:meth:`mdrl_lib.routes.ModuleNull.bands`); ``module_p`` (reported): each module's max-adjusted
    p-value; ``global_without_embeddings`` (reported, per replicate) and ``embedding_contribution`` (the
    embeddings' mean contribution to the global cosine); ``where``: the checkpoint (``"base"``, or the
    domain whose stage was trained first, e.g. ``"math"``); ``caveats``: what the recipe knows of its
    batches (e.g. prompts two replicates share).

    Rule, fixed before the run (thresholds in ``rules.toml`` [C3]):

    - premises: the global noise floor is at least ``min_floor`` (else a near-zero cross-domain cosine
      cannot be told from sampling noise) and there are at least ``min_replicates`` replicates;
    - near-orthogonal when every replicate has ``|global cosine| <= ratio * noise_floor`` (all parameters,
      the embeddings included: the paper's "global");
    - a module conflicts when its cosine is negative on every replicate *and* its mean |cosine| exceeds
      its band (beyond what the most extreme of all modules reaches by chance, family-wise at
      ``1 - level``); it cooperates likewise on the positive side; modules whose own floor is below
      ``min_floor`` count as neither;
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
        raise ValueError("module_cosines is empty: give the cosines of every module")
    if any(len(v) != len(cosines) for v in replicates.values()):
        raise ValueError(f"every module needs one cosine per replicate ({len(cosines)})")
    for label, given in (("module_floors", module_floors), ("module_bands", module_bands)):
        missing = sorted(set(replicates) - set(given))
        if missing:
            raise ValueError(f"{label} lacks module(s) {missing}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    floors = {m: float(module_floors[m]) for m in replicates}
    bands = {m: float(module_bands[m]) for m in replicates}
    mean = {m: sum(v) / len(v) for m, v in replicates.items()}
    usable = {m: v for m, v in replicates.items() if floors[m] >= min_floor}
    negative = [m for m, v in usable.items() if max(v) < 0]
    positive = [m for m, v in usable.items() if min(v) > 0]
    conflicting = [m for m in negative if -mean[m] > bands[m]]
    cooperating = [m for m in positive if mean[m] > bands[m]]
    sign_only = [m for m in negative + positive if m not in conflicting + cooperating]
    worst, best = min(mean, key=mean.get), max(mean, key=mean.get)
    mean_global = sum(cosines) / len(cosines)
    without = [float(c) for c in global_without_embeddings] if global_without_embeddings is not None else None
    figures = {"where": where, "global_cosine": mean_global, "max_abs_global_cosine": max(abs(c) for c in cosines),
               "global_cosine_without_embeddings": sum(without) / len(without) if without else None,
               "embedding_contribution": embedding_contribution, "rule_global": "all parameters, embeddings included",
               "rule_modules": "every module (attention, MLP, embeddings, other) against a sign-flip null of the max",
               "noise_floor": noise_floor, "cancellation": cancellation, "replicates": len(cosines),
               "null_draws": null_draws, "null_level": level,
               "conflicting_modules": len(conflicting), "cooperating_modules": len(cooperating),
               "conflicting": ", ".join(conflicting), "cooperating": ", ".join(cooperating),
               "sign_reproduces_within_chance": ", ".join(sign_only), "testable_modules": len(usable),
               "most_conflicting": worst, "most_conflicting_cosine": mean[worst],
               "most_conflicting_floor": floors[worst], "most_conflicting_band": bands[worst],
               "most_synergistic": best, "most_synergistic_cosine": mean[best],
               "most_synergistic_floor": floors[best], "most_synergistic_band": bands[best],
               "ratio": ratio, "min_floor": min_floor}
    if module_p is not None:
        figures.update({"most_conflicting_p": float(module_p[worst]), "most_synergistic_p": float(module_p[best])})
    checkpoint = "the base" if where == "base" else f"the {where} expert"
    measured = (f"{pair[0]} vs {pair[1]} at {checkpoint}: global cosine {_fmt(mean_global)} (replicates "
                f"{', '.join(_fmt(c) for c in cosines)})"
                + (f", {_fmt(figures['global_cosine_without_embeddings'])} without the embeddings" if without else "")
                + (f" (the embeddings contribute {_fmt(embedding_contribution)})" if embedding_contribution is not None
                   else "")
                + f"; most conflicting module {worst} ({_fmt(mean[worst])}, beyond chance past "
                f"{bands[worst]:.3f}), most synergistic {best} ({_fmt(mean[best])}, past {bands[best]:.3f})"
                + (f"; cancellation {cancellation:.2f}" if cancellation is not None else ""))
    baseline = (f"noise floor: same-domain cosine of two independent batches, {noise_floor:.3f} globally and per "
                f"module; modules against a sign-flip null of the most extreme standardized module cosine "
                f"({null_draws or 'some'} draws, {level:.0%} quantile); signs must reproduce on {len(cosines)} "
                f"independent batch replicates")
    premises = [premise("noise floor: the smaller same-domain global cosine >= threshold", float(noise_floor),
                        min_floor, noise_floor >= min_floor),
                premise("batch replicates >= threshold", len(cosines), min_replicates, len(cosines) >= min_replicates)]
    band = ratio * noise_floor
    orthogonal = figures["max_abs_global_cosine"] <= band
    why = (f"|global cosine| {'<=' if orthogonal else '>'} {ratio} x noise floor ({band:.3f}) on every replicate; "
           f"of {len(usable)} module(s) with a floor >= {min_floor}, {len(conflicting)} conflict "
           f"({', '.join(conflicting) or 'none'}) and {len(cooperating)} cooperate ({', '.join(cooperating) or 'none'})"
           f" beyond the null at {level:.0%} with a sign that reproduces on every replicate")
    if sign_only:
        why += (f"; {', '.join(f'{m} ({_fmt(mean[m])})' for m in sign_only)} keep their sign on every replicate but "
                f"stay within chance")
    notes = list(caveats)
    if embedding_contribution is not None and abs(mean_global) > 0 and abs(embedding_contribution) > abs(mean_global) / 2:
        notes.append(f"the embeddings carry {_fmt(embedding_contribution)} of the global cosine {_fmt(mean_global)}"
                     + (f"; without them it is {_fmt(figures['global_cosine_without_embeddings'])}" if without else ""))
    for side, found in (("conflicting", conflicting), ("cooperating", cooperating)):
        if len(found) == 1:
            p_note = f", max-adjusted p = {float(module_p[found[0]]):.2g}" if module_p is not None else ""
            notes.append(f"the module part rests on one {side} module ({found[0]}: {_fmt(mean[found[0]])} against a "
                         f"chance band of ±{bands[found[0]]:.3f}{p_note})")
    supported = bool(orthogonal and conflicting and cooperating)
    name = f"{pair[0]}-{pair[1]}-gradients" + ("" if where == "base" else f"-after-{where}")
    return ClaimCheck(claim="C3", name=name, statement=C3_STATEMENT, paper=C3_PAPER, measured=measured,
                      baseline=baseline, supported=supported, why=why, figures=figures, premises=premises,
                      tested="mechanism", caveats=notes)


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
C4_CONTROL_DRAWS = rule("C4", "control_draws")  # activation-matched random sets the shared set is held against
C4_ACTIVATION_BINS = rule("C4", "activation_bins")  # quantile bins per layer the control draws are matched in
C4_ACTIVATION_MATCH = rule("C4", "activation_match")  # premise: controls' activation within this fraction of the set's
C4_NEAR_MARGIN = rule("C4", "near_margin")  # a part this many pairs from its threshold gets a caveat


def threshold_margin(count: int, total: int, min_share: float) -> tuple[int, int]:
    """``(needed, margin)``: the fewest of ``total`` pairs that meet ``min_share`` (ceil(min_share x total)),
    and ``count - needed``: 0 passes at exactly the threshold, -1 fails by one pair. Introduced in
    ``02_shared_routes`` (C4's overlap part)."""
    import math

    if total < 1 or not 0 <= count <= total:
        raise ValueError(f"count must lie in [0, total] with total >= 1, got {count} of {total}")
    needed = math.ceil(min_share * total - 1e-9)
    return needed, count - needed


def activation_premises(ratios: Mapping[str, Sequence[float]], *, tolerance: float = C4_ACTIVATION_MATCH,
                        draws: int = C4_CONTROL_DRAWS) -> list[dict]:
    """C4's premises on its control: per domain, the matched random sets' mean activation over the shared
    set's (mean over draws) lies within ``1 ± tolerance`` (else no random set is as busy as the shared
    channels, and "hurts more than random" may only say "busy channels matter"); and each domain has at
    least ``draws`` draws. ``ratios``: domain -> one ratio per draw. Introduced in ``02_shared_routes``."""
    import numpy as np

    if not ratios:
        raise ValueError("ratios is empty: give each domain's activation ratios, one per control draw")
    out = []
    for domain, values in ratios.items():
        values = [float(v) for v in values]
        if not values:
            raise ValueError(f"no control draws for {domain!r}")
        mean = float(np.mean(values))
        out.append(premise(f"activation match ({domain}): matched controls' mean activation / the shared set's, "
                           f"within 1 ± threshold", round(mean, 4), tolerance, abs(mean - 1) <= tolerance))
    fewest = min(len(v) for v in ratios.values())
    out.append(premise("control draws per domain >= threshold", fewest, draws, fewest >= draws))
    return out


def check_c4(overlaps: pd.DataFrame, chance: float, pair: Sequence[str], shared_channels: int,
             contrasts: Sequence[AblationContrast] | None, *, q: float, alpha: float = C4_ALPHA,
             min_share: float = C4_MIN_SHARE, positions: str = "answer",
             activation_ratios: Mapping[str, Sequence[float]] | None = None,
             near_margin: int = C4_NEAR_MARGIN, caveats: Sequence[str] = ()) -> ClaimCheck:
    """C4 from the route overlaps of every domain pair and a causal test on one pair's shared channels.

    Inputs: ``overlaps``, one row per domain pair as :func:`mdrl_lib.routes.pairwise_overlaps` gives it
    (columns ``a``, ``b``, ``shared``, ``jaccard`` and ``p_value``, the chance of sharing at least that
    many channels if both routes were random); ``chance``, the Jaccard index of two random routes; ``pair``,
    the pair whose ``shared_channels`` were ablated; ``contrasts``, one :class:`AblationContrast` per
    domain of the pair (the shared set against its control: the mean over activation-matched random
    sets, :class:`mdrl_lib.routes.MatchedAblationControls`), or ``None`` when the ablation was not run;
    ``activation_ratios``: domain -> each control draw's mean activation over the shared set's, which
    :func:`activation_premises` turns into the check's premises (a control that cannot be as busy as the
    shared channels makes part (b) not testable).

    Rule, fixed before the run: supported when (a) at least ``min_share`` of the domain pairs share more
    channels than chance at ``p < alpha``, and (b) ablating the pair's shared channels lowers both of
    its domains' held-out scores more than the random set does (difference < 0, paired p < ``alpha``
    for each). Not testable (``None``) when the ablation was not run or the pair shares no channel;
    otherwise not supported. The figures hold part (a)'s margin (pairs above chance minus the pairs
    needed); a verdict part within ``near_margin`` pairs of its threshold (a margin of 0 or -1 at 1: one
    pair more or fewer would flip it) gets a caveat. ``caveats``: more, from the recipe.
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
    control = ("random channels of the same per-layer counts" if activation_ratios is None else
               f"the mean of {min(len(v) for v in activation_ratios.values())} activation-matched random sets per "
               f"domain (same layer, same activation quantile in that domain, none shared)")
    baseline = (f"chance: two random routes of the top {q:g} (Jaccard {chance:.3f}; hypergeometric p per pair); "
                f"ablation of the {shared_channels} {'-'.join(pair)} shared channels against {control}, "
                f"paired over held-out items")
    needed, margin = threshold_margin(len(above), len(names), min_share)
    overlap_ok = margin >= 0
    figures.update(pairs_needed=needed, overlap_margin=margin)
    part_a = (f"(a) {len(above)} of {len(names)} pairs above chance at p < {alpha}, "
              f"{'at least' if overlap_ok else 'fewer than'} {min_share:.0%} (needs {needed}; margin {margin:+d})")
    notes = list(caveats)
    if -near_margin <= margin < near_margin:
        notes.append(f"part (a) sits within {near_margin} pair of its threshold ({len(above)} of {len(names)} "
                     f"above chance, {needed} needed): one pair {'fewer would fail' if overlap_ok else 'more would pass'}"
                     f" it; the {len(names)} pairs are tested at p < {alpha} each, uncorrected")
    premises = activation_premises(activation_ratios) if activation_ratios is not None else []
    if activation_ratios is not None:
        figures.update({f"{d}_activation_ratio": sum(v) / len(v) for d, v in activation_ratios.items()})
        figures["control_draws"] = min(len(v) for v in activation_ratios.values())
    if contrasts is None or shared_channels == 0:
        reason = "the ablation was not run" if contrasts is None else f"{'-'.join(pair)} share no channel"
        return ClaimCheck(claim="C4", name="shared-routes", statement=C4_STATEMENT, paper=C4_PAPER,
                          measured=measured, baseline=baseline, supported=None,
                          why=f"{part_a}; (b) not testable: {reason}", figures=figures, caveats=notes)
    by_domain = {c.domain: c for c in contrasts}
    lacking = [d for d in pair if d not in by_domain]
    if lacking:
        raise ValueError(f"contrasts lack the pair's domain(s) {lacking}")
    for d in pair:
        c = by_domain[d]
        figures.update({f"{d}_change_shared": c.change, f"{d}_change_random": c.control_change,
                        f"{d}_shared_minus_random": c.difference, f"{d}_p": c.p_value})
    measured += "; ablating the shared channels: " + ", ".join(
        f"{d} {_fmt(by_domain[d].change)} (control {_fmt(by_domain[d].control_change)}, p={by_domain[d].p_value:.2g})"
        for d in pair)
    hurt = [d for d in pair if by_domain[d].difference < 0 and by_domain[d].p_value < alpha]
    part_b = (f"(b) the shared channels hurt {len(hurt)} of 2 domains ({', '.join(hurt) or 'none'}) more "
              f"than {'random' if activation_ratios is None else 'activation-matched random'} channels at p < {alpha}")
    supported = bool(overlap_ok and len(hurt) == len(pair))
    # A domain whose control could not be matched leaves (b) untestable only where the verdict rests on it: when
    # (a) fails, or a domain with a matched control is not hurt more, the verdict is "not supported" either way.
    unmatched = [p for p in premises if p["name"].startswith("activation match") and not p["holds"]]
    matched_not_hurt = [d for d in pair if d not in hurt and not any(f"({d})" in p["name"] for p in unmatched)]
    if unmatched and (not overlap_ok or matched_not_hurt):
        decided_by = ("(a)" if not overlap_ok else
                      f"{', '.join(matched_not_hurt)}, whose control matches, is not hurt more")
        for p in unmatched:
            notes.append(f"{p['name'].split(':')[0]}: the matched random sets reach only {p['value']:.2f} of the "
                         f"shared channels' activation (no random set is as busy); the verdict does not rest on it: "
                         f"{decided_by}")
        premises = [p for p in premises if p not in unmatched]
    return ClaimCheck(claim="C4", name="shared-routes", statement=C4_STATEMENT, paper=C4_PAPER, measured=measured,
                      baseline=baseline, supported=supported,
                      why=f"{part_a}; {part_b}", figures=figures, premises=premises, caveats=notes)


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


def _c3_lines(c3: ClaimCheck) -> list[str]:
    f3 = c3.figures
    pair = " vs ".join(c3.name.split("-")[:2])
    where = "the base" if f3.get("where", "base") == "base" else f"the {f3['where']} expert"
    if c3.supported is None:
        return [f"C3 ({pair}, at {where}): not testable on this run: {c3.why.removeprefix('not testable here: ')}."]
    orthogonal = f3["max_abs_global_cosine"] <= f3["ratio"] * f3["noise_floor"]
    modules = f3["conflicting_modules"] and f3["cooperating_modules"]
    lines = [f"C3 ({pair}, at {where}), global part {'agrees' if orthogonal else 'disagrees'}: the global cosine is "
             f"{f3['global_cosine']:+.4f} against a noise floor of {f3['noise_floor']:.3f}"
             + (f"; without the embeddings it is {f3['global_cosine_without_embeddings']:+.4f} (the embeddings "
                f"contribute {f3['embedding_contribution']:+.4f})"
                if f3.get("global_cosine_without_embeddings") is not None and f3.get("embedding_contribution") is not None
                else "") + "."]
    lines.append(f"C3, module part {'agrees' if modules else 'disagrees'}: over {f3['replicates']} replicates, "
                 f"{f3['conflicting_modules']} module(s) conflict ({f3['conflicting'] or 'none'}) and "
                 f"{f3['cooperating_modules']} cooperate ({f3['cooperating'] or 'none'}) beyond the sign-flip null of "
                 f"the most extreme module; the most conflicting ({f3['most_conflicting']}) has cosine "
                 f"{f3['most_conflicting_cosine']:+.4f} against a chance band of ±{f3['most_conflicting_band']:.4f}, "
                 f"the most synergistic ({f3['most_synergistic']}) {f3['most_synergistic_cosine']:+.4f} against "
                 f"±{f3['most_synergistic_band']:.4f}.")
    if f3.get("sign_reproduces_within_chance"):
        lines.append(f"  Kept their sign on every replicate but within chance: {f3['sign_reproduces_within_chance']}. "
                     f"A sign that repeats is not yet a conflict: with independent replicates a module near 0 keeps "
                     f"its sign on all {f3['replicates']} by chance with probability {2 * 0.5 ** f3['replicates']:.2f}"
                     f" (the same batches' prompts shared between replicates make it likelier still).")
    return lines


def agreement(c3: ClaimCheck, c4: ClaimCheck, c3_after: ClaimCheck | None = None) -> str:
    """Where a run agrees with the paper on C3 and C4, part by part, from the checks' figures: C3's global
    part (orthogonal within its band; with and without the embeddings) and module part (a module conflicts
    and one cooperates beyond the null of the most extreme module, and the modules whose sign only
    repeats), at the base and (``c3_after``) after the first stage; C4's sharing part (pairs above chance,
    its margin) and use part (which of the ablated pair's domains the shared channels hurt more than
    activation-matched random channels do, and whether such channels exist)."""
    f4 = c4.figures
    lines = _c3_lines(c3) + (_c3_lines(c3_after) if c3_after is not None else [])
    margin = f4.get("overlap_margin")
    lines.append(f"C4, sharing: {f4['pairs_above_chance']} of {f4['pairs']} pairs share more answer-position channels "
                 f"than chance" + (f" ({f4['pairs_needed']} needed: margin {margin:+d})" if margin is not None else "")
                 + f"; the largest overlap is {f4['largest_pair']} ({f4['largest_overlap']:.3f} against "
                 f"{f4['chance']:.3f}).")
    ablated = f4["ablated_pair"].split("-")
    if all(f"{d}_shared_minus_random" in f4 for d in ablated):
        used = [d for d in ablated if f4[f"{d}_shared_minus_random"] < 0 and f4[f"{d}_p"] < f4["alpha"]]
        lines.append(f"C4, use: ablating the {f4['shared_channels']} channels {f4['ablated_pair']} share hurts "
                     f"{len(used)} of its 2 domains more than the control does ({', '.join(used) or 'none'}).")
    unmatched = [p for p in c4.failed_premises if p["name"].startswith("activation match")]
    for p in unmatched:
        lines.append(f"  {p['name'].split(':')[0]}: the matched random sets reach only {p['value']:.2f} of the shared "
                     f"channels' activation: they are among that domain's busiest channels, and no random set is as "
                     f"busy, so 'hurts more than random' cannot be told from 'busy channels matter'.")
    lines += [f"  {c}." for c in c4.caveats if c.startswith("activation match")]
    if c4.supported is None and "verdict_if_premises_held" in f4:
        lines.append(f"  Had the control matched, the rule would have said: {f4['verdict_if_premises_held']}.")
    return "\n".join(lines)
