"""Refresh budgets and training-free rollback: put a sparse set of coordinates back to their value
before a later stage.

Introduced in notebook ``05_refresh_vs_rollback`` (claims C6 and C7). Given the chain-end weights theta,
the weights theta_B0 before B's stage and delta_B = theta - theta_B0 (the displacement a rollback undoes:
B's stage and any stage after it; for the last stage, B's own step), a *rule* scores each coordinate,
the top-k coordinates are reset to theta_B0 and every other coordinate keeps its value.

The rules (the paper does not publish its own):

- ``first_order``: g_A * delta_B with g_A the gradient of A's objective at theta. Resetting coordinate i
  moves it by -delta_i, which changes L_A by about -g_i delta_i: the largest scores promise the largest
  first-order decrease of A's loss.
- ``first_order_routes``: the same score restricted to a coordinate mask (A's and B's shared routes).
- ``second_order``: g_i delta_i - 1/2 h_i delta_i^2 with h the Hessian's diagonal (estimated with
  Hessian-vector products): the diagonal second-order decrease.

And the controls: ``random`` coordinates of the same count (seeded), the largest ``magnitude`` |delta_B|,
the first-order score built from *another* stage's delta (``other_delta``), and reverting all of B's
stage (a fraction of 1). Notebook 05's recipe (:mod:`mdrl_lib.recipes.nb05`) names every artifact it
asks for (refreshes, their controls, rollback sweeps as cached :class:`RollbackScores`, their paired
changes as :class:`RollbackChanges`, the conflict subspace the refresh's distances are measured on as
:class:`ConflictBasis`), so a pipeline can build them ahead. The notebook's figures are drawn by the
``plot_*`` functions at the end.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from mdrl_lib.kit import Kit
from mdrl_lib.specs import Spec, check_domain
from mdrl_lib.store import Artifact

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
                      other_delta: Tensors | None = None, seed: int = 0, at: str = "current") -> dict[str, torch.Tensor]:
    """Each coordinate's score under ``rule`` (higher is reset first), same shapes as ``delta``.

    Coordinates outside ``mask`` (``first_order_routes``) score -inf so they are never chosen. ``at``
    says where ``gradient`` and ``hessian_diagonal`` were taken, which fixes the sign of the curvature
    term of ``second_order``: ``"current"`` (at the weights being rolled back: the loss decrease a reset
    promises, g delta - 1/2 h delta^2) or ``"start"`` (before the displacement, e.g. at A's own trained
    weights: the loss increase the displacement caused, g delta + 1/2 h delta^2).
    """
    if at not in ("current", "start"):
        raise ValueError(f"unknown evaluation point {at!r}; valid: current, start")
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
                sign = -1.0 if at == "current" else 1.0
                score = score + sign * 0.5 * hessian_diagonal[name].float() * d * d
            if rule == "first_order_routes":
                score = torch.where(mask[name].bool(), score, torch.full_like(score, float("-inf")))
            out[name] = score
    return out


@dataclass(frozen=True, eq=False)
class Ranking:
    """Every coordinate of a set of score tensors in rollback order, built once (:func:`rank_coordinates`) so
    that many budgets can be cut from one sort: ``names`` (sorted tensor names), ``shapes``, ``order`` (flat
    positions of the eligible coordinates, highest score first; ties by tensor name order, then position;
    -inf and NaN left out) and ``total`` (all coordinates). Introduced in ``05_refresh_vs_rollback``."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    order: torch.Tensor
    total: int

    def masks(self, count: int) -> dict[str, torch.Tensor]:
        """Boolean masks (one per tensor, its shape) of the first ``count`` coordinates of the order."""
        chosen = torch.zeros(self.total, dtype=torch.bool)
        chosen[self.order[:count]] = True
        out, offset = {}, 0
        for name, shape in zip(self.names, self.shapes):
            size = math.prod(shape)
            out[name] = chosen[offset:offset + size].view(shape)
            offset += size
        return out

    def top(self, count: int) -> dict[str, torch.Tensor]:
        """:func:`top_coordinates`: the masks of the ``count`` highest-scoring coordinates."""
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= self.total:
            raise ValueError(f"count must be an integer in [0, {self.total}], got {count!r}")
        return self.masks(count)

    def by_norm(self, delta: Tensors, norm: float) -> tuple[dict[str, torch.Tensor], int]:
        """:func:`top_coordinates_by_norm`: the shortest prefix of the order whose reset moves the weights by at
        least ``norm`` in L2 (``delta``: the displacement a rollback undoes), and its length."""
        if isinstance(norm, bool) or not isinstance(norm, (int, float)) or not math.isfinite(norm) or norm < 0:
            raise ValueError(f"norm must be a finite number >= 0, got {norm!r}")
        if set(self.names) != set(delta):
            raise ValueError("scores and delta must hold the same tensor names")
        moved = torch.cat([delta[n].flatten().double() ** 2 for n in self.names])
        cumulative = torch.cumsum(moved[self.order], dim=0)
        target = float(norm) ** 2
        if target == 0 or not len(self.order):
            count = 0
        else:
            reached = torch.nonzero(cumulative >= target * (1 - 1e-12))
            count = int(reached[0]) + 1 if len(reached) else len(self.order)
        return self.masks(count), count


def rank_coordinates(scores: Tensors) -> Ranking:
    """The :class:`Ranking` of ``scores`` (one stable sort over all tensors, highest first)."""
    names = tuple(sorted(scores))
    flat = torch.cat([scores[n].flatten().float() for n in names]) if names else torch.zeros(0)
    eligible = ~torch.isnan(flat) & (flat != float("-inf"))
    order = torch.argsort(flat, descending=True, stable=True)
    return Ranking(names=names, shapes=tuple(scores[n].shape for n in names), order=order[eligible[order]],
                   total=int(flat.numel()))


def top_coordinates(scores: Tensors, count: int) -> dict[str, torch.Tensor]:
    """Boolean masks of the ``count`` highest-scoring coordinates over all tensors (ties by tensor name
    order, then position); coordinates scoring -inf (or NaN) are never chosen, so fewer than ``count``
    come back when fewer are eligible."""
    total = sum(s.numel() for s in scores.values())
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= total:
        raise ValueError(f"count must be an integer in [0, {total}], got {count!r}")
    return rank_coordinates(scores).masks(count)


def top_coordinates_by_norm(scores: Tensors, delta: Tensors, norm: float) -> tuple[dict[str, torch.Tensor], int]:
    """The equal-*size* control set: coordinates taken in ``scores``' order (highest first, as
    :func:`top_coordinates`) until the cumulative squared change ``sum delta_i^2`` of resetting them reaches
    ``norm ** 2``, i.e. the shortest prefix whose rollback moves the weights by at least ``norm`` in L2 (all
    eligible coordinates when even they fall short). Returns the boolean masks (same shapes as ``scores``)
    and the count taken. ``delta``: the displacement a rollback undoes, same names and shapes as ``scores``.
    Introduced in ``05_refresh_vs_rollback`` (C7's controls at equal size of change)."""
    if isinstance(norm, bool) or not isinstance(norm, (int, float)) or not math.isfinite(norm) or norm < 0:
        raise ValueError(f"norm must be a finite number >= 0, got {norm!r}")
    if set(scores) != set(delta):
        raise ValueError("scores and delta must hold the same tensor names")
    return rank_coordinates(scores).by_norm(delta, norm)


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


# ------------------------------------------------------------------------------- curvature and routes


def hessian_diagonal(loss_fn, model: torch.nn.Module, probes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Hutchinson's estimate of the Hessian's diagonal, ``mean_z z * (H z)`` over ``probes`` seeded
    Rademacher vectors ``z``, by parameter name (each of its parameter's shape, on the CPU). Exact for a
    diagonal Hessian whatever the number of probes; otherwise unbiased, with a variance set by the
    off-diagonal entries. Costs one gradient graph and ``probes`` Hessian-vector products (each about two
    gradients' time). The model needs eager attention (``Kit.load(..., placement="analysis")``).
    Introduced in ``05_refresh_vs_rollback`` (the second-order rollback rule)."""
    from mdrl_lib.perturbation import ParameterSpace, hessian_operator

    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
        raise ValueError(f"probes must be a positive integer, got {probes!r}")
    space = ParameterSpace.from_model(model)
    operator = hessian_operator(loss_fn, model, space)
    generator = torch.Generator().manual_seed(seed)
    total = torch.zeros(space.dim, dtype=torch.float64)
    for _ in range(probes):
        z = (torch.randint(0, 2, (space.dim,), generator=generator) * 2 - 1).to(operator.dtype)
        total += (z.to(operator.device) * operator(z.to(operator.device))).double().cpu()
    operator.release()
    return {name: piece.float().clone() for name, piece in zip(space.names, space.unflatten(total / probes))}


def shared_route_masks(model: torch.nn.Module, tokenizer, examples_a: Sequence, examples_b: Sequence,
                       fraction: float) -> tuple[set, dict[str, torch.Tensor]]:
    """The MLP channels both domains use (each domain's top ``fraction`` of channels by mean |activation| at
    answer positions, notebook ``02_shared_routes``'s active routes) and the boolean masks of their weight
    coordinates (:func:`mdrl_lib.routes.route_coordinate_mask`). ``examples_*``: examples with ``prompt`` and
    ``answer``. Introduced in ``03_perturbation_theory`` (the conflict subspace's search space); used by
    notebook 05's ``first_order_routes`` rule and subspace distances."""
    from mdrl_lib import routes

    route_sets = []
    for examples in (examples_a, examples_b):
        activity = routes.route_activity(model, tokenizer, [e.prompt for e in examples],
                                         [e.answer for e in examples], positions="answer")
        route_sets.append(routes.active_routes(activity.channels, fraction))
    shared = route_sets[0] & route_sets[1]
    if not shared:
        raise ValueError(f"the two domains share no channel in their top {fraction:.0%}; raise route_fraction")
    return shared, routes.route_coordinate_mask(model, shared)


@dataclass(frozen=True, eq=False)
class ConflictSubspace:
    """Notebook 03's conflict subspace S of A and B: the span of the top Hessian eigenvectors of L_A on
    the coordinates of the routes A and B share. ``space``: the model's full parameter space; ``index``:
    positions of the shared-route coordinates in its vector, shape ``(m,)``; ``basis``: orthonormal
    eigenvectors on those coordinates, shape ``(m, R)``; ``eigenvalues``: shape ``(R,)``.
    Introduced in ``05_refresh_vs_rollback``."""

    space: Any
    index: torch.Tensor
    basis: torch.Tensor
    eigenvalues: np.ndarray
    channels: frozenset

    def distances(self, difference: Tensors) -> dict[str, float]:
        """``overall`` ||d||, ``routes`` ||d on the shared-route coordinates|| and ``subspace`` ||P_S d|| of a
        weight difference ``d`` (name -> tensor, e.g. theta - theta_A*)."""
        vector = self.space.flatten([difference[n].float() for n in self.space.names]).double()
        on_routes = vector[self.index]
        return {"overall": float(vector.norm()), "routes": float(on_routes.norm()),
                "subspace": float((self.basis.T @ on_routes).norm())}


def conflict_subspace(model: torch.nn.Module, tokenizer, loss_fn, examples_a: Sequence, examples_b: Sequence, *,
                      route_fraction: float, rank: int, seed: int = 0) -> ConflictSubspace:
    """The conflict subspace as notebook ``03_perturbation_theory`` builds it, at the model's weights (A's
    trained weights): shared routes (:func:`shared_route_masks`), then the top-``rank`` eigenpairs of H_A
    restricted to their coordinates by Lanczos on Hessian-vector products. The model needs eager attention."""
    from mdrl_lib import perturbation as pt

    channels, masks = shared_route_masks(model, tokenizer, examples_a, examples_b, route_fraction)
    space = pt.ParameterSpace.from_model(model)
    restricted = space.restrict(masks)
    operator = pt.hessian_operator(loss_fn, model, restricted)
    values, vectors = pt.top_eigenpairs(operator.numpy_matvec, restricted.dim, rank, tol=1e-4, seed=seed)
    operator.release()
    basis, _ = torch.linalg.qr(torch.as_tensor(vectors, dtype=torch.float64))
    return ConflictSubspace(space=space, index=restricted.index, basis=basis, eigenvalues=np.asarray(values),
                            channels=frozenset(channels))


CONFLICT_ARRAYS = "conflict_subspace.npz"
CONFLICT_LAYOUT = "conflict_subspace.json"


@dataclass(frozen=True)
class ConflictBasis(Spec):
    """Notebook 03's conflict subspace of ``domain_a`` and ``domain_b`` at ``model`` (theta_A*), cached: the
    result of :func:`conflict_subspace` with L_A from ``objective`` (an ``ObjectiveBatch`` spec), routes
    measured on each domain's first ``route_prompts`` training prompts (top ``route_fraction`` of channels)
    and the top ``rank`` eigenpairs (Lanczos seeded by ``seed``). Stores the basis, shape ``(m, rank)``,
    the coordinates' positions and the eigenvalues (npz), and the parameter layout with the shared channels
    (json). :meth:`open` gives back the :class:`ConflictSubspace`. Introduced in ``05_refresh_vs_rollback``
    (the refresh's distance to theta_A* on S)."""

    model: Spec
    objective: Spec
    domain_a: str
    domain_b: str
    route_fraction: float = 0.2
    route_prompts: int = 100
    rank: int = 8
    seed: int = 0
    kind: ClassVar[str] = "conflict_subspace"

    def __post_init__(self) -> None:
        from mdrl_lib.config import ConfigError

        object.__setattr__(self, "domain_a", check_domain(self.domain_a))
        object.__setattr__(self, "domain_b", check_domain(self.domain_b))
        if not 0 < self.route_fraction <= 0.5:
            raise ConfigError(f"conflict subspace route_fraction: expected a fraction in (0, 0.5], got "
                              f"{self.route_fraction!r}")
        for name in ("route_prompts", "rank"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"conflict subspace {name}: expected a positive integer, got {value!r}")

    def inputs(self) -> tuple[Spec, ...]:
        return (self.model, self.objective)

    def key_fields(self, kit: Kit) -> dict:
        return {"model": kit.key(self.model), "objective": kit.key(self.objective), "domain_a": self.domain_a,
                "domain_b": self.domain_b, "route_fraction": self.route_fraction, "route_prompts": self.route_prompts,
                "rank": self.rank, "seed": self.seed, "dtype": "fp32"}

    def build(self, kit: Kit, directory: Path, progress: bool) -> dict:
        start = time.perf_counter()
        model, tokenizer = kit.load(self.model, placement="analysis")
        objective = kit.objective(self.objective)
        examples = [kit.splits(d).train[:self.route_prompts] for d in (self.domain_a, self.domain_b)]
        subspace = conflict_subspace(model, tokenizer, objective.loss, *examples, route_fraction=self.route_fraction,
                                     rank=self.rank, seed=self.seed)
        np.savez(directory / CONFLICT_ARRAYS, index=subspace.index.cpu().numpy(), basis=subspace.basis.cpu().numpy(),
                 eigenvalues=np.asarray(subspace.eigenvalues, dtype=np.float64))
        layout = {"names": list(subspace.space.names), "shapes": [list(s) for s in subspace.space.shapes],
                  "channels": sorted([list(c) for c in subspace.channels])}
        (directory / CONFLICT_LAYOUT).write_text(json.dumps(layout))
        return {"channels": len(subspace.channels), "coordinates": int(len(subspace.index)),
                "eigenvalues": [float(v) for v in subspace.eigenvalues],
                "seconds": round(time.perf_counter() - start, 2)}

    def open(self, kit: Kit, artifact: Artifact) -> ConflictSubspace:
        """The stored :class:`ConflictSubspace` (basis and positions as float64 / int64 CPU tensors)."""
        from mdrl_lib.perturbation import ParameterSpace

        layout = json.loads((artifact.path / CONFLICT_LAYOUT).read_text())
        shapes = tuple(torch.Size(s) for s in layout["shapes"])
        offsets = tuple(int(o) for o in np.cumsum([0] + [math.prod(s) for s in shapes])[:-1])
        space = ParameterSpace(tuple(layout["names"]), shapes, offsets, sum(math.prod(s) for s in shapes))
        with np.load(artifact.path / CONFLICT_ARRAYS) as arrays:
            return ConflictSubspace(space=space, index=torch.from_numpy(arrays["index"]),
                                    basis=torch.from_numpy(arrays["basis"]), eigenvalues=arrays["eigenvalues"],
                                    channels=frozenset(tuple(c) for c in layout["channels"]))

    def toy_seconds(self, config) -> float:
        return 15.0  # measured: about 15 s (routes, then Lanczos on Hessian-vector products)

    def label(self) -> str:
        return f"conflict subspace of {self.domain_a},{self.domain_b} at {self.model.label()}"


# ------------------------------------------------------------------------------------------- costs

SAMPLE_PASSES = 1  # generating a sequence with a key-value cache costs about one forward pass over it
GRADIENT_PASSES = 3  # a forward and a backward pass: about three forward passes
HVP_PASSES = 9  # a Hessian-vector product by double backward: about three gradients


def refresh_step_cost(rl) -> int:
    """The cost of one GRPO refresh step in sequence passes (forward-pass equivalents over one sequence):
    ``prompts_per_step x num_generations`` sequences sampled (1 each) and then trained on (3 each). No
    reference model (``kl_beta`` 0) and one update per batch, so nothing else. ``rl``: a :class:`RLConfig`.
    Introduced in ``05_refresh_vs_rollback``."""
    return rl.prompts_per_step * rl.num_generations * (SAMPLE_PASSES + GRADIENT_PASSES)


def rollback_cost(rule: str, *, objective_sequences: int, probes: int = 0, route_sequences: int = 0) -> int:
    """The cost of choosing a rollback's coordinates, in the same sequence passes as
    :func:`refresh_step_cost`: sampling A's objective batch (``objective_sequences`` sampled, 1 each) and
    its gradient (3 each, counting every sampled sequence: an upper bound, only verified-correct ones
    enter), the ``second_order`` rule's ``probes`` Hessian-vector products (9 each per sequence), the routes
    rule's ``route_sequences`` teacher-forced passes (1 each). ``random``, ``magnitude`` and
    ``revert_stage`` read weights only: 0. Evaluations are not counted, for either method. Introduced in
    ``05_refresh_vs_rollback``."""
    if rule not in SWEEP_RULES:
        raise ValueError(f"unknown rollback rule {rule!r}; valid rules: {', '.join(SWEEP_RULES)}")
    if rule not in GRADIENT_RULES:
        return 0
    cost = objective_sequences * (SAMPLE_PASSES + GRADIENT_PASSES)
    if rule == "second_order":
        cost += probes * objective_sequences * HVP_PASSES
    if rule == "first_order_routes":
        cost += route_sequences * SAMPLE_PASSES
    return cost


def equal_cost_steps(cost: float, rl) -> int:
    """The refresh budget (GRPO steps, at least 1) that costs as much as ``cost`` sequence passes."""
    return max(1, math.ceil(cost / refresh_step_cost(rl)))


# ---------------------------------------------------------------------------- the rollback sweep artifact

GRADIENT_RULES: tuple[str, ...] = ("first_order", "first_order_routes", "second_order", "other_delta", "gradient_step")
SWEEP_RULES: tuple[str, ...] = RULES + ("gradient_step", "revert_stage")
ROLLBACK_ITEMS = "rollback_items.jsonl"


@dataclass(frozen=True)
class RollbackScores(Spec):
    """Per-item held-out scores of the chain-end model ``current`` after rolling back, under ``rule``, the
    top ``fraction`` of coordinates to their values in ``reference`` (the weights before B's stage), for
    each of ``fractions``. A derived artifact (introduced in ``05_refresh_vs_rollback``): the rolled-back
    models live in memory only, the stored weights are never touched, and only their scores are kept.

    ``rule``: one of :data:`SWEEP_RULES`: the scores of :func:`coordinate_scores`, plus the controls
    ``gradient_step`` (an equal-norm sparse gradient step on A over the ``first_order`` rule's coordinates,
    :func:`sparse_gradient_step`) and ``revert_stage`` (the chain end minus B's whole stage displacement,
    ``stage_after - reference``; ``fractions`` ignored, one row at fraction 1). ``gradient_at``: where g_A
    (and the Hessian diagonal) is evaluated, ``current`` or A's own trained weights ``own``. ``objective``:
    A's :class:`~mdrl_lib.specs.ObjectiveBatch` (gradient rules only). ``routes_at`` with
    ``route_fraction``/``route_prompts``: where and how A's and B's shared routes are measured
    (``first_order_routes``). ``other``: (after, before) of another stage, for ``other_delta``.

    The controls' matching: by default each budget resets ``round(fraction x entries)`` coordinates (equal
    *count*). With ``norm_of`` (another sweep of the same rollback, e.g. the ``first_order`` rule's), each
    budget instead takes coordinates in this rule's order until the rollback moves the weights as far in L2 as
    ``norm_of``'s rollback at that budget (equal *size* of change, :func:`top_coordinates_by_norm`). ``draws``
    (``random`` only): independent random sets per budget (seeds ``seed``, ``seed + 1``, ...); the stored
    items carry a ``draw`` column and :meth:`open` gives each item's mean over the draws. ``domains``: score
    only these domains' held-out items (default: every domain).

    Memory: the build holds a few copies of the model's weights in memory (current, reference, delta,
    gradient, scores, the rolled-back copy), fine for the toy and small models; at several billion
    parameters it needs a machine with that many times the model's fp32 size.
    """

    current: Spec
    reference: Spec
    domain_a: str
    domain_b: str
    rule: str
    fractions: tuple[float, ...]
    objective: Spec | None = None
    gradient_at: Spec | None = None
    routes_at: Spec | None = None
    route_fraction: float = 0.2
    route_prompts: int = 100
    other: tuple[Spec, Spec] | None = None
    stage_after: Spec | None = None
    probes: int = 8
    seed: int = 0
    norm_of: Spec | None = None
    draws: int = 1
    domains: tuple[str, ...] | None = None
    kind: ClassVar[str] = "rollback"

    def __post_init__(self) -> None:
        from mdrl_lib.config import ConfigError

        object.__setattr__(self, "domain_a", check_domain(self.domain_a))
        object.__setattr__(self, "domain_b", check_domain(self.domain_b))
        if self.rule not in SWEEP_RULES:
            raise ConfigError(f"rollback rule: unknown value {self.rule!r}; valid choices: {', '.join(SWEEP_RULES)}")
        fractions = tuple(float(f) for f in self.fractions)
        if not fractions or any(not 0 < f <= 1 for f in fractions):
            raise ConfigError(f"rollback fractions: expected fractions in (0, 1], got {self.fractions!r}")
        object.__setattr__(self, "fractions", tuple(sorted(set(fractions))))
        needs = {"objective": self.rule in GRADIENT_RULES, "gradient_at": self.rule in GRADIENT_RULES,
                 "routes_at": self.rule == "first_order_routes", "other": self.rule == "other_delta",
                 "stage_after": self.rule == "revert_stage"}
        missing = [name for name, needed in needs.items() if needed and getattr(self, name) is None]
        if missing:
            raise ConfigError(f"rollback rule {self.rule!r} needs {', '.join(missing)}")
        if isinstance(self.draws, bool) or not isinstance(self.draws, int) or self.draws < 1:
            raise ConfigError(f"rollback draws: expected a positive integer, got {self.draws!r}")
        if self.draws > 1 and self.rule != "random":
            raise ConfigError(f"rollback draws: only the random rule draws several sets, not {self.rule!r}")
        if self.norm_of is not None:
            if self.rule in ("gradient_step", "revert_stage"):
                raise ConfigError(f"rollback norm_of: the rule {self.rule!r} cannot be matched in size; valid: "
                                  f"{', '.join(RULES)}")
            if not isinstance(self.norm_of, RollbackScores) or self.norm_of.rule == "revert_stage":
                raise ConfigError("rollback norm_of: expected a RollbackScores sweep (not revert_stage) to match in size")
        if self.domains is not None:
            object.__setattr__(self, "domains", tuple(check_domain(d) for d in self.domains))
            if not self.domains:
                raise ConfigError("rollback domains: expected at least one domain (None: every domain)")

    def inputs(self) -> tuple[Spec, ...]:
        extra = [s for s in (self.objective, self.gradient_at, self.routes_at, self.stage_after, self.norm_of)
                 if s is not None]
        return (self.current, self.reference, *extra, *(self.other or ()))

    def key_fields(self, kit: Kit) -> dict:
        key = lambda spec: None if spec is None else kit.key(spec)  # noqa: E731
        fields = {"current": key(self.current), "reference": key(self.reference), "domain_a": self.domain_a,
                  "domain_b": self.domain_b, "rule": self.rule, "fractions": list(self.fractions),
                  "max_new_tokens": kit.config.rl.max_completion_length,
                  "dtype": str(kit.compute_dtype).removeprefix("torch.")}
        if self.rule in GRADIENT_RULES:
            fields.update(objective=key(self.objective), gradient_at=key(self.gradient_at))
        if self.rule == "first_order_routes":
            fields.update(routes_at=key(self.routes_at), route_fraction=self.route_fraction,
                          route_prompts=self.route_prompts)
        if self.rule == "other_delta":
            fields["other"] = [key(s) for s in self.other]
        if self.rule == "second_order":
            fields["probes"] = self.probes
        if self.rule in ("random", "second_order"):
            fields["seed"] = self.seed
        if self.rule == "revert_stage":
            fields["stage_after"] = key(self.stage_after)
        # the later fields enter the key only when set, so the sweeps stored before they existed keep their keys
        if self.norm_of is not None:
            fields["norm_of"] = key(self.norm_of)
        if self.draws > 1:
            fields["draws"] = self.draws
        if self.domains is not None:
            fields["domains"] = list(self.domains)
        return fields

    def at_current(self, kit: Kit) -> bool:
        return kit.key(self.gradient_at) == kit.key(self.current)

    def moves(self, kit: Kit) -> Iterator[tuple[dict, dict[str, torch.Tensor]]]:
        """Each rolled-back weight set of the sweep, in order: (row, weights), ``row`` holding ``fraction``,
        ``draw``, ``count`` (the budget's coordinates; for ``norm_of``, the count the size match took),
        ``chosen``, ``norm`` (L2 of the change) and ``predicted_change`` (g_A . change; None without a
        gradient). What :meth:`build` scores, and :class:`ObjectiveAlong` measures L_A at."""
        current = dict(kit.weights(self.current))
        reference = dict(kit.weights(self.reference))
        delta = deltas(current, reference)
        gradient = hessian = None
        if self.rule in GRADIENT_RULES:
            model, _ = kit.load(self.gradient_at, placement="analysis")
            objective = kit.objective(self.objective)
            gradient = _complete({n: g.detach().float().cpu() for n, g in objective.gradient(model).items()}, delta)
            if self.rule == "second_order":
                hessian = _complete(hessian_diagonal(objective.loss, model, self.probes, self.seed), delta)
            del model
        if self.rule == "revert_stage":
            stage = deltas(dict(kit.weights(self.stage_after)), reference)
            moved = {n: (t - stage[n].to(t.dtype)) if n in stage else t.clone() for n, t in current.items()}
            yield ({"fraction": 1.0, "draw": 0, "count": sum(t.numel() for t in stage.values()), "chosen": None,
                    "norm": change_norm(current, moved), "predicted_change": None}, moved)
            return
        targets = None
        if self.norm_of is not None:
            budgets = kit.get(self.norm_of).metrics["budgets"]
            targets = {float(r["fraction"]): float(r["norm"]) for r in budgets}
            missing = [f for f in self.fractions if not any(math.isclose(f, t) for t in targets)]
            if missing:
                raise ValueError(f"norm_of: the matched sweep has no budget {missing}; its budgets: {sorted(targets)}")
        first = coordinate_scores("first_order", delta, gradient=gradient) if self.rule == "gradient_step" else None
        for draw in range(self.draws):
            scores = self._scores(kit, delta, gradient, hessian, seed=self.seed + draw)
            ranking = rank_coordinates(first if first is not None else scores)  # one sort for every budget
            for fraction in self.fractions:
                count = budget_count(fraction, delta)
                if targets is not None:
                    norm = next(v for f, v in targets.items() if math.isclose(f, fraction))
                    masks, count = ranking.by_norm(delta, norm)
                else:
                    masks = ranking.top(count)
                rolled = roll_back(current, reference, masks)
                norm = change_norm(current, rolled)
                if self.rule == "gradient_step":
                    rolled = sparse_gradient_step(current, gradient, masks, norm) if norm > 0 else rolled
                moved = {n: rolled[n].float() - current[n].float() for n in delta}
                predicted = (float(sum((gradient[n].double() * moved[n].double()).sum() for n in delta))
                             if gradient is not None else None)
                yield ({"fraction": fraction, "draw": draw, "count": count,
                        "chosen": int(sum(int(m.sum()) for m in masks.values())),
                        "norm": change_norm(current, rolled), "predicted_change": predicted}, rolled)

    def build(self, kit: Kit, directory: Path, progress: bool) -> dict:
        from mdrl_lib.evaluation import score_items

        start = time.perf_counter()
        evals = kit.evals if self.domains is None else {d: kit.evals[d] for d in self.domains}
        scorer = tokenizer = None
        rows, frames, analysis_seconds = [], [], None
        for row, tensors in self.moves(kit):
            if scorer is None:
                analysis_seconds = time.perf_counter() - start
                scorer, tokenizer = kit.load(self.current)
            _load_weights(scorer, tensors)
            table = score_items(scorer, tokenizer, evals, max_new_tokens=kit.config.rl.max_completion_length,
                                batch_size=kit.config.compute.eval_batch_size or None)[["domain", "item", "score"]]
            frames.append(table.assign(fraction=row["fraction"], **({"draw": row["draw"]} if self.draws > 1 else {})))
            rows.append(row if self.draws > 1 else {k: v for k, v in row.items() if k != "draw"})
        items = pd.concat(frames, ignore_index=True)
        items.to_json(directory / ROLLBACK_ITEMS, orient="records", lines=True)
        means = items.groupby(["fraction", "domain"])["score"].mean()
        return {"rule": self.rule, "pair": [self.domain_a, self.domain_b], "budgets": _mean_budgets(rows),
                "gradient_at": "current" if self.gradient_at is None or self.at_current(kit) else "own",
                "scores": {f"{f:g}": {d: round(float(means[(f, d)]), 6) for d in means.loc[f].index}
                           for f in sorted({r["fraction"] for r in rows})},
                **({"draws": self.draws} if self.draws > 1 else {}),
                **({"matched": "norm"} if self.norm_of is not None else {}),
                "analysis_seconds": round(analysis_seconds or 0.0, 2), "seconds": round(time.perf_counter() - start, 2)}

    def _scores(self, kit: Kit, delta: Tensors, gradient, hessian, seed: int | None = None) -> dict[str, torch.Tensor]:
        if self.rule in ("random", "magnitude"):
            return coordinate_scores(self.rule, delta, seed=self.seed if seed is None else seed)
        if self.rule in ("first_order", "gradient_step"):
            return coordinate_scores("first_order", delta, gradient=gradient)
        if self.rule == "second_order":
            return coordinate_scores("second_order", delta, gradient=gradient, hessian_diagonal=hessian,
                                     at="current" if self.at_current(kit) else "start")
        if self.rule == "other_delta":
            after, before = (dict(kit.weights(s)) for s in self.other)
            return coordinate_scores("other_delta", delta, gradient=gradient, other_delta=deltas(after, before))
        model, tokenizer = kit.load(self.routes_at)
        examples = [kit.splits(d).train[:self.route_prompts] for d in (self.domain_a, self.domain_b)]
        _, masks = shared_route_masks(model, tokenizer, *examples, self.route_fraction)
        masks = {n: masks.get(n, torch.zeros(t.shape, dtype=torch.bool)) for n, t in delta.items()}
        return coordinate_scores("first_order_routes", delta, gradient=gradient, mask=masks)

    def open(self, kit: Kit, artifact: Artifact) -> pd.DataFrame:
        """The per-item scores: columns ``rule``, ``fraction``, ``domain``, ``item``, ``score`` (with ``draws``,
        each item's mean over the draws; :func:`rollback_draws` gives them one by one)."""
        items = _read_items(artifact.path)
        if "draw" in items:
            items = items.groupby(["fraction", "domain", "item"], as_index=False, sort=False)["score"].mean()
        return items.assign(rule=self.rule)

    def toy_seconds(self, config) -> float:
        return 0.5 * len(self.fractions) * self.draws * (1.0 if self.domains is None else 0.4 * len(self.domains))

    def label(self) -> str:
        extra = (" at equal size" if self.norm_of is not None else "") + (f", {self.draws} draws" if self.draws > 1 else "")
        return f"rollback {self.domain_a},{self.domain_b} by {self.rule}{extra} in {self.current.label()}"


def _read_items(directory: Path) -> pd.DataFrame:
    return pd.read_json(directory / ROLLBACK_ITEMS, orient="records", lines=True)


def _mean_budgets(rows: list[dict]) -> list[dict]:
    """One budget row per fraction: a single draw's row as it is; over several draws, the mean ``count``,
    ``chosen``, ``norm`` and ``predicted_change`` with ``draws`` (how many)."""
    if not rows or "draw" not in rows[0]:
        return rows
    out = []
    for fraction in dict.fromkeys(r["fraction"] for r in rows):
        group = [r for r in rows if r["fraction"] == fraction]
        mean = lambda k: None if group[0][k] is None else float(np.mean([r[k] for r in group]))  # noqa: E731
        out.append({"fraction": fraction, "count": mean("count"), "chosen": mean("chosen"), "norm": mean("norm"),
                    "predicted_change": mean("predicted_change"), "draws": len(group)})
    return out


def rollback_draws(kit: Kit, spec: RollbackScores) -> pd.DataFrame:
    """A sweep's per-item scores draw by draw (columns ``fraction``, ``domain``, ``item``, ``score`` and
    ``draw``; 0 throughout for a sweep of one draw)."""
    items = _read_items(kit.get(spec).path)
    return items if "draw" in items else items.assign(draw=0)


def _complete(tensors: Mapping[str, torch.Tensor], like: Tensors) -> dict[str, torch.Tensor]:
    """``tensors`` for every name of ``like``; names it lacks (weights a model ties to another) get zeros."""
    return {n: (tensors[n].float() if n in tensors else torch.zeros(t.shape)) for n, t in like.items()}


@torch.no_grad()
def _load_weights(model: torch.nn.Module, tensors: Tensors) -> None:
    """Copy ``tensors`` into ``model``'s parameters and buffers by name (the model's dtype and device kept);
    a name the model does not hold is an error."""
    state = model.state_dict()
    unknown = sorted(set(tensors) - set(state))
    if unknown:
        raise KeyError(f"the model holds no tensor named {unknown[:3]}")
    for name, tensor in tensors.items():
        state[name].copy_(tensor.to(dtype=state[name].dtype, device=state[name].device))


def rollback_items(kit: Kit, spec: RollbackScores) -> pd.DataFrame:
    """The per-item scores of a :class:`RollbackScores` (built once): columns ``rule``, ``fraction``,
    ``domain``, ``item``, ``score`` (:meth:`RollbackScores.open`)."""
    return kit.open(spec)


# ---------------------------------------------------------------------------------- paired comparisons


def paired_changes(before: pd.DataFrame, after: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per domain, ``after`` minus ``before`` on the same items with a 95% interval and p-value
    (:func:`mdrl_lib.stats.paired_difference`: McNemar for 0/1 domains, bootstrap and signed rank for Code
    and CW). ``before``, ``after``: per-item tables with columns ``domain``, ``item``, ``score``. Columns:
    ``domain``, ``before``, ``after``, ``diff``, ``ci_low``, ``ci_high``, ``p_value``."""
    from mdrl_lib.domains.base import FRACTIONAL_DOMAINS
    from mdrl_lib.stats import paired_difference

    rows = []
    for domain in dict.fromkeys(before["domain"]):
        b = before[before["domain"] == domain].set_index("item")["score"].sort_index()
        a = after[after["domain"] == domain].set_index("item")["score"].reindex(b.index)
        if a.isna().any():
            raise ValueError(f"domain {domain!r}: {int(a.isna().sum())} items are scored only before")
        result = paired_difference(b.to_numpy(), a.to_numpy(), FRACTIONAL_DOMAINS.get(domain, "auto"), n_boot=n_boot,
                                   seed=seed)
        rows.append({"domain": domain, "before": result.mean_before, "after": result.mean_after, "diff": result.diff,
                     "ci_low": result.ci_low, "ci_high": result.ci_high, "p_value": result.p_value})
    return pd.DataFrame(rows, columns=["domain", "before", "after", "diff", "ci_low", "ci_high", "p_value"])


def difference_in_changes(first: tuple[pd.DataFrame, pd.DataFrame], second: tuple[pd.DataFrame, pd.DataFrame],
                          domain: str, *, n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """How much more ``first``'s change (after minus before) raised ``domain`` than ``second``'s, per item, on
    the same items: mean of ``(a1 - b1) - (a2 - b2)`` with a paired bootstrap 95% interval. Each pair is
    (before, after) per-item tables (columns ``domain``, ``item``, ``score``). Used for C6's control: the
    refresh's gain from the chain's end against the same steps' gain from theta_A*."""
    from mdrl_lib.stats import paired_bootstrap

    def change(pair):
        b, a = (t[t["domain"] == domain].set_index("item")["score"].sort_index() for t in pair)
        return (a - b.reindex(a.index)).sort_index()

    one, two = change(first), change(second)
    if not one.index.equals(two.index):
        raise ValueError(f"domain {domain!r}: the two changes are not on the same items")
    result = paired_bootstrap(two.to_numpy(), one.to_numpy(), n_boot=n_boot, seed=seed)
    return {"diff": result.diff, "ci_low": result.ci_low, "ci_high": result.ci_high, "p_value": result.p_value}


def results_table(items: Mapping[str, pd.DataFrame], domains: Sequence[str]) -> pd.DataFrame:
    """The paper's table: one row per method (the keys of ``items``, in order), one column per domain
    (mean held-out score) and ``average`` (the mean of the domain columns)."""
    rows = {}
    for name, table in items.items():
        means = table.groupby("domain")["score"].mean()
        rows[name] = {d: float(means[d]) for d in domains}
    out = pd.DataFrame(rows).T[list(domains)]
    out["average"] = out.mean(axis=1)
    out.index.name = "model"
    return out


def best_fraction(items: pd.DataFrame, domain: str) -> float:
    """The rollback fraction with the highest mean score on ``domain`` (ties: the smallest). ``items``: the
    per-item table of one rule (columns ``fraction``, ``domain``, ``score``). Chosen on the evaluation items
    themselves, so the best score is optimistic."""
    means = items[items["domain"] == domain].groupby("fraction")["score"].mean().sort_index()
    if means.empty:
        raise ValueError(f"no scores of domain {domain!r}")
    return float(means.index[int(np.argmax(means.to_numpy()))])


# ------------------------------------------------------------------------ the sweep's paired changes

CHANGES_FILE = "changes.jsonl"
CHANGE_COLUMNS = ("fraction", "domain", "before", "after", "diff", "ci_low", "ci_high", "p_value")


@dataclass(frozen=True)
class RollbackChanges(Spec):
    """Per budget and domain, the paired change from ``baseline``'s held-out items (the model the rollback
    starts from, the chain's end) to a :class:`RollbackScores` sweep's (:func:`paired_changes` with
    ``n_boot`` and ``seed``), cached: the curves of notebook ``05_refresh_vs_rollback``'s rollback figure,
    its cost table and C7. :meth:`open` gives a table with columns :data:`CHANGE_COLUMNS`, one row per
    (fraction, domain), fractions ascending."""

    sweep: RollbackScores
    baseline: Spec
    n_boot: int = 2000
    seed: int = 0
    kind: ClassVar[str] = "rollback_changes"

    def inputs(self) -> tuple[Spec, ...]:
        from mdrl_lib.specs import Scores

        return (self.sweep, Scores(self.baseline))

    def key_fields(self, kit: Kit) -> dict:
        from mdrl_lib.specs import Scores

        return {"sweep": kit.key(self.sweep), "baseline": kit.key(Scores(self.baseline)), "n_boot": self.n_boot,
                "seed": self.seed}

    def build(self, kit: Kit, directory: Path, progress: bool) -> dict:
        start = time.perf_counter()
        table = sweep_changes(kit.item_results(self.baseline)[["domain", "item", "score"]], kit.open(self.sweep),
                              n_boot=self.n_boot, seed=self.seed)
        with open(directory / CHANGES_FILE, "w") as handle:
            for row in table.to_dict("records"):
                handle.write(json.dumps({k: _plain(v) for k, v in row.items()}) + "\n")
        return {"rows": len(table), "seconds": round(time.perf_counter() - start, 2)}

    def open(self, kit: Kit, artifact: Artifact) -> pd.DataFrame:
        lines = (artifact.path / CHANGES_FILE).read_text().splitlines()
        return pd.DataFrame([json.loads(line) for line in lines], columns=list(CHANGE_COLUMNS))

    def toy_seconds(self, config) -> float:
        return 0.5

    def label(self) -> str:
        return f"paired changes of {self.sweep.label()}"


def sweep_changes(baseline: pd.DataFrame, sweep: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """:func:`paired_changes` from ``baseline`` (per-item table: ``domain``, ``item``, ``score``) to each budget
    of a sweep (per-item table with ``fraction``), stacked: columns :data:`CHANGE_COLUMNS`. Only the domains the
    sweep scored are compared (a control sweep may score A's items only)."""
    baseline = baseline[baseline["domain"].isin(set(sweep["domain"]))]
    frames = [paired_changes(baseline, group[["domain", "item", "score"]], n_boot=n_boot, seed=seed)
              .assign(fraction=float(fraction)) for fraction, group in sweep.groupby("fraction")]
    return pd.concat(frames, ignore_index=True)[list(CHANGE_COLUMNS)]


def _plain(value: Any) -> Any:
    """A table cell as a JSON value: numpy numbers as Python numbers (floats exactly), NaN as None."""
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


# ------------------------------------------------------------------ L_A along the rollbacks and the refresh

OBJECTIVE_ROWS = "objective_along.jsonl"
OBJECTIVE_COLUMNS = ("source", "rule", "matched", "fraction", "draw", "model", "loss", "norm", "predicted_change")


@dataclass(frozen=True)
class ObjectiveAlong(Spec):
    """A's objective L_A (``objective``, an :class:`~mdrl_lib.specs.ObjectiveBatch`; its mean NLL of A's
    verified-correct samples, :meth:`~mdrl_lib.objectives.DomainObjective.loss`) measured in fp32 at every
    rolled-back weight set of each of ``sweeps`` (rebuilt exactly as the sweep built them,
    :meth:`RollbackScores.moves`) and at each stored model of ``models`` (e.g. the chain's end and the
    refreshes' checkpoints), cached. No evaluation, no training: one forward pass over the batch per point.
    :meth:`open` gives one row per point with the columns :data:`OBJECTIVE_COLUMNS` (``source``: ``rollback``
    or ``model``; ``model``: the model's label; a rollback's ``rule``, ``matched`` (``count`` or ``norm``),
    ``fraction``, ``draw``, ``norm`` and ``predicted_change``, the first-order change g_A . change that the
    sweep's own gradient predicts). Introduced in ``05_refresh_vs_rollback`` (does L_A track A's score along
    the rollback and the refresh? C7's premise)."""

    objective: Spec
    sweeps: tuple[Spec, ...] = ()
    models: tuple[Spec, ...] = ()
    kind: ClassVar[str] = "objective_along"

    def __post_init__(self) -> None:
        from mdrl_lib.config import ConfigError

        object.__setattr__(self, "sweeps", tuple(self.sweeps))
        object.__setattr__(self, "models", tuple(self.models))
        if not self.sweeps and not self.models:
            raise ConfigError("objective_along: give at least one rollback sweep or model")
        if any(not isinstance(s, RollbackScores) for s in self.sweeps):
            raise ConfigError("objective_along: every sweep must be a RollbackScores spec")

    def inputs(self) -> tuple[Spec, ...]:
        return (self.objective, *self.sweeps, *self.models)

    def key_fields(self, kit: Kit) -> dict:
        return {"objective": kit.key(self.objective), "sweeps": [kit.key(s) for s in self.sweeps],
                "models": [kit.key(m) for m in self.models], "dtype": "fp32"}

    def build(self, kit: Kit, directory: Path, progress: bool) -> dict:
        start = time.perf_counter()
        objective = kit.objective(self.objective)
        first = self.sweeps[0].current if self.sweeps else self.models[0]
        model, _ = kit.load(first, placement="analysis")

        @torch.no_grad()
        def loss(tensors: Tensors) -> float:
            _load_weights(model, tensors)
            return float(objective.loss(model))

        rows = []
        for spec in self.models:
            rows.append({"source": "model", "rule": None, "matched": None, "fraction": None, "draw": None,
                         "model": spec.label(), "loss": loss(dict(kit.weights(spec))), "norm": None,
                         "predicted_change": None})
        for sweep in self.sweeps:
            for row, tensors in sweep.moves(kit):
                rows.append({"source": "rollback", "rule": sweep.rule,
                             "matched": "norm" if sweep.norm_of is not None else "count", "fraction": row["fraction"],
                             "draw": row["draw"], "model": sweep.label(), "loss": loss(tensors), "norm": row["norm"],
                             "predicted_change": row["predicted_change"]})
        with open(directory / OBJECTIVE_ROWS, "w") as handle:
            for row in rows:
                handle.write(json.dumps({k: _plain(v) for k, v in row.items()}) + "\n")
        return {"points": len(rows), "seconds": round(time.perf_counter() - start, 2)}

    def open(self, kit: Kit, artifact: Artifact) -> pd.DataFrame:
        lines = (artifact.path / OBJECTIVE_ROWS).read_text().splitlines()
        return pd.DataFrame([json.loads(line) for line in lines], columns=list(OBJECTIVE_COLUMNS))

    def toy_seconds(self, config) -> float:
        return 1.0 + 0.05 * (len(self.models) + 5 * len(self.sweeps))

    def label(self) -> str:
        return f"L_A along {len(self.sweeps)} rollback sweeps and {len(self.models)} models"


# ------------------------------------------------------------- C7 over the k curve, and its premises' figures


def in_range(fractions: Iterable[float], k_range: Sequence[float]) -> list[float]:
    """The budgets of ``fractions`` inside the closed range ``k_range = (low, high)`` (a relative tolerance of
    1e-9 at the ends), sorted. Introduced in ``05_refresh_vs_rollback`` (C7's pre-set k range)."""
    low, high = (float(v) for v in k_range)
    if not 0 < low <= high <= 1:
        raise ValueError(f"k range: expected 0 < low <= high <= 1, got {tuple(k_range)!r}")
    return sorted(float(f) for f in fractions
                  if low * (1 - 1e-9) <= float(f) <= high * (1 + 1e-9))


def curve_item_means(items: pd.DataFrame, domain: str, fractions: Sequence[float]) -> pd.Series:
    """Each item's mean score over the budgets ``fractions`` of one sweep, for ``domain``: a Series indexed
    by item. ``items``: a sweep's per-item table (columns ``fraction``, ``domain``, ``item``, ``score``); every
    budget must be present for every item (the area under the item's k curve, divided by the number of
    budgets)."""
    if not len(fractions):
        raise ValueError("no budget in the k range; widen the range or add budgets")
    part = items[items["domain"] == domain]
    table = part.pivot_table(index="item", columns="fraction", values="score", aggfunc="mean")
    columns = [next((c for c in table.columns if math.isclose(float(c), f)), None) for f in fractions]
    missing = [f for f, c in zip(fractions, columns) if c is None]
    if missing:
        raise ValueError(f"domain {domain!r}: the sweep has no budget {missing}; its budgets: {sorted(table.columns)}")
    chosen = table[columns]
    if chosen.isna().any().any():
        raise ValueError(f"domain {domain!r}: some items are not scored at every budget")
    return chosen.mean(axis=1).sort_index()


def curve_difference(first: pd.DataFrame, second: pd.DataFrame | pd.Series, domain: str, fractions: Sequence[float],
                     *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """How much ``first``'s k curve lies above ``second``'s for ``domain`` over ``fractions``, paired over items:
    the mean over items of (item's mean over k of first) - (the same of second), with a paired bootstrap
    interval of coverage ``level`` and p-value (:func:`mdrl_lib.stats.paired_bootstrap`). ``first``: a sweep's per-item table;
    ``second``: another sweep's per-item table, or a per-item table without ``fraction`` (one model, e.g. the
    chain's end: the recovery's mean over k). Returns ``diff``, ``ci_low``, ``ci_high``, ``p_value``, ``n``.
    Introduced in ``05_refresh_vs_rollback`` (C7 judged over the whole k curve)."""
    from mdrl_lib.stats import paired_bootstrap

    one = curve_item_means(first, domain, fractions)
    if "fraction" in second:
        two = curve_item_means(second, domain, fractions)
    else:
        two = second[second["domain"] == domain].set_index("item")["score"].sort_index()
    if not one.index.equals(two.index):
        raise ValueError(f"domain {domain!r}: the two curves are not on the same items")
    result = paired_bootstrap(two.to_numpy(), one.to_numpy(), n_boot=n_boot, seed=seed, level=level)
    return {"diff": result.diff, "ci_low": result.ci_low, "ci_high": result.ci_high, "p_value": result.p_value,
            "n": int(result.n)}


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation of ``x`` and ``y`` (shape ``(n,)``, ``n >= 3``): Pearson's correlation of
    their average ranks (ties share a rank). NaN when either is constant. Introduced in
    ``05_refresh_vs_rollback`` (does L_A's fall order the points as A's score does?)."""
    x, y = pd.Series(np.asarray(x, dtype=float)), pd.Series(np.asarray(y, dtype=float))
    if len(x) != len(y) or len(x) < 3 or x.isna().any() or y.isna().any():
        raise ValueError(f"rank correlation: expected two finite sequences of the same length >= 3, got {len(x)} and "
                         f"{len(y)}")
    rx, ry = x.rank().to_numpy(), y.rank().to_numpy()
    if np.all(rx == rx[0]) or np.all(ry == ry[0]):
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def sign_agreement(loss_change: Sequence[float], score_change: Sequence[float]) -> float:
    """The share of points where L_A and the score move the right way together: L_A falls and the score rises,
    or L_A rises and the score falls (a zero change on either side agrees with nothing). Shape ``(n,)``
    each, ``n >= 1``."""
    a, b = np.asarray(loss_change, dtype=float), np.asarray(score_change, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"sign agreement: expected two sequences of the same length >= 1, got {a.shape} and {b.shape}")
    return float(np.mean(np.sign(-a) * np.sign(b) > 0))


def paired_standard_errors(before: pd.DataFrame, after: pd.DataFrame, domain: str) -> dict[str, float]:
    """``domain``'s paired change from ``before`` to ``after`` (per-item tables: ``domain``, ``item``, ``score``) in
    its own standard errors: ``diff`` (mean of after - before), ``se`` (std of the per-item differences, ddof 1,
    over sqrt(n)), ``z = diff / se`` (NaN when se is 0) and ``n``. Introduced in ``05_refresh_vs_rollback``
    (the damage premise: B's stage must cost A at least a set number of standard errors)."""
    b = before[before["domain"] == domain].set_index("item")["score"].sort_index()
    a = after[after["domain"] == domain].set_index("item")["score"].reindex(b.index)
    if b.empty or a.isna().any():
        raise ValueError(f"domain {domain!r}: the two tables do not score the same items")
    d = (a - b).to_numpy(dtype=float)
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan
    diff = float(d.mean())
    return {"diff": diff, "se": se, "z": diff / se if se > 0 else math.nan, "n": int(len(d))}
