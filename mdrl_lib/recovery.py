"""Training-free rollback: put a sparse set of coordinates back to their value before a later stage.

Introduced in notebook ``05_refresh_vs_rollback`` (claim C7). Given the chain-end weights theta (after
B's stage), the weights theta_B0 before B's stage and delta_B = theta - theta_B0, a *rule* scores each
coordinate, the top-k coordinates are reset to theta_B0 and every other coordinate keeps its value.

The rules (the paper does not publish its own):

- ``first_order``: g_A * delta_B with g_A the gradient of A's objective at theta. Resetting coordinate i
  moves it by -delta_i, which changes L_A by about -g_i delta_i: the largest scores promise the largest
  first-order decrease of A's loss.
- ``first_order_routes``: the same score restricted to a coordinate mask (A's and B's shared routes).
- ``second_order``: g_i delta_i - 1/2 h_i delta_i^2 with h the Hessian's diagonal (estimated with
  Hessian-vector products): the diagonal second-order decrease.

And the controls: ``random`` coordinates of the same count (seeded), the largest ``magnitude`` |delta_B|,
the first-order score built from *another* stage's delta (``other_delta``), and reverting all of B's
stage (a fraction of 1).
"""
from __future__ import annotations

from typing import Iterable, Mapping

import torch

RULES: tuple[str, ...] = ("first_order", "first_order_routes", "second_order", "random", "magnitude", "other_delta")

Tensors = Mapping[str, torch.Tensor]


def deltas(after: Tensors, before: Tensors) -> dict[str, torch.Tensor]:
    """after - before for every tensor both hold (same shapes required)."""
    common = sorted(set(after) & set(before))
    if not common:
        raise ValueError("the two weight sets share no tensor names")
    out = {}
    for name in common:
        if after[name].shape != before[name].shape:
            raise ValueError(f"{name}: shape {tuple(after[name].shape)} after, {tuple(before[name].shape)} before")
        out[name] = after[name].float() - before[name].float()
    return out


def coordinate_scores(rule: str, delta: Tensors, *, gradient: Tensors | None = None,
                      hessian_diagonal: Tensors | None = None, mask: Tensors | None = None,
                      other_delta: Tensors | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """Each coordinate's score under ``rule`` (higher is reset first), same shapes as ``delta``.

    Coordinates outside ``mask`` (``first_order_routes``) score -inf so they are never chosen.
    """
    if rule not in RULES:
        raise ValueError(f"unknown rollback rule {rule!r}; valid rules: {', '.join(RULES)}")
    needs = {"first_order": ("gradient",), "first_order_routes": ("gradient", "mask"),
             "second_order": ("gradient", "hessian_diagonal"), "other_delta": ("gradient", "other_delta")}
    given = {"gradient": gradient, "hessian_diagonal": hessian_diagonal, "mask": mask, "other_delta": other_delta}
    missing = [n for n in needs.get(rule, ()) if given[n] is None]
    if missing:
        raise ValueError(f"rule {rule!r} needs {', '.join(missing)}")
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name in sorted(delta):
        d = delta[name].float()
        if rule == "random":
            out[name] = torch.rand(d.shape, generator=generator)
        elif rule == "magnitude":
            out[name] = d.abs()
        elif rule == "other_delta":
            out[name] = gradient[name].float() * other_delta[name].float()
        else:
            score = gradient[name].float() * d
            if rule == "second_order":
                score = score - 0.5 * hessian_diagonal[name].float() * d * d
            if rule == "first_order_routes":
                score = torch.where(mask[name].bool(), score, torch.full_like(score, float("-inf")))
            out[name] = score
    return out


def top_coordinates(scores: Tensors, count: int) -> dict[str, torch.Tensor]:
    """Boolean masks of the ``count`` highest-scoring coordinates over all tensors (ties by tensor name
    order, then position); coordinates scoring -inf (or NaN) are never chosen, so fewer than ``count``
    come back when fewer are eligible."""
    total = sum(s.numel() for s in scores.values())
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= total:
        raise ValueError(f"count must be an integer in [0, {total}], got {count!r}")
    names = sorted(scores)
    flat = torch.cat([scores[n].flatten().float() for n in names]) if names else torch.zeros(0)
    chosen = torch.zeros(total, dtype=torch.bool)
    if count:
        eligible = ~torch.isnan(flat) & (flat != float("-inf"))
        order = torch.argsort(flat, descending=True, stable=True)
        order = order[eligible[order]][:count]
        chosen[order] = True
    out, offset = {}, 0
    for name in names:
        size = scores[name].numel()
        out[name] = chosen[offset:offset + size].view(scores[name].shape)
        offset += size
    return out


def roll_back(current: Tensors, reference: Tensors, masks: Tensors) -> dict[str, torch.Tensor]:
    """``current`` with the coordinates in ``masks`` set to ``reference``; every other coordinate (and
    every tensor without a mask) unchanged. Returns new tensors; the inputs are not modified."""
    out = {}
    for name, tensor in current.items():
        mask = masks.get(name)
        if mask is None:
            out[name] = tensor.clone()
            continue
        if mask.shape != tensor.shape or reference[name].shape != tensor.shape:
            raise ValueError(f"{name}: mask {tuple(mask.shape)} or reference {tuple(reference[name].shape)} does "
                             f"not match {tuple(tensor.shape)}")
        out[name] = torch.where(mask.bool(), reference[name].to(tensor.dtype), tensor)
    return out


def budget_count(fraction: float, delta: Tensors) -> int:
    """The number of coordinates a budget ``fraction`` (of all entries) allows: round(fraction x entries)."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
        raise ValueError(f"rollback budget: expected a fraction in [0, 1], got {fraction!r}")
    return int(round(fraction * sum(t.numel() for t in delta.values())))


def sparse_gradient_step(current: Tensors, gradient: Tensors, masks: Tensors, norm: float) -> dict[str, torch.Tensor]:
    """The equal-norm control: a step -eta * g on the masked coordinates only, with eta chosen so that the
    step's L2 norm equals ``norm`` (the norm of the rollback it is compared with)."""
    size = torch.sqrt(sum(((gradient[n].float() * masks[n]) ** 2).sum() for n in masks))
    if float(size) == 0.0:
        raise ValueError("the gradient is zero on every chosen coordinate; no step of that norm exists")
    eta = norm / float(size)
    return {n: (t - eta * gradient[n].to(t.dtype) * masks[n]) if n in masks else t.clone()
            for n, t in current.items()}


def change_norm(before: Tensors, after: Tensors, names: Iterable[str] | None = None) -> float:
    """The L2 norm of after - before over ``names`` (default: all shared tensors)."""
    names = sorted(set(before) & set(after)) if names is None else list(names)
    return float(torch.sqrt(sum(((after[n].float() - before[n].float()) ** 2).sum() for n in names)))
