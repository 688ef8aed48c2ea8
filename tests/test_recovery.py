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


def test_the_second_order_sign_follows_where_the_curvature_was_taken():
    """At the current point a reset promises g d - 1/2 h d^2; before the displacement, the displacement
    caused g d + 1/2 h d^2."""
    hess = {"a": torch.tensor([[8.0, 0.0], [3.0, 0.0]]), "b": torch.zeros(3)}
    d = deltas(AFTER, BEFORE)
    start = coordinate_scores("second_order", d, gradient=GRAD, hessian_diagonal=hess, at="start")
    assert start["a"][0, 0] == pytest.approx(0.5 + 0.5 * 8 * 0.25)
    with pytest.raises(ValueError, match="current, start"):
        coordinate_scores("second_order", d, gradient=GRAD, hessian_diagonal=hess, at="end")


class Quadratic(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
        self.v = torch.nn.Parameter(torch.tensor([[0.3, 0.7]], dtype=torch.float64))


def test_hutchinson_is_exact_on_a_diagonal_hessian_and_unbiased_otherwise():
    from mdrl_lib.recovery import hessian_diagonal

    model = Quadratic()
    c = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    diagonal = hessian_diagonal(lambda m: (c * m.w ** 3).sum() + (m.v ** 2).sum(), model, probes=1)
    assert torch.allclose(diagonal["w"].double(), 6 * c * model.w.detach(), atol=1e-6)  # d2/dw2 c w^3 = 6 c w
    assert torch.allclose(diagonal["v"].double(), torch.full((1, 2), 2.0, dtype=torch.float64))
    # w0 * w1 has zero diagonal; each probe gives +-1 on both, their mean tends to 0
    coupled = hessian_diagonal(lambda m: m.w[0] * m.w[1] + m.w[2] ** 2, model, probes=4000, seed=3)
    assert abs(float(coupled["w"][0])) < 0.06 and float(coupled["w"][2]) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="probes"):
        hessian_diagonal(lambda m: m.w.sum(), model, probes=0)


def test_costs_count_sequence_passes():
    from mdrl_lib.config import RLConfig
    from mdrl_lib.recovery import equal_cost_steps, refresh_step_cost, rollback_cost

    rl = RLConfig()
    assert refresh_step_cost(rl) == rl.prompts_per_step * rl.num_generations * 4
    assert rollback_cost("first_order", objective_sequences=256) == 1024
    assert rollback_cost("second_order", objective_sequences=256, probes=2) == 1024 + 2 * 256 * 9
    assert rollback_cost("first_order_routes", objective_sequences=10, route_sequences=7) == 47
    assert rollback_cost("random", objective_sequences=256) == 0 == rollback_cost("revert_stage", objective_sequences=9)
    assert equal_cost_steps(1024, rl) == 1024 // refresh_step_cost(rl) and equal_cost_steps(1, rl) == 1
    assert equal_cost_steps(refresh_step_cost(rl) + 1, rl) == 2
    with pytest.raises(ValueError, match="valid rules"):
        rollback_cost("oracle", objective_sequences=1)


def _items(scores: dict[str, list[float]]):
    import pandas as pd

    return pd.DataFrame([{"domain": d, "item": i, "score": s} for d, values in scores.items()
                         for i, s in enumerate(values)])


def test_paired_changes_and_the_difference_in_changes():
    from mdrl_lib.recovery import difference_in_changes, paired_changes

    before = _items({"math": [0, 0, 1, 1, 0, 1], "cw": [0.5, 0.25, 1.0, 0.0, 0.5, 0.5]})
    after = _items({"math": [1, 1, 1, 1, 0, 1], "cw": [0.5, 0.25, 1.0, 0.0, 0.5, 0.25]})
    table = paired_changes(before, after).set_index("domain")
    assert table.loc["math", "diff"] == pytest.approx(2 / 6) and table.loc["cw", "diff"] == pytest.approx(-0.25 / 6)
    assert table.loc["math", "ci_low"] < table.loc["math", "diff"] < table.loc["math", "ci_high"]
    # the same change twice: no excess; a change against no change: the change itself
    same = difference_in_changes((before, after), (before, after), "math")
    assert same["diff"] == 0 and same["ci_low"] == same["ci_high"] == 0
    assert difference_in_changes((before, after), (before, before), "math")["diff"] == pytest.approx(2 / 6)
    with pytest.raises(ValueError, match="only before"):
        paired_changes(before, after[after["item"] < 3])


def test_the_results_table_and_the_best_fraction():
    import pandas as pd

    from mdrl_lib.recovery import best_fraction, results_table

    table = results_table({"end": _items({"math": [0, 1], "qa": [1, 1]}), "after": _items({"math": [1, 1], "qa": [0, 1]})},
                          ["math", "qa"])
    assert table.loc["end"].tolist() == [0.5, 1.0, 0.75] and list(table.columns) == ["math", "qa", "average"]
    sweep = pd.DataFrame({"fraction": [0.1, 0.1, 0.01, 0.01, 0.5, 0.5], "domain": ["math"] * 6,
                          "score": [1, 0, 1, 0, 0, 0]})
    assert best_fraction(sweep, "math") == 0.01  # a tie at 0.5 goes to the smaller budget


def test_subspace_distances_split_a_difference_into_all_routes_and_s():
    import numpy as np

    from mdrl_lib.perturbation import ParameterSpace
    from mdrl_lib.recovery import ConflictSubspace

    model = Quadratic()  # w (3,) then v (1, 2): a flat vector of 5
    space = ParameterSpace.from_model(model)
    basis = torch.tensor([[0.6], [0.0], [0.8]], dtype=torch.float64)  # on coordinates 0, 2, 3 (w0, w2, v00)
    subspace = ConflictSubspace(space=space, index=torch.tensor([0, 2, 3]), basis=basis, eigenvalues=np.ones(1),
                                channels=frozenset())
    difference = {"w": torch.tensor([3.0, 4.0, 1.0]), "v": torch.tensor([[2.0, 0.0]])}
    got = subspace.distances(difference)
    assert got["overall"] == pytest.approx(30 ** 0.5) and got["routes"] == pytest.approx(14 ** 0.5)
    assert got["subspace"] == pytest.approx(abs(0.6 * 3 + 0.8 * 2))
