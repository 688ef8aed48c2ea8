"""Notebook ``05_refresh_vs_rollback``'s exercises: the rollback's coordinate scores and the rollback itself.

- ``05-rollback-scores``: the first-order score g_A * delta_B and the second-order one g delta - 1/2 h delta^2,
  held against :func:`mdrl_lib.recovery.coordinate_scores` (on :func:`mdrl_lib.recovery.deltas`).
- ``05-roll-back``: reset the top-k coordinates by score, held against :func:`mdrl_lib.recovery.roll_back` of
  :func:`mdrl_lib.recovery.top_coordinates` at :func:`mdrl_lib.recovery.budget_count`.
"""
from __future__ import annotations

import math

from mdrl_lib.exercises.core import Case, Exercise

NOTEBOOK = "05_refresh_vs_rollback"
_SHAPES = {"model.layers.0.mlp.up_proj.weight": (3, 4), "model.layers.0.self_attn.q_proj.weight": (2, 3),
           "model.norm.weight": (5,)}
_TOTAL = sum(math.prod(s) for s in _SHAPES.values())


def _weights(seed: int):
    """Weights before B's stage, the chain's end, A's gradient there and a Hessian diagonal, by name."""
    import torch

    generator = torch.Generator().manual_seed(seed)

    def draw(scale: float = 1.0) -> dict:
        return {n: scale * torch.randn(s, generator=generator) for n, s in _SHAPES.items()}

    reference = draw()
    step = draw(0.1)
    current = {n: reference[n] + step[n] for n in reference}
    return reference, current, draw(), {n: v.abs() for n, v in draw().items()}


def _score_cases() -> list[Case]:
    from mdrl_lib import recovery

    out = []
    for seed, second, label in ((0, False, "first order"), (1, False, "first order, other weights"),
                                (0, True, "second order"), (2, True, "second order, other weights")):
        reference, current, gradient, hessian = _weights(seed)
        delta = recovery.deltas(current, reference)
        if second:
            scores = recovery.coordinate_scores("second_order", delta, gradient=gradient, hessian_diagonal=hessian)
            args = (current, reference, gradient, hessian)
        else:
            scores = recovery.coordinate_scores("first_order", delta, gradient=gradient)
            args = (current, reference, gradient)
        out.append(Case(f"{label}: three tensors, {_TOTAL} coordinates", args, scores, rtol=1e-5, atol=1e-7))
    return out


def _rollback_cases() -> list[Case]:
    from mdrl_lib import recovery

    out = []
    for seed, fraction in ((0, 0.1), (0, 0.25), (1, 0.4), (2, 0.0), (2, 1.0)):
        reference, current, gradient, _ = _weights(seed)
        delta = recovery.deltas(current, reference)
        scores = recovery.coordinate_scores("first_order", delta, gradient=gradient)
        count = recovery.budget_count(fraction, delta)
        rolled = recovery.roll_back(current, reference, recovery.top_coordinates(scores, count))
        out.append(Case(f"fraction {fraction} of {_TOTAL} coordinates ({count} reset), weights seed {seed}",
                        (current, reference, scores, fraction), rolled, rtol=0.0, atol=0.0))
    return out


EXERCISES = (
    Exercise(
        key="05-rollback-scores", notebook=NOTEBOOK, title="The rollback's coordinate scores",
        objective="Score every coordinate by how much resetting it to its value before B's stage is predicted to "
                  "lower A's loss: first order g_A * delta_B, and with a Hessian diagonal h the second-order "
                  "g delta - 1/2 h delta^2. The rollback resets the highest scores first (C7).",
        difficulty=1, importance="core", minutes=10,
        hint="delta = current - reference, tensor by tensor. Resetting coordinate i moves it by -delta_i, which "
             "changes L_A by about -g_i delta_i + 1/2 h_i delta_i^2: the score is the predicted fall, g * delta, "
             "minus 0.5 * h * delta**2 when hessian_diagonal is given. Return {name: scores} with the tensors' "
             "shapes.",
        function="my_rollback_scores", compared_with="mdrl_lib.recovery.coordinate_scores",
        cases=_score_cases),
    Exercise(
        key="05-roll-back", notebook=NOTEBOOK, title="Roll back the top-k coordinates",
        objective="Roll back a budget of coordinates: take the top k = round(fraction * all coordinates) scores "
                  "across every tensor together, reset those coordinates to their value before B's stage, and "
                  "keep every other coordinate at the chain's end.",
        difficulty=2, importance="core", minutes=15,
        hint="Flatten every tensor's scores in sorted name order and concatenate them; k = round(fraction * total); "
             "torch.argsort(flat, descending=True, stable=True)[:k] picks the coordinates (ties go to the earlier "
             "one). Build a boolean mask per tensor and return {name: torch.where(mask, reference, current)}.",
        function="my_roll_back", compared_with="mdrl_lib.recovery.roll_back",
        cases=_rollback_cases),
)
