"""Claim C0, the task-level observation the claims explain (a later domain's RL lowers an earlier domain),
introduced in notebook ``04_sequential_rl``.
"""
from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

from mdrl_lib.claims._format import _fmt
from mdrl_lib.claims.record import ClaimCheck
from mdrl_lib.claims.rules import rule

C0_STATEMENT = ("RL on later domains lowers an earlier domain: after Code -> Math -> QA -> CW, Math ends below "
                "the score it reached in its own stage, and by more than RL without the later domains' "
                "learning signal would move it.")
C0_PAPER = ("Math 66.49 right after its own stage (secondary summaries of the full text) -> 57.66 at the end of "
            "Code -> Math -> QA -> CW (abstract), AIME25 accuracy in %; one training run")
C0_ALPHA = rule("C0", "alpha")  # significance level of the paired comparison with the shuffled-reward control
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
    baseline = ("the RL-seed spread on one base" if len(changes) >= 2 else "the one RL seed's paired interval") + (
        "; the shuffled-reward control (same checkpoint, same later steps)")
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


def c0_narrative(check: ClaimCheck, controls: pd.DataFrame, split: pd.DataFrame, base_score: float, order,
                 rl_seed: int) -> str:
    """Where notebook 04's run agrees with the paper and where it does not, in words: the drop beside the
    paper's, the controls, what the lost items became, two cautions (the damaged domain's own stage still
    climbing; the stages before it costing more than it won back) and the verdict of ``check`` (C0).

    ``controls``: :func:`mdrl_lib.interference.control_table` (rows ``real chain``, ``shuffled rewards``,
    ``more of the same``); ``split``: :func:`mdrl_lib.interference.drop_splits`; ``base_score``: the base's
    score on the damaged domain; ``rl_seed``: the RL seed of the real chain in ``controls``."""
    from mdrl_lib.domains.base import DOMAIN_TITLES

    f = check.figures
    domain = f["domain"]
    title = DOMAIN_TITLES[domain]
    reference = controls.set_index("control")
    real, shuffled, more = (reference.loc[name] for name in ("real chain", "shuffled rewards", "more of the same"))
    paper = C0_PAPER_POINTS
    drop = paper["chain end"] - paper["after Math"]
    spread = (f"mean over {f['rl_seeds']} RL seeds {f['mean_change']:+.3f} [{f['mean_ci_low']:+.3f}, "
              f"{f['mean_ci_high']:+.3f}]." if f["rl_seeds"] >= 2 else
              f"paired {f['level']:.0%} interval [{f['mean_ci_low']:+.3f}, {f['mean_ci_high']:+.3f}] (one RL seed).")
    lines = [f"The paper: Math {paper['after Math']} -> {paper['chain end']} ({drop:+.2f} points, "
             f"{drop / paper['after Math']:.0%} of its post-stage value), one run. This run: {title} "
             f"{real['before']:.3f} -> {real['after']:.3f} on RL seed {rl_seed} "
             f"({real['change'] / real['before']:+.0%} of its post-stage value); {spread}",
             f"Against the controls: shuffled rewards moved {title} by {shuffled['change']:+.3f}, more {title} by "
             f"{more['change']:+.3f}; the real chain ended {shuffled['minus_reference']:+.3f} "
             f"[{shuffled['minus_reference_ci_low']:+.3f}, {shuffled['minus_reference_ci_high']:+.3f}] from the "
             f"shuffled-reward control (p={shuffled['minus_reference_p']:.2g})."]
    lost = split[["lost", "lost: right content, wrong convention", "lost: wrong content"]].sum()
    if lost["lost"]:
        seeds = "all RL seeds" if len(split) > 1 else split.index[0]
        lines.append(f"Of the {int(lost['lost'])} {title} items lost over the later stages ({seeds}), "
                     f"{lost['lost: right content, wrong convention'] / lost['lost']:.0%} kept the right content in "
                     f"the wrong convention and {lost['lost: wrong content'] / lost['lost']:.0%} became wrong content.")
    if more["change"] > 0 and more["p_value"] < 0.05:
        lines.append(f"Read the drop with care: as many more steps of {title} raised it by {more['change']:+.3f} "
                     f"(p={more['p_value']:.2g}), so {title}'s own stage had not converged; the drop is measured from "
                     f"a point that was still climbing, unlike the paper's peak.")
    if real["before"] < base_score:
        earlier = [DOMAIN_TITLES[d] for d in list(order)[:list(order).index(domain)]]
        lines.append(f"{title} right after its own stage ({real['before']:.3f}) is below the base's {base_score:.3f}: "
                     f"the stages before it ({', '.join(earlier) or 'none'}) cost more than its own stage won back.")
    lines.append(f"Verdict: {check.verdict}. {check.why}")
    return "\n".join(lines)
