"""Notebook 04's tables over stages, RL seeds and worlds (mdrl_lib.interference), on hand-made per-item tables."""
from __future__ import annotations

import pandas as pd
import pytest

from mdrl_lib.interference import (DROP_TABLE_COLUMNS, chain_curves, change_matrix, drop_splits, drops_by_seed,
                                   forgetting, seed_spread, starred_changes, world_drops)


def scored(domain: str, scores: list[float], details: list[dict] | None = None) -> pd.DataFrame:
    return pd.DataFrame({"domain": domain, "item": range(len(scores)), "score": scores,
                         "details": details or [{}] * len(scores)})


def chain(math_end: list[int], code_end: list[float]) -> dict[str, pd.DataFrame]:
    """A chain code -> math -> qa: Math all right after its own stage, Code half right after its own."""
    def checkpoint(math, code):
        return pd.concat([scored("math", math), scored("code", code)], ignore_index=True)

    return {"base": checkpoint([0] * 4, [0.0] * 4), "code": checkpoint([0] * 4, [1.0, 1.0, 0.0, 0.0]),
            "math": checkpoint([1] * 4, [1.0, 1.0, 0.0, 0.0]), "qa": checkpoint(math_end, code_end)}


def test_the_change_matrix_orders_stages_by_the_chain_and_stars_paired_p_below_alpha():
    domains = ["math", "code", "qa", "cw"]
    changes = pd.DataFrame({"stage": ["math"] * 4 + ["code"] * 4, "domain": domains * 2,
                            "change": [0.28, -0.027, 0.0, 0.01, -0.045, 0.105, 0.0, -0.02],
                            "p_value": [0.001, 0.2, 1.0, 0.5, 0.049, 0.05, 1.0, 0.5]})
    matrix = change_matrix(changes, ("code", "math"))
    assert list(matrix.index) == ["code", "math"] and list(matrix.columns) == ["code", "math", "qa", "cw"]
    assert matrix.loc["code", "code"] == 0.105 and matrix.loc["math", "code"] == -0.027
    text = starred_changes(changes, ("code", "math"))
    assert text.loc["math", "math"] == "+0.280 *" and text.loc["code", "math"] == "-0.045 *"
    assert text.loc["code", "code"] == "+0.105" and text.loc["math", "code"] == "-0.027"  # p = 0.05 is not below
    assert starred_changes(changes, ("code", "math"), alpha=0.1).loc["code", "code"] == "+0.105 *"


def test_the_seed_spread_is_the_mean_min_and_max_per_checkpoint_and_ignores_the_matrices_attrs():
    def matrix(math):
        table = pd.DataFrame({"math": math, "qa": [0.5, 0.5]}, index=pd.Index(["base", "math"], name="stage"))
        table.attrs["se"] = table * 0.1  # what Kit.score_matrix keeps there; pandas cannot compare it
        return table

    spread = seed_spread({0: matrix([0.6, 0.8]), 1: matrix([0.6, 0.9]), 2: matrix([0.6, 0.7])})
    assert list(spread.index) == ["base", "math"]
    assert spread.loc["math", ("math", "mean")] == pytest.approx(0.8)
    assert (spread.loc["math", ("math", "min")], spread.loc["math", ("math", "max")]) == (0.7, 0.9)
    one = seed_spread({0: matrix([0.6, 0.8])})
    assert one.loc["math", ("math", "min")] == one.loc["math", ("math", "max")] == one.loc["math", ("math", "mean")]
    curves = chain_curves({0: matrix([0.6, 0.8]), 2: matrix([0.6, 0.7])}, "math")
    assert list(curves.columns) == ["stage", "score", "run"] and curves["run"].tolist() == ["RL seed 0"] * 2 + [
        "RL seed 2"] * 2
    assert curves["score"].tolist() == [0.6, 0.8, 0.6, 0.7] and curves["stage"].tolist() == ["base", "math"] * 2


def test_drops_by_seed_stack_each_seeds_forgetting_and_can_keep_one_domain():
    items = {0: chain([1, 1, 0, 0], [1.0, 0.0, 0.0, 0.0]), 3: chain([1, 0, 0, 0], [1.0, 1.0, 0.0, 0.0])}
    drops = drops_by_seed(items, n_boot=200)
    assert list(drops.columns) == list(DROP_TABLE_COLUMNS)
    assert drops[["rl_seed", "domain"]].values.tolist() == [[0, "code"], [0, "math"], [3, "code"], [3, "math"]]
    math = drops[drops["domain"] == "math"].set_index("rl_seed")["change"]
    assert math.to_dict() == {0: pytest.approx(-0.5), 3: pytest.approx(-0.75)}
    only = drops_by_seed(items, n_boot=200, domains=["math"])
    assert only["domain"].tolist() == ["math", "math"]
    pd.testing.assert_frame_equal(only.reset_index(drop=True),
                                  drops[drops["domain"] == "math"].reset_index(drop=True))
    with pytest.raises(ValueError, match="no stage before the chain's last"):
        forgetting(items[0], domains=["qa"])


def test_drop_splits_count_lost_items_by_what_they_became_per_seed():
    math = lambda completions: scored(  # noqa: E731
        "math", [1.0 if c == "42" else 0.0 for c in completions],
        [{"number": None if c == "" else c.strip("()"), "right_number": c.strip("()") == "42"} for c in completions])
    after = {"math": math(["42", "42", "42", "42"])}
    items = {0: {**after, "cw": math(["(42)", "41", "42", "42"])}, 1: {**after, "cw": math(["42"] * 4)}}
    split = drop_splits(items, "math", "cw")
    assert list(split.index) == ["RL seed 0", "RL seed 1"]
    seed0 = split.loc["RL seed 0"]
    assert (seed0["lost"], seed0["lost: right content, wrong convention"], seed0["lost: wrong content"]) == (2, 1, 1)
    assert seed0["lost to convention"] == 0.5 and seed0["lost to wrong content"] == 0.5
    assert split.loc["RL seed 1", "lost"] == 0 and pd.isna(split.loc["RL seed 1", "lost to convention"])


def test_world_drops_hold_the_damaged_domains_forgetting_row_of_each_world_as_floats():
    worlds = {"world seed 5": chain([1, 1, 0, 0], [1.0, 1.0, 0.0, 0.0]),
              "digit-free world": chain([1, 1, 1, 1], [1.0, 1.0, 0.0, 0.0])}
    table = world_drops(worlds, "math")
    assert list(table.index) == list(worlds) and list(table.columns) == ["before", "after", "change", "ci_low",
                                                                         "ci_high", "p_value"]
    assert (table.dtypes == float).all()
    assert table.loc["world seed 5", "change"] == pytest.approx(-0.5) and table.loc["digit-free world", "change"] == 0
    expected = forgetting(worlds["world seed 5"]).set_index("domain").loc["math"]
    assert table.loc["world seed 5", "p_value"] == expected["p_value"]
