"""Claim C0, the task-level observation the claims explain (a later domain's RL lowers an earlier domain),
introduced in notebook ``04_sequential_rl``.
"""
from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

from mdrl_lib.claims._format import _fmt
from mdrl_lib.claims.record import ClaimCheck, premise
from mdrl_lib.claims.rules import rule

C0_STATEMENT = ("RL on later domains lowers an earlier domain: after Code -> Math -> QA -> CW, Math ends below "
                "the score it reached in its own stage.")
C0_SPECIFIC_STATEMENT = ("The fall is specific to learning the later domains: RL of the same shape and length on "
                         "the same later domains, with rewards unrelated to the completions, leaves Math higher.")
C0_PAPER = ("Math 66.49 right after its own stage (secondary summaries of the full text) -> 57.66 at the end of "
            "Code -> Math -> QA -> CW (abstract), AIME25 accuracy in %; one training run")
C0_SPECIFIC_PAPER = "not reported: the paper runs no control of this kind"
C0_ALPHA = rule("C0", "alpha")  # significance level of the paired comparison with the within-group control
C0_LEVEL = rule("C0", "level")  # coverage of the interval over RL seeds
DROP_COLUMNS = ("rl_seed", "change", "ci_low", "ci_high", "p_value")
VERSUS_COLUMNS = ("control", "diff", "ci_low", "ci_high", "p_value")
ENTROPY_WINDOW = 10  # steps at each end of a run over which C0(b) reports the policy's mean token entropy
OWN_DOMAIN_COLUMNS = ("control", "domain", "before", "after")


# ---- C0's premises, each a function of measured numbers (notebook 04) ------------------------------------

def preconditions_premise(holds: bool) -> dict:
    """Premise: the base meets notebook 00's preconditions (every domain below the ceiling, a GRPO signal on
    every domain, Math's arithmetic learned in warm-up)."""
    return premise("the base meets notebook 00's preconditions", "yes" if holds else "no", "all hold", bool(holds))


def replicates_premise(count: int, minimum: int | None = None) -> dict:
    """Premise: at least ``minimum`` (rules file, ``[C0] min_control_replicates``) control replicates were run."""
    minimum = rule("C0", "min_control_replicates") if minimum is None else minimum
    return premise("control replicates (different control seeds) >= threshold", int(count), int(minimum),
                   int(count) >= int(minimum))


def step_gap(real, controls) -> float | None:
    """The largest |control_t - real_t| over the steps ``t`` and the replicates: ``real`` one value per step, each
    of ``controls`` one value per step (the same steps). ``None`` when a run is missing (``None``), holds a NaN or
    has another number of steps than the real run (nothing to compare step by step)."""
    controls = list(controls)
    if real is None or not controls or any(c is None for c in controls):
        return None
    real = [float(x) for x in real]
    if not real or any(_nan(x) for x in real):
        return None
    gaps = []
    for control in controls:
        control = [float(x) for x in control]
        if len(control) != len(real) or any(_nan(x) for x in control):
            return None
        gaps += [abs(c - r) for c, r in zip(control, real)]
    return max(gaps)


def zero_advantage_premise(real, controls, tolerance: float | None = None) -> dict:
    """Premise: at every optimizer step, every control replicate's share of zero-advantage groups is within
    ``tolerance`` (``[C0] zero_advantage_tolerance``) of the real chain's share at the same step. ``real``: the
    real run's share per step over its later stages (trl's ``frac_reward_zero_std`` as stored with each stage);
    ``controls``: one such list per replicate, or ``None`` for a run whose stages were built before GRPO
    diagnostics were recorded: then the premise cannot be measured and fails, its value saying so (as it does
    when the runs have different step counts). Value: the largest |control_t - real_t| over steps and replicates
    (:func:`step_gap`); the replayed control matches it by construction, so it is 0 up to rounding."""
    tolerance = rule("C0", "zero_advantage_tolerance") if tolerance is None else tolerance
    name = "zero-advantage share per step, |control - real| (largest over steps and replicates) <= threshold"
    gap = step_gap(real, controls)
    if gap is None:
        return premise(name, "not recorded", tolerance, False)
    return premise(name, gap, tolerance, gap <= tolerance)


def distance_premise(real: float, controls, band: tuple[float, float] | None = None) -> dict:
    """Premise: every control replicate moved a distance ||theta_end - theta_after|| within ``band``
    (``[C0] distance_ratio_band``, control / real) of the real chain's. Value: the ratio farthest from 1 (in
    log terms) among the replicates."""
    import math

    low, high = rule("C0", "distance_ratio_band") if band is None else band
    name = "distance moved, control / real (worst replicate) within the band"
    ratios = [float(c) / float(real) for c in controls] if real and float(real) > 0 else []
    if not ratios or any(r <= 0 for r in ratios):
        return premise(name, "not measured", f"[{low}, {high}]", False)
    worst = max(ratios, key=lambda r: abs(math.log(r)))
    return premise(name, worst, f"[{low}, {high}]", all(low <= r <= high for r in ratios))


def own_domains_premise(table: pd.DataFrame, floor: float | None = None) -> dict:
    """Premise: the control does not collapse its own domains: in ``table`` (columns ``control``, ``domain``,
    ``before`` = held-out score right after the damaged domain's stage, ``after`` = at the control's end; one
    row per replicate and later domain) every ``after / before`` is at least ``floor`` (``[C0]
    own_domain_floor``). Value: the smallest ratio (a ``before`` of 0 counts as ratio 1: nothing to lose)."""
    floor = rule("C0", "own_domain_floor") if floor is None else floor
    missing = [c for c in OWN_DOMAIN_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"own-domain table lacks columns {missing}; it needs {list(OWN_DOMAIN_COLUMNS)}")
    name = "control's own domains kept: held-out score at its end / after the stage (lowest) >= threshold"
    if table.empty:
        return premise(name, "not measured", floor, False)
    ratios = [a / b if b > 0 else 1.0 for a, b in zip(table["after"].astype(float), table["before"].astype(float))]
    return premise(name, min(ratios), floor, min(ratios) >= floor)


def _nan(x) -> bool:
    return isinstance(x, float) and x != x


def c0_rules_text() -> str:
    """C0's two rules and C0(b)'s premises in words, with the thresholds read from the rules file (what notebook 04
    prints beside its claim checks, so no number is written twice)."""
    low, high = rule("C0", "distance_ratio_band")
    return "\n".join([
        f"C0(a), the observation (tested: the outcome): supported when the {C0_LEVEL:.0%} interval of the change lies "
        f"below 0 (t interval over RL seeds; with one seed its paired interval, and the caveat 'one RL seed'). "
        f"Premise: the base meets notebook 00's preconditions.",
        f"C0(b), specificity (tested: the mechanism): supported when the real chain's end is below the control "
        f"replicates' mean end, paired over the items, at p < {C0_ALPHA}, and below every replicate's end.",
        f"C0(b)'s premises (a failed one makes it not testable here): the base meets notebook 00's preconditions; "
        f"at least {rule('C0', 'min_control_replicates')} control replicates; the control's share of zero-advantage "
        f"groups within {rule('C0', 'zero_advantage_tolerance')} of the real chain's at every step; "
        f"its distance moved within [{low}, {high}] x the real chain's; each replicate keeps at least "
        f"{rule('C0', 'own_domain_floor'):.0%} of each later domain's held-out score. Distance rule: "
        f"{rule('C0', 'distance_rule')} as the real later stages."])


# ---- C0(a): the observation ----------------------------------------------------------------------------

def check_c0(drops: pd.DataFrame, *, domain: str = "math", preconditions_hold: bool = True,
             level: float = C0_LEVEL) -> ClaimCheck:
    """C0(a), the observation on one base: does ``domain`` fall after the later stages? (tested: the outcome.)

    ``drops``: one row per RL seed of the chain on the run's base (columns ``rl_seed``, ``change`` = score at
    the chain's end - score right after ``domain``'s own stage, and its paired interval ``ci_low``,
    ``ci_high`` and ``p_value`` over the held-out items); ``preconditions_hold``: whether the base met
    notebook 00's preconditions (a premise).

    Rule, fixed before the run: supported when the interval of the change lies below 0: with two or more
    RL seeds the Student t interval at ``level`` of the mean change across seeds
    (:func:`mdrl_lib.stats.seed_mean_interval`); with one seed, that seed's paired interval (and the caveat
    "one RL seed"). Whether the fall is specific to the later domains is C0(b), :func:`check_c0_specificity`.
    """
    from mdrl_lib.stats import seed_mean_interval

    missing = [c for c in DROP_COLUMNS if c not in drops.columns]
    if missing:
        raise ValueError(f"drops lacks columns {missing}; it needs {list(DROP_COLUMNS)}")
    if drops.empty:
        raise ValueError("drops is empty: give one row per RL seed")
    changes = drops["change"].astype(float).tolist()
    seeds = [int(s) for s in drops["rl_seed"]]
    figures: dict[str, Any] = {"domain": domain, "rl_seeds": len(seeds), "level": level,
                               "preconditions_hold": bool(preconditions_hold)}
    for seed, row in zip(seeds, drops.itertuples()):
        figures[f"change_rl{seed}"] = float(row.change)
        figures[f"p_rl{seed}"] = float(row.p_value)
    caveats = []
    if len(changes) >= 2:
        interval = seed_mean_interval(changes, level=level)
        mean, low, high = interval.mean, interval.ci_low, interval.ci_high
        spread = f"t interval over {len(changes)} RL seeds"
    else:
        mean, low, high = changes[0], float(drops["ci_low"].iloc[0]), float(drops["ci_high"].iloc[0])
        spread = "paired interval of the one RL seed"
        caveats.append("one RL seed: the interval is over held-out items only, not over RL runs "
                       "(rl_seeds = \"0,1,2\" adds the spread of RL)")
    caveats.append("one base (one world seed) and one damaged domain")
    figures.update(mean_change=mean, mean_ci_low=low, mean_ci_high=high)
    measured = (f"{domain} at the chain's end minus right after its own stage: "
                + ", ".join(f"RL seed {s}: {_fmt(c)} (p={p:.2g})" for s, c, p in zip(seeds, changes, drops["p_value"]))
                + f"; mean {_fmt(mean)} [{_fmt(low)}, {_fmt(high)}] ({spread}, {level:.0%})")
    baseline = "no change (0), against the RL-seed spread on one base" if len(changes) >= 2 else (
        "no change (0), against the one RL seed's paired interval")
    falls = high < 0
    why = f"the {spread} of the change is {'below' if falls else 'not below'} 0 (upper end {_fmt(high)})"
    return ClaimCheck(claim="C0", name=f"{domain}-falls-after-later-stages", statement=C0_STATEMENT,
                      paper=C0_PAPER, measured=measured, baseline=baseline, supported=bool(falls), why=why,
                      figures=figures, premises=[preconditions_premise(preconditions_hold)], tested="outcome",
                      caveats=caveats)


# ---- C0(b): specificity against the within-group control -------------------------------------------------

def check_c0_specificity(real_minus_controls: pd.DataFrame, real_minus_mean: Mapping[str, float], *,
                         zero_advantage: Mapping[str, Any], distance: Mapping[str, Any], own_domains: pd.DataFrame,
                         preconditions_hold: bool = True, domain: str = "math",
                         random_changes: list[float] | None = None, same_domain_change: float | None = None,
                         mean_abs_advantage: Mapping[str, Any] | None = None, entropy: Mapping[str, Any] | None = None,
                         alpha: float = C0_ALPHA) -> ClaimCheck:
    """C0(b), specificity: does the real chain leave ``domain`` lower than RL of the same shape and length that
    learns nothing (each stage replays the real stage's group rewards, permuted within each group whatever the
    completions: :func:`mdrl_lib.training.replayed_reward`; several control seeds)? (tested: the mechanism
    "learning the later domains does the damage", against neutral RL drift.)

    Inputs: ``real_minus_controls``, one row per control replicate (columns ``control``, ``diff`` = real end -
    that replicate's end, its paired ``ci_low``, ``ci_high``, ``p_value`` over the held-out items);
    ``real_minus_mean``: the real end minus the replicates' mean end (each item's control score averaged over
    replicates), keys ``diff``, ``ci_low``, ``ci_high``, ``p_value`` (fractional paired test);
    ``zero_advantage``: ``{"real": [share per step], "controls": [[share per step] per replicate]}``, the share of
    zero-advantage groups at each step over the run's later stages (None: not recorded); ``mean_abs_advantage``
    (optional, reported): the same for the mean |advantage|; ``entropy`` (optional, reported): the same for the
    policy's mean token entropy (figures: its mean over the first and the last :data:`ENTROPY_WINDOW` steps,
    real and replicates' mean); ``distance``: ``{"real": norm,
    "controls": [norm per replicate]}``, ||theta_end - theta_after||; ``own_domains``: the replicates' held-out
    scores on the later domains (:func:`own_domains_premise`); ``random_changes`` (the random-direction
    baseline's change of ``domain`` per draw) and ``same_domain_change`` (``domain``'s change under as many more
    steps of itself; None when that optional control was not run) are reported, not judged.

    Premises (rules file ``[C0]``): the base meets notebook 00's preconditions; at least
    ``min_control_replicates`` replicates; zero-advantage share matched within ``zero_advantage_tolerance`` at
    every step (:func:`zero_advantage_premise`);
    distance ratio within ``distance_ratio_band``; the control's own domains kept above ``own_domain_floor``.
    A failed premise makes the verdict "not testable here".

    Rule: supported when the real end lies below the replicates' mean end (``diff < 0`` at ``p < alpha``) and
    below every replicate's end (``diff < 0``).
    """
    import statistics

    missing = [c for c in VERSUS_COLUMNS if c not in real_minus_controls.columns]
    if missing:
        raise ValueError(f"real_minus_controls lacks columns {missing}; it needs {list(VERSUS_COLUMNS)}")
    v = {k: float(real_minus_mean[k]) for k in ("diff", "ci_low", "ci_high", "p_value")}
    replicates = len(real_minus_controls)
    zero_controls = list(zero_advantage.get("controls") or [])
    dist_controls = [float(d) for d in distance.get("controls") or []]

    def run_mean(values):
        values = None if values is None else [float(x) for x in values]
        return statistics.fmean(values) if values and not any(_nan(x) for x in values) else None

    def mean_or_none(runs):
        means = [run_mean(r) for r in runs]
        return statistics.fmean(means) if means and all(m is not None for m in means) else None

    figures: dict[str, Any] = {
        "domain": domain, "alpha": alpha, "control_replicates": replicates,
        "zero_advantage_share_real": run_mean(zero_advantage.get("real")),
        "zero_advantage_share_control": mean_or_none(zero_controls),
        "zero_advantage_step_gap": step_gap(zero_advantage.get("real"), zero_controls),
        "distance_real": distance.get("real"),
        "distance_control": statistics.fmean(dist_controls) if dist_controls else None,
        "real_minus_control_mean": v["diff"], "real_minus_control_mean_ci_low": v["ci_low"],
        "real_minus_control_mean_ci_high": v["ci_high"], "real_minus_control_mean_p": v["p_value"],
        "same_domain_change": same_domain_change, "preconditions_hold": bool(preconditions_hold)}
    if entropy is not None:
        for run, values in (("real", [entropy.get("real")]), ("control", list(entropy.get("controls") or []))):
            for end, part in (("first", slice(None, ENTROPY_WINDOW)), ("last", slice(-ENTROPY_WINDOW, None))):
                figures[f"entropy_{run}_{end}"] = mean_or_none([None if v is None else list(v)[part] for v in values])
    if mean_abs_advantage is not None:
        figures["mean_abs_advantage_step_gap"] = step_gap(mean_abs_advantage.get("real"),
                                                          list(mean_abs_advantage.get("controls") or []))
    for i, row in enumerate(real_minus_controls.itertuples()):
        figures[f"real_minus_control_{i + 1}"] = float(row.diff)
        figures[f"real_minus_control_{i + 1}_p"] = float(row.p_value)
    if random_changes:
        figures.update(random_draws=len(random_changes), random_change_mean=statistics.fmean(random_changes),
                       random_change_min=min(random_changes), random_change_max=max(random_changes))
    premises = [preconditions_premise(preconditions_hold), replicates_premise(replicates),
                zero_advantage_premise(zero_advantage.get("real"), zero_controls),
                distance_premise(distance.get("real") or 0.0, dist_controls), own_domains_premise(own_domains)]
    measured = (f"real chain's end minus the replayed-reward control's ({replicates} replicates): mean "
                f"{_fmt(v['diff'])} [{_fmt(v['ci_low'])}, {_fmt(v['ci_high'])}] (p={v['p_value']:.2g}); per replicate "
                + ", ".join(f"{_fmt(float(r.diff))} (p={float(r.p_value):.2g})" for r in real_minus_controls.itertuples()))
    if random_changes:
        measured += (f"; {domain} at {len(random_changes)} random directions of the real size: mean "
                     f"{_fmt(figures['random_change_mean'])} (range {_fmt(min(random_changes))} to "
                     f"{_fmt(max(random_changes))})")
    if same_domain_change is not None:
        measured += f"; more steps of {domain} itself: {_fmt(same_domain_change)}"
    baseline = ("RL on the same later domains for the same steps, each step's groups given the real run's group rewards "
                "at that step, permuted within the group whatever the completions (the same zero-advantage groups "
                "and advantage sizes at every step, nothing to learn), several control seeds")
    below_mean = v["diff"] < 0 and v["p_value"] < alpha
    below_each = replicates > 0 and all(float(d) < 0 for d in real_minus_controls["diff"])
    why = (f"the real chain ends {'below' if below_mean else 'not below'} the control replicates' mean at p < {alpha} "
           f"(difference {_fmt(v['diff'])}, p={v['p_value']:.2g}) and {'below' if below_each else 'not below'} "
           f"every replicate's end")
    caveats = ["one base (one world seed) and one damaged domain; the control replicates share one post-stage "
               "checkpoint of one RL seed"]
    return ClaimCheck(claim="C0", name=f"{domain}-fall-beyond-neutral-rl", statement=C0_SPECIFIC_STATEMENT,
                      paper=C0_SPECIFIC_PAPER, measured=measured, baseline=baseline,
                      supported=bool(below_mean and below_each), why=why, figures=figures, premises=premises,
                      tested="mechanism", caveats=caveats)


# ---- notebook 04's narration: the numbers behind the verdict, in words ----------------------------------

C0_PAPER_POINTS = {"after Math": 66.49, "chain end": 57.66}  # AIME25 accuracy (%), Code -> Math -> QA -> CW
PAPER_ORDER = ("code", "math", "qa", "cw")


def paper_points(domain: str, order) -> dict[str, float] | None:
    """The paper's reported figures for ``domain`` along the chain ``order`` (:data:`C0_PAPER_POINTS`), or
    ``None`` when the paper reports none for them (another domain or another order)."""
    return dict(C0_PAPER_POINTS) if domain == "math" and tuple(order) == PAPER_ORDER else None


def drop_spread_text(damaged: pd.DataFrame, title: str, one_eval_se: float, level: float = 0.95) -> str:
    """The damaged domain's drop across RL seeds in words (``damaged``: one :func:`mdrl_lib.interference.forgetting`
    row per RL seed, columns ``rl_seed``, ``change``, ``ci_low``, ``ci_high``): with two or more seeds, the
    mean and its Student t interval (criterion (a) of :func:`check_c0`); with one, that seed's paired
    interval. Then one evaluation's standard error of the domain, for scale only."""
    from mdrl_lib.stats import seed_mean_interval

    if len(damaged) >= 2:
        across = seed_mean_interval(damaged["change"], level=level)
        first = (f"{title}'s drop across {across.n} RL seeds: mean {across.mean:+.3f}, {level:.0%} t interval "
                 f"[{across.ci_low:+.3f}, {across.ci_high:+.3f}], sd {across.sd:.3f}")
    else:
        row = damaged.iloc[0]
        first = (f"{title}'s drop on RL seed {int(row['rl_seed'])}: {row['change']:+.3f}, paired interval "
                 f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}] (one RL seed: no spread across seeds; "
                 f'rl_seeds = "0,1,2" adds it)')
    return first + f"\n(for scale only, not a test: one evaluation's standard error of {title} is {one_eval_se:.3f})"


def lost_items_text(split: pd.DataFrame, title: str) -> str:
    """What became of the items ``title`` lost over the later stages, per RL seed, in words (``split``:
    :func:`mdrl_lib.interference.drop_splits`)."""
    return (f"Items {title} answered right after its stage and not at the chain's end: "
            + "; ".join(f"{i}: {int(r.lost)} lost ({int(r['lost: right content, wrong convention'])} to convention, "
                        f"{int(r['lost: wrong content'])} to wrong content, {int(r['lost: no answer'])} to no answer), "
                        f"{int(r.gained)} gained" for i, r in split.iterrows()))


def over_worlds_text(own_change: float, world_drops: pd.DataFrame, title: str, run_seed: int, rl_seed: int,
                     skip: tuple[str, ...] = ("digit-free world",), level: float = 0.95) -> str:
    """The damaged domain's drop over worlds in words: the run's own world (``own_change``, RL seed
    ``rl_seed``) and each other world seed of ``world_drops`` (:func:`mdrl_lib.interference.world_drops`;
    the worlds named in ``skip``, which differ by more than their seed, left out), mean with a Student t
    interval; ``""`` with fewer than two worlds."""
    from mdrl_lib.stats import seed_mean_interval

    changes = [own_change] + [row["change"] for name, row in world_drops.iterrows() if name not in skip]
    if len(changes) < 2:
        return ""
    over = seed_mean_interval(changes, level=level)
    return (f"{title}'s drop over {over.n} worlds (run seed {run_seed} and world_seeds, RL seed {rl_seed}): "
            f"mean {over.mean:+.3f}, {level:.0%} t interval [{over.ci_low:+.3f}, {over.ci_high:+.3f}]")


def c0_narrative(check: ClaimCheck, specificity: ClaimCheck, controls: pd.DataFrame, split: pd.DataFrame,
                 base_score: float, order, rl_seed: int) -> str:
    """Where notebook 04's run agrees with the paper and where it does not, in words: the drop beside the
    paper's (C0(a), ``check``), the replayed-reward control and whether it stayed neutral (its zero-advantage share
    step by step, its distance and its own domains beside the real chain's; its entropy when it did not), what the
    random-direction baseline says, the other control (more of the same, or that it was not run and how to run
    it), what the lost items became, two cautions (the damaged domain's own stage still climbing, judged only
    when more of the same was run; the stages before it costing more than it won back) and both verdicts.

    ``specificity``: C0(b) (:func:`check_c0_specificity`); ``controls``: :func:`mdrl_lib.interference.control_table`
    (rows ``real chain``, the ``replayed rewards (seed <s>)`` replicates; optionally ``more of the same``, which
    notebook 04 runs only with ``more_of_the_same = True``, and a ``random directions`` row); ``split``:
    :func:`mdrl_lib.interference.drop_splits`; ``base_score``: the base's score on the damaged domain;
    ``rl_seed``: the RL seed of the real chain in ``controls``."""
    from mdrl_lib.domains.base import DOMAIN_TITLES

    f, g = check.figures, specificity.figures
    domain = f["domain"]
    title = DOMAIN_TITLES[domain]
    reference = controls.set_index("control")
    real = reference.loc["real chain"]
    more = reference.loc["more of the same"] if "more of the same" in reference.index else None
    replayed = reference[[str(n).startswith("replayed rewards") for n in reference.index]]
    paper = C0_PAPER_POINTS
    drop = paper["chain end"] - paper["after Math"]
    spread = (f"mean over {f['rl_seeds']} RL seeds {f['mean_change']:+.3f} [{f['mean_ci_low']:+.3f}, "
              f"{f['mean_ci_high']:+.3f}]." if f["rl_seeds"] >= 2 else
              f"paired {f['level']:.0%} interval [{f['mean_ci_low']:+.3f}, {f['mean_ci_high']:+.3f}] (one RL seed).")
    lines = [f"The paper: Math {paper['after Math']} -> {paper['chain end']} ({drop:+.2f} points, "
             f"{drop / paper['after Math']:.0%} of its post-stage value), one run. This run: {title} "
             f"{real['before']:.3f} -> {real['after']:.3f} on RL seed {rl_seed} "
             f"({real['change'] / real['before']:+.0%} of its post-stage value); {spread}"]

    def share(x):
        return "not recorded" if x is None else f"{x:.3f}"

    def dist(x):
        return "not measured" if x is None else f"{x:.3f}"

    if len(replayed):
        gap = g.get("zero_advantage_step_gap")
        lines.append(
            f"The control that learns nothing: the same later stages, same steps and rate, but at each step every group "
            f"of completions is given the real run's rewards of the same group at the same step, permuted within the "
            f"group, whatever the control's own completions are ({len(replayed)} control seeds). Its rewards do not "
            f"depend on what it writes, so it learns nothing about those domains, while every step has exactly the "
            f"real run's zero-advantage groups and advantage sizes. Zero-advantage share, mean over the steps: real "
            f"{share(g.get('zero_advantage_share_real'))}, control {share(g.get('zero_advantage_share_control'))}; "
            f"largest gap at any one step {share(gap)}; distance moved from the post-stage checkpoint: real "
            f"{dist(g.get('distance_real'))}, control {dist(g.get('distance_control'))} (mean over replicates). "
            f"{title} moved by " + ", ".join(f"{c:+.3f}" for c in replayed["change"])
            + f" under the {len(replayed)} control replicates; the real chain ended {g['real_minus_control_mean']:+.3f} "
            f"[{g['real_minus_control_mean_ci_low']:+.3f}, {g['real_minus_control_mean_ci_high']:+.3f}] from their "
            f"mean (p={g['real_minus_control_mean_p']:.2g}).")
        failed = specificity.failed_premises
        if failed:
            entropy = ""
            if g.get("entropy_control_last") is not None and g.get("entropy_real_last") is not None:
                entropy = (f" Here the policy's mean token entropy went from {g['entropy_control_first']:.3f} to "
                           f"{g['entropy_control_last']:.3f} under the control (mean of its first and last "
                           f"{ENTROPY_WINDOW} steps) against {g['entropy_real_first']:.3f} to "
                           f"{g['entropy_real_last']:.3f} under the real stages.")
            lines.append("The control did not stay neutral on this run, so it cannot say whether the fall is specific "
                         "(not testable here; the rules were fixed before the run, and a control that fails them is "
                         "reported, not retuned): "
                         + "; ".join(f"{p['name']}: {p['value']:.3g}" if isinstance(p["value"], float) else
                                     f"{p['name']}: {p['value']}" for p in failed)
                         + ". RL that learns nothing is not inert. Its advantages have the real sizes but random "
                           "signs with respect to what it wrote: on average they push nowhere, yet every step still "
                           "moves the weights by a full Adam step (Adam scales a step to the gradient's recent size, "
                           "not to whether it means anything), along the directions that change the sampled answers. "
                           "A zero-mean random push on the logits of a token the model is sure of lowers that token's "
                           "probability on average (the softmax saturates: a sure token has little to gain and much "
                           "to lose), so the policy's entropy rises step after step, and on a tiny model that spread "
                           "reaches the answers of the very domains the control trains on." + entropy
                         + (" The random-direction baseline and more of the same, below, remain as references."
                            if more is not None else " The random-direction baseline, below, remains as a reference."))
        else:
            lines.append("The control stayed matched: its zero-advantage share and distance are within the rules' "
                         "bounds, and it kept its own domains.")
    if g.get("random_draws"):
        lines.append(f"A random Gaussian displacement of the real later stages' size (per tensor), {g['random_draws']} "
                     f"draws, moved {title} by {g['random_change_mean']:+.3f} on average (range "
                     f"{g['random_change_min']:+.3f} to {g['random_change_max']:+.3f}): "
                     + ("distance alone, in a random direction, does little; the damage needs RL's directions."
                        if abs(g["random_change_mean"]) < abs(real["change"]) / 2 else
                        "a random move of this size does comparable damage, so size alone could explain the drop."))
    if more is not None:
        lines.append(f"More {title} for as many steps moved it by {more['change']:+.3f}.")
    else:
        lines.append(f"More of the same ({title} itself for as many steps, the reference for whether its own stage "
                     f"had converged) was not run: it is optional and off by default, to keep the toy pipeline "
                     f"within its time budget (more_of_the_same = True, or -p more_of_the_same True, restores it: "
                     f"one more stage).")
    lost = split[["lost", "lost: right content, wrong convention", "lost: wrong content"]].sum()
    if lost["lost"]:
        seeds = "all RL seeds" if len(split) > 1 else split.index[0]
        lines.append(f"Of the {int(lost['lost'])} {title} items lost over the later stages ({seeds}), "
                     f"{lost['lost: right content, wrong convention'] / lost['lost']:.0%} kept the right content in "
                     f"the wrong convention and {lost['lost: wrong content'] / lost['lost']:.0%} became wrong content.")
    if more is not None and more["change"] > 0 and more["p_value"] < 0.05:
        lines.append(f"Read the drop with care: as many more steps of {title} raised it by {more['change']:+.3f} "
                     f"(p={more['p_value']:.2g}), so {title}'s own stage had not converged; the drop is measured from "
                     f"a point that was still climbing, unlike the paper's peak.")
    if real["before"] < base_score:
        earlier = [DOMAIN_TITLES[d] for d in list(order)[:list(order).index(domain)]]
        lines.append(f"{title} right after its own stage ({real['before']:.3f}) is below the base's {base_score:.3f}: "
                     f"the stages before it ({', '.join(earlier) or 'none'}) cost more than its own stage won back.")
    for label, c in (("C0(a), the observation", check), ("C0(b), specificity", specificity)):
        # a "not testable here" why already starts with the verdict
        lines.append(f"Verdict {label}: " + (c.why if c.supported is None else f"{c.verdict}. {c.why}"))
    return "\n".join(lines)
