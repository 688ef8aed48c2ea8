"""The studied pair: a seeded split of held-out items, each later stage's damage on both halves, the rule's choice;
and plans that wait for the data a choice reads."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mdrl_lib import pairs, plan
from mdrl_lib.config import RunConfig
from mdrl_lib.kit import open_kit

from tests.test_plan import Fake, planned


def test_halves_are_disjoint_cover_the_items_and_ignore_their_order():
    items = list(range(101))
    sel, rep = pairs.half_items(items, "selection", seed=3), pairs.half_items(items[::-1], "report", seed=3)
    assert not set(sel) & set(rep) and sorted(sel + rep) == items and len(sel) == 50
    assert pairs.half_items(items, "selection", seed=3) == sel  # deterministic
    assert pairs.half_items(items, "selection", seed=4) != sel  # and seeded
    assert sel != list(range(50))  # a permutation, not the first half of the ids
    with pytest.raises(ValueError, match="valid: selection, report"):
        pairs.half_items(items, "train")
    with pytest.raises(ValueError, match="unique"):
        pairs.half_items([1, 1, 2], "report")


def _table(domain_scores: dict[str, list[float]]) -> pd.DataFrame:
    rows = [{"domain": d, "item": i, "score": s, "details": {}} for d, scores in domain_scores.items()
            for i, s in enumerate(scores)]
    return pd.DataFrame(rows)


def _chain(math_after: dict[str, list[float]], n: int = 200) -> dict[str, pd.DataFrame]:
    """Base, code and math stages with Math right on every item, then qa and cw with the given Math scores."""
    full = [1.0] * n
    out = {"base": _table({"math": full}), "code": _table({"math": full}), "math": _table({"math": full})}
    for stage, scores in math_after.items():
        out[stage] = _table({"math": scores})
    return out


def test_the_rule_picks_the_stage_that_lowers_a_most_on_the_selection_half():
    n = 200
    qa = [1.0] * n
    cw = [1.0] * n
    for i in range(0, n, 4):
        cw[i] = 0.0  # CW's stage loses a quarter of the items (QA's stage loses none)
    choice = pairs.choose_pair(_chain({"qa": qa, "cw": cw}, n), "math", seed=0)
    assert choice.pair == "math,cw" and choice.stage == "cw"
    table = choice.table.set_index(["stage", "half"])
    assert table.loc[("qa", "selection"), "change"] == 0.0
    lost = {h: sum(1 for i in pairs.half_items(range(n), h, seed=0) if i % 4 == 0) for h in pairs.HALVES}
    for half in pairs.HALVES:  # the change over CW's stage is what is lost on that half, hand-counted
        assert table.loc[("cw", half), "change"] == pytest.approx(-lost[half] / (n // 2))
    assert choice.reported()["half"] == "report" and "Chosen: Math-CW" in choice.text()


def test_ties_go_to_the_earlier_stage_and_bad_input_is_named():
    flat = [1.0] * 40
    assert pairs.choose_pair(_chain({"qa": flat, "cw": flat}, 40), "math", seed=0).stage == "qa"
    with pytest.raises(ValueError, match="stages: code, math, qa"):
        pairs.later_stage_damage(_chain({"qa": flat}, 40), "cw")
    with pytest.raises(ValueError, match="last stage"):
        pairs.later_stage_damage(_chain({"qa": flat}, 40), "qa")


def test_split_items_splits_each_domain_on_its_own_items():
    table = pd.concat([_table({"math": [1.0] * 10}), _table({"qa": [0.0] * 6})])
    sel = pairs.split_items(table, "selection", seed=1)
    assert sel.groupby("domain").size().to_dict() == {"math": 5, "qa": 3}
    assert sorted(sel[sel["domain"] == "qa"]["item"]) == pairs.half_items(range(6), "selection", seed=1)


def test_a_pending_plan_is_planned_again_once_what_it_reads_is_built(tmp_path):
    first = Fake("chain")
    later = Fake("pair-stage", (first,))
    kit = open_kit(RunConfig.from_params(run_dir=str(tmp_path)))
    calls = []

    def plan_once(pending):
        calls.append(1)
        if kit.store.get(kit.key(first)) is None:
            pending.append(("03_perturbation_theory", "its pair is chosen from the chain"))
            return plan.build_graph(planned(tmp_path, first))
        return plan.build_graph(planned(tmp_path, later))

    built = plan.build_in_rounds(plan_once, workers=1, log=lambda line: None)
    assert len(built) == 2 and len(calls) == 2 and kit.store.get(kit.key(later)) is not None
    text = plan.format_plan(plan.build_graph(planned(tmp_path, first)), "toy", 1,
                            [("03_perturbation_theory", "its pair is chosen from the chain")])
    assert "not planned yet: part of 03_perturbation_theory (its pair is chosen from the chain)" in text
