"""C7 over the whole k curve (notebook 05): equal-size control sets, the k range, the per-item curve means and their
paired difference, rank correlation and sign agreement (L_A against the score), the damage in standard errors, and
the sweeps that draw several random sets, match a size, or score one domain, built end to end on a tiny kit."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from mdrl_lib.config import ConfigError, RunConfig
from mdrl_lib.kit import Kit
from mdrl_lib.recovery import (ObjectiveAlong, RollbackScores, coordinate_scores, curve_difference, curve_item_means,
                               deltas, in_range, paired_standard_errors, rank_correlation, rollback_draws,
                               sign_agreement, top_coordinates, top_coordinates_by_norm)
from mdrl_lib.specs import Base, GradientSteps, ObjectiveBatch


def test_the_equal_size_set_is_the_shortest_prefix_reaching_the_norm():
    delta = {"a": torch.tensor([3.0, 0.0, 4.0]), "b": torch.tensor([[1.0, 2.0]])}
    scores = {"a": torch.tensor([0.9, 0.8, 0.1]), "b": torch.tensor([[0.5, float("-inf")]])}
    # order by score: a0 (9), a1 (0), b0 (1), a2 (16); b1 never (-inf). Cumulative squares 9, 9, 10, 26.
    masks, count = top_coordinates_by_norm(scores, delta, math.sqrt(10))
    assert count == 3 and masks["a"].tolist() == [True, True, False] and masks["b"].tolist() == [[True, False]]
    assert top_coordinates_by_norm(scores, delta, 3.0)[1] == 1  # the first coordinate alone reaches 3
    assert top_coordinates_by_norm(scores, delta, 3.01)[1] == 3  # a1 moves nothing, b0 gets it over
    masks, count = top_coordinates_by_norm(scores, delta, 100.0)  # unreachable: every eligible coordinate
    assert count == 4 and not masks["b"][0, 1]
    assert top_coordinates_by_norm(scores, delta, 0.0)[1] == 0
    with pytest.raises(ValueError, match="norm"):
        top_coordinates_by_norm(scores, delta, -1.0)


def test_the_equal_size_set_is_a_prefix_of_the_same_order_as_the_equal_count_set():
    generator = torch.Generator().manual_seed(0)
    delta = {"w": torch.randn(50, 4, generator=generator), "v": torch.randn(30, generator=generator)}
    scores = coordinate_scores("magnitude", delta)
    masks, count = top_coordinates_by_norm(scores, delta, 5.0)
    same = top_coordinates(scores, count)
    assert all(torch.equal(masks[n], same[n]) for n in delta)
    moved = math.sqrt(sum(float((delta[n][masks[n]] ** 2).sum()) for n in delta))
    shorter = top_coordinates(scores, count - 1)
    before = math.sqrt(sum(float((delta[n][shorter[n]] ** 2).sum()) for n in delta))
    assert before < 5.0 <= moved  # the shortest prefix that reaches the size


def test_the_k_range_keeps_the_budgets_inside_it():
    assert in_range([0.001, 0.003, 0.01, 0.03, 0.1, 0.3], (0.001, 0.1)) == [0.001, 0.003, 0.01, 0.03, 0.1]
    assert in_range([0.3, 1.0], (0.001, 0.1)) == []
    with pytest.raises(ValueError, match="k range"):
        in_range([0.1], (0.1, 0.01))


def sweep(values: dict[float, list[float]], domain="math"):
    return pd.DataFrame([{"fraction": f, "domain": domain, "item": i, "score": s}
                         for f, scores in values.items() for i, s in enumerate(scores)])


def test_the_curve_difference_is_the_mean_over_items_of_each_item_s_mean_over_k():
    rule = sweep({0.01: [1, 1, 0, 0], 0.1: [1, 0, 0, 1]})
    control = sweep({0.01: [0, 1, 0, 0], 0.1: [0, 0, 0, 0]})
    assert curve_item_means(rule, "math", [0.01, 0.1]).tolist() == [1.0, 0.5, 0.0, 0.5]
    result = curve_difference(rule, control, "math", [0.01, 0.1], n_boot=500)
    assert result["diff"] == pytest.approx((1.0 + 0.0 + 0.0 + 0.5) / 4) and result["n"] == 4
    assert result["ci_low"] <= result["diff"] <= result["ci_high"]
    end = pd.DataFrame({"domain": "math", "item": range(4), "score": [1.0, 0.0, 0.0, 0.0]})  # one model, no k
    assert curve_difference(rule, end, "math", [0.01, 0.1])["diff"] == pytest.approx((0 + 0.5 + 0 + 0.5) / 4)
    assert curve_difference(rule, end, "math", [0.1])["diff"] == pytest.approx(0.25)  # only the budgets asked for
    with pytest.raises(ValueError, match="no budget"):
        curve_item_means(rule, "math", [0.03])


def test_rank_correlation_is_spearman():
    x, y = [1, 2, 3, 4, 5], [3, 5, 4, 2, 1]
    d = np.array([1, 2, 3, 4, 5]) - np.array([3, 5, 4, 2, 1])
    assert rank_correlation(x, y) == pytest.approx(1 - 6 * (d ** 2).sum() / (5 * 24))  # closed form, no ties
    assert rank_correlation([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3], [5, 1, 0]) == pytest.approx(-1.0)
    assert rank_correlation([1, 2, 2], [1, 2, 3]) == pytest.approx(np.corrcoef([1, 2.5, 2.5], [1, 2, 3])[0, 1])
    assert math.isnan(rank_correlation([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="length >= 3"):
        rank_correlation([1, 2], [1, 2])


def test_sign_agreement_counts_a_fall_of_l_a_with_a_rise_of_the_score():
    assert sign_agreement([-0.1, 0.2, -0.3, 0.0], [0.01, -0.02, -0.01, 0.05]) == pytest.approx(0.5)


def test_the_damage_in_standard_errors():
    before = pd.DataFrame({"domain": "math", "item": range(4), "score": [1.0, 1.0, 1.0, 0.0]})
    after = pd.DataFrame({"domain": "math", "item": [3, 2, 1, 0], "score": [0.0, 0.0, 1.0, 0.0]})  # any item order
    out = paired_standard_errors(before, after, "math")
    d = np.array([-1.0, 0.0, -1.0, 0.0])
    assert out["diff"] == pytest.approx(-0.5) and out["se"] == pytest.approx(d.std(ddof=1) / 2)
    assert out["z"] == pytest.approx(-0.5 / out["se"]) and out["n"] == 4
    assert math.isnan(paired_standard_errors(before, before, "math")["z"])


def test_bad_control_sweeps_are_refused():
    with pytest.raises(ConfigError, match="only the random rule"):
        RollbackScores(Base(), Base(), "math", "qa", "magnitude", (0.1,), draws=3)
    revert = RollbackScores(Base(), Base(), "math", "qa", "revert_stage", (1.0,), stage_after=Base())
    with pytest.raises(ConfigError, match="norm_of"):
        RollbackScores(Base(), Base(), "math", "qa", "magnitude", (0.1,), norm_of=revert)
    with pytest.raises(ConfigError, match="objective_along"):
        ObjectiveAlong(Base())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("k-curve-run")
    return Kit(RunConfig.from_params(run_dir=str(run_dir), warmup_steps=20, data_eval_size=6, model_hidden_size=32,
                                     model_num_layers=1, model_num_heads=2, model_intermediate_size=64))


def test_controls_at_equal_size_with_draws_and_l_a_along_them(tiny):
    objective = ObjectiveBatch(Base(), "cw", prompts=4, samples=2, min_score=0.0)
    moved = GradientSteps(Base(), objective, steps=2, lr=0.05)
    rule = RollbackScores(moved, Base(), "cw", "math", "first_order", (0.01, 0.1), objective=objective,
                          gradient_at=moved)
    size = RollbackScores(moved, Base(), "cw", "math", "random", (0.01, 0.1), norm_of=rule, draws=3, domains=("cw",))
    plain = RollbackScores(moved, Base(), "cw", "math", "random", (0.01, 0.1))
    assert "draws" not in plain.key_fields(tiny) and "norm_of" not in plain.key_fields(tiny)  # old keys kept
    targets = {r["fraction"]: r["norm"] for r in tiny.get(rule, progress=False).metrics["budgets"]}
    budgets = tiny.get(size, progress=False).metrics["budgets"]
    for row in budgets:
        assert row["norm"] >= targets[row["fraction"]] * (1 - 1e-6) and row["draws"] == 3
    draws = rollback_draws(tiny, size)
    assert set(draws["draw"]) == {0, 1, 2} and set(draws["domain"]) == {"cw"}
    means = tiny.open(size)
    expected = draws.groupby(["fraction", "item"])["score"].mean().sort_index().tolist()
    assert means.sort_values(["fraction", "item"])["score"].tolist() == pytest.approx(expected)
    along = ObjectiveAlong(objective, sweeps=(rule,), models=(moved, Base()))
    table = tiny.open(along)
    model, _ = tiny.load(moved, placement="analysis")
    with torch.no_grad():
        start = float(tiny.objective(objective).loss(model))
    assert table[table["source"] == "model"]["loss"].iloc[0] == pytest.approx(start, rel=1e-5)
    points = table[table["source"] == "rollback"]
    assert points["fraction"].tolist() == [0.01, 0.1] and points["norm"].tolist() == pytest.approx(
        list(targets.values()))
    current, reference = dict(tiny.weights(moved)), dict(tiny.weights(Base()))
    assert float(points["norm"].iloc[-1]) <= math.sqrt(sum(float((d ** 2).sum())
                                                           for d in deltas(current, reference).values()))
