"""Claim C0, the task-level observation the claims explain (a later domain's RL lowers an earlier domain),
introduced in notebook ``04_sequential_rl``.
"""
from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

from mdrl_lib.claims._format import _fmt
from mdrl_lib.claims.record import ClaimCheck

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
