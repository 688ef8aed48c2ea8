"""Rollback (mdrl_lib.recovery): exactly the chosen coordinates go back, and each rule picks what a
hand-made case says it must."""
from __future__ import annotations

import pytest
import torch

from mdrl_lib.recovery import (RULES, budget_count, change_norm, coordinate_scores, deltas, roll_back,
                               sparse_gradient_step, top_coordinates)

BEFORE = {"a": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "b": torch.tensor([0.0, 0.0, 0.0])}
AFTER = {"a": torch.tensor([[1.5, 2.0], [2.0, 4.1]]), "b": torch.tensor([0.3, -0.2, 0.0])}
GRAD = {"a": torch.tensor([[1.0, 5.0], [-1.0, 2.0]]), "b": torch.tensor([1.0, 1.0, 9.0])}


def test_deltas_and_shapes():
    d = deltas(AFTER, BEFORE)
    assert torch.allclose(d["a"], torch.tensor([[0.5, 0.0], [-1.0, 0.1]]))
    with pytest.raises(ValueError, match="shape"):
        deltas({"a": torch.zeros(3)}, {"a": torch.zeros(2)})


def test_first_order_rule_ranks_by_gradient_times_delta():
    """g * delta: a (0,0) 0.5, a (1,0) 1.0, a (1,1) 0.2, b[0] 0.3, b[1] -0.2; the top 2 are a(1,0), a(0,0)."""
    scores = coordinate_scores("first_order", deltas(AFTER, BEFORE), gradient=GRAD)
    masks = top_coordinates(scores, 2)
    assert masks["a"].tolist() == [[True, False], [True, False]] and not masks["b"].any()
    masks = top_coordinates(scores, 4)
    assert masks["a"].tolist() == [[True, False], [True, True]] and masks["b"].tolist() == [True, False, False]


def test_a_rollback_sets_exactly_the_chosen_coordinates_back():
    masks = {"a": torch.tensor([[True, False], [False, True]]), "b": torch.tensor([False, True, False])}
    rolled = roll_back(AFTER, BEFORE, masks)
    assert rolled["a"].tolist() == [[1.0, 2.0], [2.0, 4.0]]
    assert rolled["b"].tolist() == pytest.approx([0.3, 0.0, 0.0])
    for name in AFTER:  # every other coordinate unchanged; the inputs untouched
        keep = ~masks[name]
        assert torch.equal(rolled[name][keep], AFTER[name][keep])
    assert AFTER["a"][0, 0] == 1.5
    assert roll_back(AFTER, BEFORE, {})["a"].equal(AFTER["a"])  # no mask: nothing moves


def test_the_routes_rule_never_leaves_its_mask():
    routes = {"a": torch.tensor([[False, True], [False, True]]), "b": torch.tensor([True, False, False])}
    scores = coordinate_scores("first_order_routes", deltas(AFTER, BEFORE), gradient=GRAD, mask=routes)
    masks = top_coordinates(scores, 5)  # only 3 eligible coordinates
    chosen = sum(int(m.sum()) for m in masks.values())
    assert chosen == 3 and all(not (masks[n] & ~routes[n]).any() for n in masks)


def test_second_order_rule_subtracts_half_curvature_times_delta_squared():
    hess = {"a": torch.tensor([[8.0, 0.0], [3.0, 0.0]]), "b": torch.zeros(3)}
    scores = coordinate_scores("second_order", deltas(AFTER, BEFORE), gradient=GRAD, hessian_diagonal=hess)
    assert scores["a"][0, 0] == pytest.approx(0.5 - 0.5 * 8 * 0.25)  # 0.5 - 1.0 = -0.5
    assert scores["a"][1, 0] == pytest.approx(1.0 - 0.5 * 3 * 1.0)


def test_controls_random_magnitude_and_another_stages_delta():
    d = deltas(AFTER, BEFORE)
    assert torch.equal(coordinate_scores("random", d, seed=1)["a"], coordinate_scores("random", d, seed=1)["a"])
    assert not torch.equal(coordinate_scores("random", d, seed=1)["a"], coordinate_scores("random", d, seed=2)["a"])
    magnitude = top_coordinates(coordinate_scores("magnitude", d), 1)
    assert magnitude["a"].tolist() == [[False, False], [True, False]]
    other = {"a": torch.zeros(2, 2), "b": torch.tensor([0.0, 0.0, 1.0])}
    chosen = top_coordinates(coordinate_scores("other_delta", d, gradient=GRAD, other_delta=other), 1)
    assert chosen["b"].tolist() == [False, False, True]
    with pytest.raises(ValueError, match="needs gradient"):
        coordinate_scores("first_order", d)
    with pytest.raises(ValueError, match="valid rules"):
        coordinate_scores("oracle", d)
    assert set(RULES) >= {"first_order", "random", "magnitude"}


def test_budgets_and_the_equal_norm_gradient_step():
    d = deltas(AFTER, BEFORE)
    assert budget_count(0.5, d) == 4 and budget_count(1.0, d) == 7
    with pytest.raises(ValueError, match="fraction"):
        budget_count(1.5, d)
    masks = {"a": torch.tensor([[True, False], [True, False]]), "b": torch.zeros(3, dtype=torch.bool)}
    norm = change_norm(AFTER, roll_back(AFTER, BEFORE, masks))
    assert norm == pytest.approx((0.5**2 + 1.0**2) ** 0.5)
    stepped = sparse_gradient_step(AFTER, GRAD, masks, norm)
    assert change_norm(AFTER, stepped) == pytest.approx(norm)
    assert torch.equal(stepped["b"], AFTER["b"]) and stepped["a"][0, 1] == AFTER["a"][0, 1]
    with pytest.raises(ValueError, match="count"):
        top_coordinates(coordinate_scores("magnitude", d), 99)
