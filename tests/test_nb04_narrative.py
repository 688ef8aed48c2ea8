"""Notebook 04's narration (mdrl_lib.claims.nb04): the numbers behind C0's verdict in words, on hand-made tables."""
from __future__ import annotations

import pandas as pd

from mdrl_lib.claims.nb04 import (c0_narrative, check_c0, check_c0_specificity, drop_spread_text, lost_items_text,
                                  over_worlds_text, paper_points)

T_975_2 = 4.302653  # Student t quantile, 2 degrees of freedom


def drops(changes):
    return pd.DataFrame({"rl_seed": range(len(changes)), "change": changes, "ci_low": [c - 0.02 for c in changes],
                         "ci_high": [c + 0.02 for c in changes], "p_value": [0.001] * len(changes)})


def controls(real_after=0.6, permuted_after=0.7, more_change=0.05, more_p=0.01, more=True):
    """A control table; ``more=False`` leaves out the "more of the same" row (notebook 04's default)."""
    nan = float("nan")
    rows = [{"control": "real chain", "before": 0.8, "after": real_after, "change": real_after - 0.8, "p_value": 0.001,
             "minus_reference": nan, "minus_reference_ci_low": nan, "minus_reference_ci_high": nan,
             "minus_reference_p": nan}]
    for seed in (0, 1, 2):
        rows.append({"control": f"replayed rewards (seed {seed})", "before": 0.8, "after": permuted_after,
                     "change": permuted_after - 0.8, "p_value": 0.01, "minus_reference": real_after - permuted_after,
                     "minus_reference_ci_low": -0.15, "minus_reference_ci_high": -0.05, "minus_reference_p": 0.002})
    rows += [{"control": "more of the same", "before": 0.8, "after": 0.8 + more_change, "change": more_change,
                 "p_value": more_p, "minus_reference": real_after - 0.8 - more_change, "minus_reference_ci_low": -0.3,
                 "minus_reference_ci_high": -0.2, "minus_reference_p": 1e-5}] * more
    return pd.DataFrame(rows)


def specificity(random_changes=(-0.004, -0.001, -0.002), same_domain_change=0.05):
    versus = pd.DataFrame({"control": [f"replayed rewards (seed {s})" for s in (0, 1, 2)], "diff": [-0.1] * 3,
                           "ci_low": [-0.15] * 3, "ci_high": [-0.05] * 3, "p_value": [0.002] * 3})
    own = pd.DataFrame({"control": ["c"] * 2, "domain": ["qa", "cw"], "before": [0.6, 0.4], "after": [0.55, 0.4]})
    return check_c0_specificity(versus, {"diff": -0.1, "ci_low": -0.15, "ci_high": -0.05, "p_value": 0.002},
                                zero_advantage={"real": [0.7, 0.7], "controls": [[0.7, 0.72], [0.7, 0.68],
                                                                                 [0.72, 0.72]]},
                                distance={"real": 1.5, "controls": [1.4, 1.45, 1.5]}, own_domains=own,
                                random_changes=list(random_changes), same_domain_change=same_domain_change,
                                entropy={"real": [0.1] * 20, "controls": [[0.1] * 10 + [0.5 + 0.1 * i] * 10
                                                                          for i in range(3)]})


def splits(lost, convention, seeds=(0,)):
    rows = {f"RL seed {s}": {"lost": lost, "lost: right content, wrong convention": convention,
                             "lost: wrong content": lost - convention, "lost: no answer": 0, "gained": 3}
            for s in seeds}
    return pd.DataFrame(rows).T


def test_the_papers_points_are_shown_only_for_its_domain_and_order():
    assert paper_points("math", ["code", "math", "qa", "cw"]) == {"after Math": 66.49, "chain end": 57.66}
    assert paper_points("math", ("math", "code", "qa", "cw")) is None
    assert paper_points("code", "code,math,qa,cw") is None


def test_the_drop_spread_is_a_t_interval_over_seeds_or_one_seeds_paired_interval():
    three = drop_spread_text(drops([-0.05, -0.04, -0.06]), "Math", 0.015)
    half = T_975_2 * 0.01 / 3 ** 0.5  # sd 0.01
    interval = f"[{-0.05 - half:+.3f}, {-0.05 + half:+.3f}]"
    assert f"across 3 RL seeds: mean -0.050, 95% t interval {interval}, sd 0.010" in three
    assert three.endswith("one evaluation's standard error of Math is 0.015)")
    one = drop_spread_text(drops([-0.05]), "Math", 0.015)
    assert one.startswith("Math's drop on RL seed 0: -0.050, paired interval [-0.070, -0.030] (one RL seed")
    assert "t interval" not in one and len(one.splitlines()) == 2


def test_lost_items_are_told_per_seed():
    text = lost_items_text(splits(10, 4, seeds=(0, 2)), "Math")
    assert ("RL seed 0: 10 lost (4 to convention, 6 to wrong content, 0 to no answer), 3 gained; "
            "RL seed 2: 10 lost") in text


def test_the_drop_over_worlds_needs_two_worlds_and_leaves_the_digit_free_one_out():
    worlds = pd.DataFrame({"change": [-0.2, 0.0]}, index=["world seed 5", "digit-free world"])
    text = over_worlds_text(-0.1, worlds, "Math", run_seed=0, rl_seed=0)
    half = 12.706205 * (0.1 / 2 ** 0.5) / 2 ** 0.5  # t_{0.975, 1}, sd of (-0.1, -0.2)
    assert text.startswith("Math's drop over 2 worlds (run seed 0 and world_seeds, RL seed 0): mean -0.150")
    assert f"[{-0.15 - half:+.3f}, {-0.15 + half:+.3f}]" in text
    assert over_worlds_text(-0.1, worlds.loc[["digit-free world"]], "Math", run_seed=0, rl_seed=0) == ""


def test_the_narrative_tells_the_drop_the_controls_the_lost_items_the_cautions_and_the_verdicts():
    check = check_c0(drops([-0.2, -0.21, -0.19]))
    spec = specificity()
    text = c0_narrative(check, spec, controls(), splits(20, 5, seeds=(0, 1)), base_score=0.9,
                        order=("code", "math", "qa"), rl_seed=0).splitlines()
    assert text[0].startswith("The paper: Math 66.49 -> 57.66 (-8.83 points, -13% of its post-stage value), one run.")
    assert ("This run: Math 0.800 -> 0.600 on RL seed 0 (-25% of its post-stage value); "
            "mean over 3 RL seeds -0.200") in text[0]
    assert "permuted within the group, whatever the control's own completions are (3 control seeds)" in text[1]
    assert ("Zero-advantage share, mean over the steps: real 0.700, control 0.707; largest gap at any one step "
            "0.020") in text[1]
    assert "distance moved from the post-stage checkpoint: real 1.500, control 1.450" in text[1]
    assert "the real chain ended -0.100 [-0.150, -0.050] from their mean (p=0.002)" in text[1]
    assert text[2].startswith("The control stayed matched")
    text = text[:2] + text[3:]
    assert text[2].startswith("A random Gaussian displacement of the real later stages' size (per tensor), 3 draws, "
                              "moved Math by -0.002 on average (range -0.004 to -0.001)")
    assert "the damage needs RL's directions" in text[2]
    assert text[3] == "More Math for as many steps moved it by +0.050."
    assert text[4] == ("Of the 40 Math items lost over the later stages (all RL seeds), 25% kept the right content in "
                       "the wrong convention and 75% became wrong content.")
    assert text[5].startswith("Read the drop with care: as many more steps of Math raised it by +0.050")
    assert text[6].startswith("Math right after its own stage (0.800) is below the base's 0.900: the stages before "
                              "it (Code)")
    assert text[7] == f"Verdict C0(a), the observation: supported (outcome only). {check.why}"
    assert text[8] == f"Verdict C0(b), specificity: supported. {spec.why}"
    one = check_c0(drops([-0.2]))
    quiet = c0_narrative(one, specificity(random_changes=(-0.3, -0.2)), controls(more_change=0.05, more_p=0.2),
                         splits(0, 0), base_score=0.5, order=("code", "math", "qa"), rl_seed=0).splitlines()
    assert quiet[0].endswith("paired 95% interval [-0.220, -0.180] (one RL seed).")
    assert "size alone could explain the drop" in quiet[3]
    assert len(quiet) == 7 and quiet[5].startswith("Verdict C0(a)")  # nothing lost, no caution applies
    lost_one = c0_narrative(one, spec, controls(), splits(8, 0), base_score=0.5, order=("code", "math", "qa"),
                            rl_seed=0)
    assert "items lost over the later stages (RL seed 0)" in lost_one
    collapsed = specificity()
    object.__setattr__(collapsed, "premises", [{"name": "own domains kept", "value": 0.0, "threshold": 0.5,
                                                "holds": False}])
    told = c0_narrative(one, collapsed, controls(), splits(0, 0), base_score=0.5, order=("code", "math", "qa"),
                        rl_seed=0).splitlines()
    assert told[2].startswith("The control did not stay neutral on this run") and "own domains kept: 0" in told[2]
    assert told[2].endswith("The random-direction baseline and more of the same, below, remain as references.")
    assert "not a reason" not in told[2] and "reported, not retuned" in told[2]
    assert ("entropy went from 0.100 to 0.600 under the control (mean of its first and last 10 steps) against 0.100 "
            "to 0.100 under the real stages") in told[2]


def test_without_more_of_the_same_the_narrative_says_it_was_not_run_and_how_to_run_it():
    check = check_c0(drops([-0.2, -0.21, -0.19]))
    spec = specificity(same_domain_change=None)
    assert spec.figures["same_domain_change"] is None and "more steps of" not in spec.measured
    args = dict(split=splits(20, 5, seeds=(0, 1)), base_score=0.9, order=("code", "math", "qa"), rl_seed=0)
    with_row = c0_narrative(check, specificity(), controls(), **args).splitlines()
    text = c0_narrative(check, spec, controls(more=False), **args).splitlines()
    assert text[:4] == with_row[:4] and with_row[4] == "More Math for as many steps moved it by +0.050."
    assert text[4] == ("More of the same (Math itself for as many steps, the reference for whether its own stage had "
                       "converged) was not run: it is optional and off by default, to keep the toy pipeline within "
                       "its time budget (more_of_the_same = True, or -p more_of_the_same True, restores it: one more "
                       "stage).")
    # the caution "its own stage had not converged" needs that reference: without it the rest is unchanged
    assert with_row[6].startswith("Read the drop with care") and not any("Read the drop" in line for line in text)
    assert text[5:] == with_row[5:6] + with_row[7:]
    collapsed = specificity(same_domain_change=None)
    object.__setattr__(collapsed, "premises", [{"name": "own domains kept", "value": 0.0, "threshold": 0.5,
                                                "holds": False}])
    told = c0_narrative(check_c0(drops([-0.2])), collapsed, controls(more=False), splits(0, 0), base_score=0.5,
                        order=("code", "math", "qa"), rl_seed=0).splitlines()
    assert told[2].endswith("The random-direction baseline, below, remains as a reference.")
    assert "was not run" in told[4]
