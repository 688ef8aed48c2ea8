"""Error breakdowns and controls (mdrl_lib.interference) on hand-written per-item tables."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from mdrl_lib.config import RunConfig
from mdrl_lib.domains.base import get_domain
from mdrl_lib.interference import CATEGORIES, breakdown, control_specs, drop_breakdown, error_category
from mdrl_lib.kit import Kit, Stage


def items(domain: str, completions: list[str], specs: list[dict]) -> pd.DataFrame:
    """A per-item table as Kit.item_results gives it, scored by the real toy verifier."""
    d = get_domain(domain)
    texts = [json.dumps(s) for s in specs]
    scores, details = d.score(completions, texts), d.details(completions, texts)
    return pd.DataFrame({"domain": domain, "item": range(len(completions)), "completion": completions,
                         "score": scores, "details": details})


MATH = [{"answer": "42"}, {"answer": "7"}, {"answer": "13"}, {"answer": "5"}, {"answer": "0"}]


def test_each_domain_sorts_hand_written_answers_into_the_four_kinds():
    def kinds(domain, completions, spec):
        table = items(domain, completions, [spec] * len(completions))
        return [error_category(domain, s, d) for s, d in zip(table["score"], table["details"])]

    assert kinds("math", ["42", "(42)", "42 years", "41", "x"], {"answer": "42"}) == [
        "right", "right content, wrong convention", "right content, wrong convention", "wrong content", "no answer"]
    assert kinds("qa", ["17 years", "17", "18 years", "bax"], {"answer": "17 years", "number": "17"}) == [
        "right", "right content, wrong convention", "wrong content", "no answer"]
    assert kinds("code", ["3*5+2", "9+8", "3+3", "import os"], {"target": 17, "digit": "3"}) == [
        "right", "wrong content", "wrong content", "no answer"]
    assert kinds("cw", ["2 bat 17 gem", "17 bat 2 gem", "bat gem"], {"letters": "bg", "length": 12}) == [
        "right", "wrong content", "no answer"]
    with pytest.raises(ValueError, match="valid domains"):
        error_category("physics", 0.0, {})


def test_breakdown_shares_sum_to_one_per_domain():
    table = breakdown(items("math", ["42", "(7)", "12", "", "0"], MATH))
    assert list(table.columns) == list(CATEGORIES)
    assert table.loc["math"].tolist() == [0.4, 0.2, 0.2, 0.2]


def test_a_drop_splits_into_convention_and_wrong_content():
    before = items("math", ["42", "7", "13", "4", "0"], MATH)  # 4 of 5 right
    after = items("math", ["42 x", "8", "13", "5", "(0)"], MATH)  # lost 3 (two by convention), gained 1
    result = drop_breakdown(before, after, "math")
    assert (result["n"], result["lost"], result["gained"]) == (5, 3, 1)
    assert result["lost: right content, wrong convention"] == 2 and result["lost: wrong content"] == 1
    assert result["lost: no answer"] == 0
    assert result["change"] == pytest.approx(after["score"].mean() - before["score"].mean())
    with pytest.raises(ValueError, match="different items"):
        drop_breakdown(before, after.iloc[:4], "math")
    with pytest.raises(ValueError, match="no items of domain 'qa'"):
        drop_breakdown(before, after, "qa")


def test_control_specs_take_the_later_stages_step_budget_from_the_same_checkpoint(tmp_path):
    kit = Kit(RunConfig.from_params(run_dir=str(tmp_path), rl_steps=50))
    specs = control_specs(kit, "code,math,qa,cw", "math", rl_seed=2)
    chain = kit.chain_specs("code,math,qa,cw", rl_seed=2)
    assert specs["after"] == chain[1] and specs["real chain"] == chain[-1]
    shuffled = specs["shuffled rewards"]
    assert (shuffled.domain, shuffled.reward, shuffled.parent.domain, shuffled.parent.reward) == (
        "cw", "shuffled", "qa", "shuffled")
    assert shuffled.parent.parent == chain[1]
    same = specs["more of the same"]
    assert isinstance(same, Stage) and same.domain == "math" and same.steps == 100 and same.parent == chain[1]
    assert len({kit.key(s) for s in specs.values()}) == 4
    with pytest.raises(ValueError, match="last stage"):
        control_specs(kit, "code,math,qa,cw", "cw")
    with pytest.raises(ValueError, match="not in the chain"):
        control_specs(kit, "code,qa", "math")
