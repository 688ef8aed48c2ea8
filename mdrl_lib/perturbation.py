"""The local perturbation theory, measured: Taylor terms, Hessian-vector products, the conflict subspace
and the contraction of a refresh.

Introduced in notebook ``03_perturbation_theory`` (claims C5 and C6). Everything here takes a
``loss_fn(model) -> scalar tensor`` (a domain's objective on fixed batches) and a
:class:`ParameterSpace` (the coordinates under study), so it works on any objective and any subset of
parameters. Curvature enters only through Hessian-vector products by double backward; a Hessian is
never materialised.

Notebook 03's costly measurements are cached artifacts (specs at the end of this module, named by
:mod:`mdrl_lib.recipes.nb03`): :class:`HvpCheck`, :class:`TaylorSegment`, :class:`TaylorAlong`,
:class:`ConflictRoutes`, :class:`ConflictEigenpairs`, :class:`CapturedShares`, :class:`TopCurvature` and
:class:`GDContraction`; the notebook opens them (``kit.open``) and draws.

Pitfalls measured on the toy models, which the functions cannot check for you:
- double backward through ``sdpa`` attention fails on CPU: call
  ``model.set_attn_implementation("eager")`` first;
- on left-padded batches the double-backward HVP disagreed with finite differences of the gradient
  (relative error 0.93 on the toy base): use unpadded batches grouped by length, and check the HVP on
  the batches actually used with :func:`hvp_check`;
- ``loss_fn`` must be deterministic (``model.eval()``, no dropout, fixed batches).
"""
from __future__ import annotations

import json
import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

from mdrl_lib.config import ConfigError
from mdrl_lib.specs import Spec
from mdrl_lib.store import Artifact

if TYPE_CHECKING:
    from mdrl_lib.kit import Kit

LossFn = Callable[[torch.nn.Module], torch.Tensor]
Vector = torch.Tensor


# --------------------------------------------------------------------------------------------------
# Parameter vectors
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ParameterSpace:
    """A chosen list of named parameters seen as one flat vector, optionally restricted to a subset of
    its coordinates.

    The *full* vector concatenates the named parameters (flattened, in ``names`` order; parameter
    ``names[i]`` occupies ``[offsets[i], offsets[i] + numel(shapes[i]))``). With a ``mask`` the space
    is the masked coordinates only: every vector this module exchanges has length :attr:`dim`
    (``mask.sum()``), and the Hessian seen through :func:`hvp` is the restricted ``P H P``.
    Build one with :meth:`from_model`. Introduced in ``03_perturbation_theory``.
    """

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    offsets: tuple[int, ...]
    numel: int
    mask: torch.Tensor | None = None  # bool, shape (numel,), on CPU

    @classmethod
    def from_model(cls, model: torch.nn.Module, names: Sequence[str] | None = None,
                   mask: torch.Tensor | Mapping[str, torch.Tensor] | None = None) -> "ParameterSpace":
        """The space of ``names`` (default: every parameter, tied ones once) of ``model``.

        ``mask`` restricts it: a bool tensor of shape ``(numel,)`` over the full vector, or a dict
        ``{name: bool tensor of that parameter's shape}`` where names left out are excluded entirely.
        """
        params = dict(model.named_parameters())
        if names is None:
            names = list(params)
        if isinstance(names, str):
            raise TypeError(f"names must be a list of parameter names, not the string {names!r}")
        names = list(names)
        unknown = [n for n in names if n not in params]
        if unknown:
            valid = list(params)
            shown = ", ".join(valid[:20]) + (f", ... ({len(valid)} in all)" if len(valid) > 20 else "")
            raise KeyError(f"unknown parameter name(s) {unknown}; valid names: {shown}")
        if len(set(names)) != len(names):
            raise ValueError(f"parameter names repeat: {names}")
        if not names:
            raise ValueError("a ParameterSpace needs at least one parameter name")
        shapes = tuple(params[n].shape for n in names)
        offsets, total = [], 0
        for shape in shapes:
            offsets.append(total)
            total += math.prod(shape)
        space = cls(tuple(names), shapes, tuple(offsets), total)
        return space.restrict(mask) if mask is not None else space

    # -- geometry --------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Number of coordinates of the space (masked ones only, when there is a mask)."""
        return self.numel if self.mask is None else int(self.mask.sum())

    @property
    def index(self) -> torch.Tensor | None:
        """Positions of the space's coordinates in the full vector, shape ``(dim,)``; None without mask."""
        if self.mask is None:
            return None
        cached = self.__dict__.get("_index")
        if cached is None:
            cached = self.mask.nonzero().squeeze(1)
            object.__setattr__(self, "_index", cached)
        return cached

    def restrict(self, mask: torch.Tensor | Mapping[str, torch.Tensor]) -> "ParameterSpace":
        """The same parameters restricted to ``mask`` (intersected with any mask already set).

        ``mask``: bool tensor of shape ``(numel,)`` over the full vector, or a dict of per-parameter
        bool tensors (names left out are excluded)."""
        if isinstance(mask, Mapping):
            unknown = [n for n in mask if n not in self.names]
            if unknown:
                raise KeyError(f"mask names {unknown} are not in the space; its names: {list(self.names)}")
            parts = []
            for name, shape in zip(self.names, self.shapes):
                part = mask.get(name)
                if part is None:
                    parts.append(torch.zeros(math.prod(shape), dtype=torch.bool))
                    continue
                part = torch.as_tensor(part)
                if part.dtype != torch.bool or part.shape != shape:
                    raise ValueError(f"mask for {name} must be a bool tensor of shape {tuple(shape)}, "
                                     f"got {part.dtype} of shape {tuple(part.shape)}")
                parts.append(part.detach().reshape(-1).cpu())
            full = torch.cat(parts)
        else:
            full = torch.as_tensor(mask)
            if full.dtype != torch.bool or full.shape != (self.numel,):
                raise ValueError(f"mask must be a bool tensor of shape ({self.numel},), "
                                 f"got {full.dtype} of shape {tuple(full.shape)}")
            full = full.detach().cpu()
        if self.mask is not None:
            full = full & self.mask
        if not bool(full.any()):
            raise ValueError("the mask selects no coordinate")
        return ParameterSpace(self.names, self.shapes, self.offsets, self.numel, full.clone())

    def coordinate_names(self) -> list[tuple[str, int]]:
        """(parameter name, flat index inside it) of each coordinate of the space, in order."""
        positions = range(self.numel) if self.mask is None else self.index.tolist()
        bounds = list(self.offsets[1:]) + [self.numel]
        out, k = [], 0
        for pos in positions:
            while pos >= bounds[k]:
                k += 1
            out.append((self.names[k], pos - self.offsets[k]))
        return out

    # -- vectors <-> tensors -----------------------------------------------------------------------
    def parameters(self, model: torch.nn.Module) -> list[torch.nn.Parameter]:
        """The model's parameter objects, in ``names`` order (checked against the stored shapes)."""
        params = dict(model.named_parameters())
        out = []
        for name, shape in zip(self.names, self.shapes):
            if name not in params:
                raise KeyError(f"the model has no parameter {name!r}; this space was built for another model")
            if params[name].shape != shape:
                raise ValueError(f"parameter {name} has shape {tuple(params[name].shape)}, "
                                 f"the space expects {tuple(shape)}")
            out.append(params[name])
        return out

    def blocks(self) -> list[tuple[int, int, torch.Tensor | None]]:
        """Per parameter: (start in the space's vector, count, flat indices inside the parameter or
        None when all its coordinates belong to the space)."""
        cached = self.__dict__.get("_blocks")
        if cached is None:
            cached, start = [], 0
            for offset, shape in zip(self.offsets, self.shapes):
                n = math.prod(shape)
                if self.mask is None:
                    cached.append((start, n, None))
                    start += n
                    continue
                local = self.mask[offset:offset + n].nonzero().squeeze(1)
                cached.append((start, local.numel(), None if local.numel() == n else local))
                start += local.numel()
            object.__setattr__(self, "_blocks", cached)
        return cached

    def flatten(self, tensors: Sequence[torch.Tensor | None]) -> Vector:
        """One tensor per name (None = zeros) -> the space's vector, shape ``(dim,)``."""
        return self._flatten(list(tensors), consume=False)

    def _flatten(self, tensors: list, consume: bool) -> Vector:
        # writes into one preallocated vector (no full-size concatenation); with consume=True each
        # input is dropped from the list once copied, so a model-sized list is never held twice
        if len(tensors) != len(self.names):
            raise ValueError(f"expected {len(self.names)} tensors, got {len(tensors)}")
        ref = next((t for t in tensors if t is not None), None)
        if ref is None:
            raise ValueError("all tensors are None")
        out = torch.empty(self.dim, dtype=ref.dtype, device=ref.device)  # every block is written below
        for i, (start, count, local) in enumerate(self.blocks()):
            piece = tensors[i]
            if piece is None:
                out[start:start + count].zero_()
            elif count:
                flat = piece.detach().reshape(-1)
                out[start:start + count] = flat if local is None else flat[local.to(flat.device)]
            if consume:
                tensors[i] = None
        return out

    def unflatten(self, vector: Vector) -> list[torch.Tensor]:
        """The space's vector, shape ``(dim,)`` -> one tensor per name in its parameter's shape
        (views without a mask; zeros at coordinates outside the mask)."""
        self._check_vector(vector)
        out = []
        for (start, count, local), shape in zip(self.blocks(), self.shapes):
            if local is None and count == math.prod(shape):
                out.append(vector[start:start + count].view(shape))
                continue
            piece = vector.new_zeros(math.prod(shape))
            if count:
                piece[local.to(vector.device)] = vector[start:start + count]
            out.append(piece.view(shape))
        return out

    def get(self, model: torch.nn.Module) -> Vector:
        """The model's current values of the space's coordinates, shape ``(dim,)`` (a copy)."""
        return self.flatten([p.detach() for p in self.parameters(model)])

    @torch.no_grad()
    def set(self, model: torch.nn.Module, vector: Vector) -> None:
        """Copy ``vector`` (shape ``(dim,)``) into the model's parameters; coordinates outside the
        mask keep their values."""
        self._update(model, vector, add=False)

    @torch.no_grad()
    def add_(self, model: torch.nn.Module, vector: Vector, scale: float = 1.0) -> None:
        """Add ``scale * vector`` (shape ``(dim,)``) to the model's parameters in place."""
        self._update(model, vector, add=True, scale=scale)

    def _update(self, model: torch.nn.Module, vector: Vector, add: bool, scale: float = 1.0) -> None:
        self._check_vector(vector)
        for param, (start, count, local) in zip(self.parameters(model), self.blocks()):
            if not count:
                continue
            values = vector[start:start + count].to(dtype=param.dtype, device=param.device)
            flat = param.view(-1)
            if local is None:
                if add:
                    flat.add_(values, alpha=scale)
                else:
                    flat.copy_(values)
            else:
                index = local.to(param.device)
                flat[index] = flat[index] + scale * values if add else values

    def _check_vector(self, vector: Vector) -> None:
        if not isinstance(vector, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor of shape ({self.dim},), got {type(vector).__name__}")
        if vector.shape != (self.dim,):
            raise ValueError(f"expected a vector of shape ({self.dim},), got {tuple(vector.shape)}")


@contextmanager
def displaced(model: torch.nn.Module, space: ParameterSpace, theta: Vector) -> Iterator[torch.nn.Module]:
    """Within the block the model's space coordinates hold ``theta``; afterwards every parameter of
    the space is restored bit for bit."""
    with restored_afterwards(model, space):
        space.set(model, theta)
        yield model


@contextmanager
def restored_afterwards(model: torch.nn.Module, space: ParameterSpace) -> Iterator[torch.nn.Module]:
    """Whatever the block does to the space's parameters, they are restored bit for bit afterwards
    (one copy of those parameters is held meanwhile)."""
    saved = [p.detach().clone() for p in space.parameters(model)]
    try:
        yield model
    finally:
        with torch.no_grad():
            for param, value in zip(space.parameters(model), saved):
                param.copy_(value)


@contextmanager
def _requiring_grad(params: Sequence[torch.nn.Parameter]) -> Iterator[None]:
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        with torch.enable_grad():
            yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def _scalar_loss(loss_fn: LossFn, model: torch.nn.Module) -> torch.Tensor:
    loss = loss_fn(model)
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise TypeError("loss_fn(model) must return a scalar torch tensor, got "
                        f"{type(loss).__name__}{'' if not isinstance(loss, torch.Tensor) else tuple(loss.shape)}")
    return loss.reshape(())


def loss_value(loss_fn: LossFn, model: torch.nn.Module) -> float:
    """``loss_fn(model)`` as a Python float, without building a graph."""
    with torch.no_grad():
        return float(_scalar_loss(loss_fn, model))


# --------------------------------------------------------------------------------------------------
# Gradients and Hessian-vector products
# --------------------------------------------------------------------------------------------------
def gradient(loss_fn: LossFn, model: torch.nn.Module, space: ParameterSpace) -> Vector:
    """The gradient of ``loss_fn`` at the model's current weights, restricted to the space, shape
    ``(dim,)`` in the parameters' dtype. Introduced in ``03_perturbation_theory``."""
    params = space.parameters(model)
    with _requiring_grad(params):
        loss = _scalar_loss(loss_fn, model)
        grads = list(torch.autograd.grad(loss, params, allow_unused=True))
    del loss
    return space._flatten(grads, consume=True)


def _hvp_from_grads(grads: Sequence[torch.Tensor | None], params: Sequence[torch.nn.Parameter],
                    space: ParameterSpace, vector: Vector, retain_graph: bool) -> Vector:
    pieces = space.unflatten(vector.to(dtype=params[0].dtype, device=params[0].device))
    terms = [(g * v).sum() for g, v in zip(grads, pieces) if g is not None and g.requires_grad]
    if not terms:  # the loss is at most linear in these parameters
        return torch.zeros(space.dim, dtype=params[0].dtype, device=params[0].device)
    second = list(torch.autograd.grad(torch.stack(terms).sum(), params, allow_unused=True, retain_graph=retain_graph))
    del terms, pieces
    if not retain_graph and isinstance(grads, list):
        grads.clear()  # the first gradients are spent: free them before the output is assembled
    return space._flatten(second, consume=True)


def hvp(loss_fn: LossFn, model: torch.nn.Module, space: ParameterSpace, vector: Vector) -> Vector:
    """The Hessian-vector product ``H v`` at the model's current weights by double backward
    (``create_graph=True``), shape ``(dim,)``. With a masked space this is ``P H P v``: ``v`` lives on
    the masked coordinates and only they are returned. Costs one forward and two backward passes
    (about 3 gradients' time on Qwen2 models, ``benchmarks/hvp.py``); :func:`hessian_operator` reuses
    the first backward across many products.
    Introduced in ``03_perturbation_theory``."""
    space._check_vector(vector)
    params = space.parameters(model)
    with _requiring_grad(params):
        loss = _scalar_loss(loss_fn, model)
        grads = list(torch.autograd.grad(loss, params, create_graph=True, allow_unused=True))
        del loss
        return _hvp_from_grads(grads, params, space, vector, retain_graph=False)


class HessianOperator:
    """``v -> H v`` at the model's weights when built, for many products (eigsh, captured shares).

    With ``reuse_graph=True`` the loss and its differentiable gradient are computed once and their
    graph kept, so each product costs only the second backward (about 2 gradients' time instead of 3;
    memory: the kept graph);
    the weights must not change while it is in use (checked). With ``reuse_graph=False`` every product
    is a fresh :func:`hvp`. Counts products in :attr:`calls`. Introduced in ``03_perturbation_theory``.
    """

    def __init__(self, loss_fn: LossFn, model: torch.nn.Module, space: ParameterSpace, reuse_graph: bool = True):
        self.loss_fn, self.model, self.space, self.reuse_graph = loss_fn, model, space, reuse_graph
        self.calls = 0
        self._params = space.parameters(model)
        self._versions = [p._version for p in self._params]
        self._grads = None
        if reuse_graph:
            with _requiring_grad(self._params):
                loss = _scalar_loss(loss_fn, model)
                self._grads = torch.autograd.grad(loss, self._params, create_graph=True, allow_unused=True)
        self.dtype, self.device = self._params[0].dtype, self._params[0].device

    @property
    def dim(self) -> int:
        return self.space.dim

    def __call__(self, vector: Vector) -> Vector:
        self.space._check_vector(vector)
        self.calls += 1
        if not self.reuse_graph:
            return hvp(self.loss_fn, self.model, self.space, vector)
        if [p._version for p in self._params] != self._versions:
            raise RuntimeError("the model's weights changed since this HessianOperator was built; build a new one")
        with _requiring_grad(self._params):
            return _hvp_from_grads(self._grads, self._params, self.space, vector, retain_graph=True)

    def numpy_matvec(self, x: np.ndarray) -> np.ndarray:
        """The product on a float64 numpy vector (computed in the model's dtype)."""
        v = torch.as_tensor(np.asarray(x).reshape(-1), dtype=self.dtype, device=self.device)
        return self(v).detach().to(torch.float64).cpu().numpy()

    def release(self) -> None:
        """Free the kept graph."""
        self._grads = None
        self.reuse_graph = False


def hessian_operator(loss_fn: LossFn, model: torch.nn.Module, space: ParameterSpace,
                     reuse_graph: bool = True) -> HessianOperator:
    """A :class:`HessianOperator` for ``loss_fn`` at the model's current weights."""
    return HessianOperator(loss_fn, model, space, reuse_graph=reuse_graph)


def dense_hessian(loss_fn: LossFn, model: torch.nn.Module, space: ParameterSpace) -> torch.Tensor:
    """The exact Hessian of ``loss_fn`` on the space's coordinates at the model's weights, shape ``(dim, dim)``
    float64, symmetrised: one product of a :class:`HessianOperator` per unit vector, so only for small spaces.
    Introduced in ``03_perturbation_theory`` (the ladder's controlled rung)."""
    operator = hessian_operator(loss_fn, model, space)
    try:
        eye = torch.eye(space.dim, dtype=operator.dtype, device=operator.device)
        matrix = torch.stack([operator(eye[i]) for i in range(space.dim)], dim=1).double().cpu()
    finally:
        operator.release()
    return 0.5 * (matrix + matrix.T)


def _default_eps(model: torch.nn.Module, space: ParameterSpace) -> float:
    # a central difference balances truncation (eps^2) against rounding (unit roundoff / eps)
    return 1e-4 if space.parameters(model)[0].dtype == torch.float64 else 1e-2


def finite_difference_hvp(loss_fn: LossFn, model: torch.nn.Module, space: ParameterSpace, vector: Vector,
                          eps: float | None = None) -> Vector:
    """Central difference of gradients along ``v``: ``|v| (g(theta + eps u) - g(theta - eps u)) / (2 eps)``
    with ``u = v / |v|``, so ``eps`` is the step length in parameter space (default 1e-4 for float64
    parameters, 1e-2 otherwise). Shape ``(dim,)``. For checking :func:`hvp`; the model's weights are
    restored afterwards."""
    space._check_vector(vector)
    eps = _default_eps(model, space) if eps is None else eps
    if eps <= 0:
        raise ValueError(f"eps must be positive, got {eps}")
    norm = float(vector.norm())
    if norm == 0:
        return torch.zeros_like(vector)
    with restored_afterwards(model, space):
        space.add_(model, vector, scale=eps / norm)
        plus = gradient(loss_fn, model, space)
    with restored_afterwards(model, space):
        space.add_(model, vector, scale=-eps / norm)
        minus = gradient(loss_fn, model, space)
    return plus.sub_(minus).mul_(norm / (2 * eps))


def hvp_check(loss_fn: LossFn, model: torch.nn.Module, space: ParameterSpace, vector: Vector | None = None,
              eps: float | None = None, seed: int = 0) -> dict:
    """Compare :func:`hvp` with :func:`finite_difference_hvp` along ``vector`` (default: a seeded
    random unit vector); ``eps`` as in :func:`finite_difference_hvp`. Returns ``{"relative_error",
    "hvp_norm", "fd_norm", "cosine"}``. Measured: 2e-3 on the toy base's unpadded fp32 batches, 0.93 on
    left-padded ones; an error that does not shrink when ``eps`` moves by 10x means the HVP cannot be
    trusted on this batch. Introduced in ``03_perturbation_theory``."""
    if vector is None:
        gen = torch.Generator().manual_seed(seed)
        vector = torch.randn(space.dim, generator=gen, dtype=torch.float64)
        vector = vector / vector.norm()
    first = space.parameters(model)[0]
    vector = vector.to(dtype=first.dtype, device=first.device)
    exact = hvp(loss_fn, model, space, vector)
    approx = finite_difference_hvp(loss_fn, model, space, vector, eps=eps)
    denom = max(float(approx.norm()), float(exact.norm()), 1e-300)
    return {"relative_error": float((exact - approx).norm()) / denom, "hvp_norm": float(exact.norm()),
            "fd_norm": float(approx.norm()),
            "cosine": float(exact @ approx) / max(float(exact.norm() * approx.norm()), 1e-300)}


# --------------------------------------------------------------------------------------------------
# Taylor terms of the damage
# --------------------------------------------------------------------------------------------------
def taylor_terms(loss_fn: LossFn, model: torch.nn.Module, space: ParameterSpace, theta_a: Vector,
                 delta: Vector, ts: Sequence[float]) -> pd.DataFrame:
    """The damage ``L(theta_a + t delta) - L(theta_a)`` along a displacement against its Taylor terms.

    Columns: ``t``; ``measured``; ``first_order = t g^T delta``; ``second_order = t^2/2 delta^T H delta``;
    ``predicted`` (their sum); ``relative_error = |predicted - measured| / |measured|``. ``g`` and
    ``H delta`` are taken at ``theta_a`` (one gradient, one HVP). The model's weights are restored
    afterwards. ``theta_a`` and ``delta`` have shape ``(dim,)``. Introduced in ``03_perturbation_theory``.
    """
    space._check_vector(theta_a)
    space._check_vector(delta)
    ts = [float(t) for t in ts]
    if not ts:
        raise ValueError("ts is empty")
    with displaced(model, space, theta_a):
        base = loss_value(loss_fn, model)
        g = gradient(loss_fn, model, space)
        h_delta = hvp(loss_fn, model, space, delta.to(g))
    delta = delta.to(g)
    slope = float((g.double() * delta.double()).sum())
    curvature = float((h_delta.double() * delta.double()).sum())
    rows = []
    for t in ts:
        with displaced(model, space, theta_a + t * delta.to(theta_a)):
            measured = loss_value(loss_fn, model) - base
        first, second = t * slope, 0.5 * t * t * curvature
        predicted = first + second
        rel = abs(predicted - measured) / abs(measured) if measured != 0 else (0.0 if predicted == 0 else math.inf)
        rows.append({"t": t, "measured": measured, "first_order": first, "second_order": second,
                     "predicted": predicted, "relative_error": rel})
    return pd.DataFrame(rows)


def quadratic_validity(table: pd.DataFrame, rtol: float = 0.1) -> float | None:
    """The largest ``|t|`` up to which the quadratic prediction stays within ``rtol`` of the measured
    change at every ``t`` of the table (``t = 0`` rows ignored); None if it fails already at the
    smallest ``|t|``. ``table`` comes from :func:`taylor_terms` (or has the same columns)."""
    missing = {"t", "measured", "predicted"} - set(table.columns)
    if missing:
        raise KeyError(f"table lacks column(s) {sorted(missing)}; expected the output of taylor_terms")
    rows = table[table["t"] != 0].assign(abs_t=lambda d: d["t"].abs()).sort_values("abs_t", kind="stable")
    best = None
    for abs_t, group in rows.groupby("abs_t", sort=True):
        err = (group["predicted"] - group["measured"]).abs()
        if not bool((err <= rtol * group["measured"].abs()).all()):
            break
        best = float(abs_t)
    return best


# --------------------------------------------------------------------------------------------------
# Conflict subspace
# --------------------------------------------------------------------------------------------------
_WHICH = ("LA", "SA", "LM", "SM")


def top_eigenpairs(matvec: Callable[[np.ndarray], np.ndarray] | LinearOperator, dim: int, r: int,
                   which: str = "LA", seed: int = 0, tol: float = 1e-6, maxiter: int | None = None,
                   ncv: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``r`` eigenpairs of a symmetric operator given only by its products, via
    ``scipy.sparse.linalg.eigsh`` (ARPACK's implicitly restarted Lanczos) on a ``LinearOperator``.

    ``matvec``: float64 numpy vector of shape ``(dim,)`` -> vector of the same shape (numpy or torch;
    e.g. :meth:`HessianOperator.numpy_matvec`). ``which``: ``"LA"`` largest algebraic (default),
    ``"SA"`` smallest algebraic, ``"LM"``/``"SM"`` largest/smallest magnitude. The start vector is a
    seeded Gaussian, so the result is deterministic. ``tol`` is eigsh's relative accuracy: an HVP in
    float32 carries noise near 1e-6 relative, so asking for much less can keep ARPACK from converging
    (``tol=0`` means machine precision, for float64 operators). When ``r >= dim`` (tiny spaces only)
    the operator is materialised with ``dim`` products and solved densely.
    Returns ``(eigenvalues (r,), eigenvectors (dim, r))``, ordered from the most extreme in the
    ``which`` sense (descending for ``"LA"``, ascending for ``"SA"``). Introduced in ``03_perturbation_theory``.
    """
    if which not in _WHICH:
        raise ValueError(f"which must be one of {_WHICH}, got {which!r}")
    if not isinstance(r, (int, np.integer)) or r < 1:
        raise ValueError(f"r must be a positive integer, got {r!r}")
    if not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if r > dim:
        raise ValueError(f"r={r} exceeds the dimension {dim}")

    def apply(x: np.ndarray) -> np.ndarray:
        y = matvec.matvec(x) if isinstance(matvec, LinearOperator) else matvec(np.asarray(x, dtype=np.float64).reshape(-1))
        if isinstance(y, torch.Tensor):
            y = y.detach().to(torch.float64).cpu().numpy()
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if y.shape != (dim,):
            raise ValueError(f"matvec returned shape {y.shape}, expected ({dim},)")
        return y

    if r >= dim:
        dense = np.column_stack([apply(e) for e in np.eye(dim)])
        values, vectors = np.linalg.eigh(0.5 * (dense + dense.T))
    else:
        operator = LinearOperator((dim, dim), matvec=apply, dtype=np.float64)
        v0 = np.random.default_rng(seed).standard_normal(dim)
        try:
            values, vectors = eigsh(operator, k=r, which=which, v0=v0, tol=tol, maxiter=maxiter, ncv=ncv)
        except ArpackNoConvergence as err:
            raise RuntimeError(f"eigsh found {len(err.eigenvalues)} of {r} eigenpairs within maxiter={maxiter}; "
                               f"raise tol (now {tol}; float32 HVPs need about 1e-4), maxiter or ncv") from err
    key = {"LA": -values, "SA": values, "LM": -np.abs(values), "SM": np.abs(values)}[which]
    order = np.argsort(key, kind="stable")[:r]
    return values[order], vectors[:, order]


def lanczos_ritz(matvec: Callable[[np.ndarray], np.ndarray], dim: int, steps: int, seed: int = 0) -> np.ndarray:
    """The Ritz values (ascending) of ``steps`` Lanczos iterations on a symmetric operator given by its products
    (``matvec``: float64 numpy vector of shape ``(dim,)`` -> the same), from a seeded Gaussian start, with full
    reorthogonalisation. Each Ritz value is a Rayleigh quotient ``v^T H v / v^T v`` of some ``v``, so the smallest
    lies at or above ``lambda_min(H)`` and the largest at or below ``lambda_max(H)``: a negative smallest Ritz value
    *proves* that ``H`` is indefinite, at the cost of ``steps`` products (far fewer than a converged eigsh).
    With ``steps >= dim`` they are ``H``'s eigenvalues. Introduced in ``03_perturbation_theory``."""
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    steps = min(int(steps), int(dim))
    q = np.random.default_rng(seed).standard_normal(dim)
    basis = [q / np.linalg.norm(q)]
    alphas, betas = [], []
    for j in range(steps):
        w = np.asarray(matvec(basis[j]), dtype=np.float64).reshape(-1)
        if isinstance(w, torch.Tensor):
            w = w.detach().double().cpu().numpy()
        alphas.append(float(basis[j] @ w))
        for b in basis:  # full reorthogonalisation: the basis stays orthonormal in floating point
            w = w - (b @ w) * b
        beta = float(np.linalg.norm(w))
        if j == steps - 1 or beta < 1e-12:
            break
        betas.append(beta)
        basis.append(w / beta)
    k = len(alphas)
    tridiagonal = np.diag(alphas) + np.diag(betas[:k - 1], 1) + np.diag(betas[:k - 1], -1)
    return np.linalg.eigvalsh(tridiagonal)


def _as_matrix(x, dtype: torch.dtype, device) -> torch.Tensor:
    out = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    return out.to(dtype=dtype, device=device)


def quadratic_form(hvp_fn: Callable[[Vector], Vector], vector: Vector) -> float:
    """``v^T H v`` with one product."""
    return float((hvp_fn(vector).double().cpu() * vector.double().cpu()).sum())


def captured_share(delta: Vector, eigvecs, hvp_fn: Callable[[Vector], Vector], r_max: int | None = None,
                   n_random: int = 10, seed: int = 0) -> pd.DataFrame:
    """The share of the second-order damage ``1/2 delta^T H delta`` carried by the projection of ``delta``
    onto the span of the first ``r`` columns of ``eigvecs``, for ``r = 1..r_max``, against random
    ``r``-dimensional subspaces of the same coordinates.

    share(r) = ``(P_r delta)^T H (P_r delta) / delta^T H delta`` with ``P_r = U_r U_r^T`` (columns
    orthonormalised first). ``delta``: shape ``(dim,)``; ``eigvecs``: ``(dim, R)`` (numpy or torch);
    ``hvp_fn``: torch vector -> ``H`` times it (e.g. a :class:`HessianOperator`). Random subspaces: the
    leading ``r`` columns of the QR factor of a seeded Gaussian ``(dim, r_max)`` matrix, ``n_random``
    draws. Costs ``(1 + n_random) * r_max + 1`` products. A share can leave ``[0, 1]`` when ``H`` is
    indefinite. Columns: ``r``, ``top``, ``random_mean``, ``random_std``, ``random_min``, ``random_max``.
    Introduced in ``03_perturbation_theory``.
    """
    if delta.dim() != 1:
        raise ValueError(f"delta must be a vector, got shape {tuple(delta.shape)}")
    return captured_shares({"delta": delta}, eigvecs, hvp_fn, r_max=r_max, n_random=n_random, seed=seed)["delta"]


def captured_shares(deltas: Mapping[str, Vector], eigvecs, hvp_fn: Callable[[Vector], Vector],
                    r_max: int | None = None, n_random: int = 10, seed: int = 0,
                    random_last_only: bool = False) -> dict[str, pd.DataFrame]:
    """:func:`captured_share` for several displacements at once, by name: the products with the top and
    random bases are shared, so the cost is ``(1 + n_random) * r_max + len(deltas)`` products. Each table
    equals what :func:`captured_share` gives for that displacement alone (same seed, same subspaces).
    ``random_last_only``: evaluate the random subspaces at ``r = r_max`` only (the rank a check judges), one
    product per draw and displacement instead of ``r_max`` per draw: ``r_max + n_random * len(deltas) +
    len(deltas)`` products; the random columns are NaN at the other ranks, and at ``r_max`` equal the full
    computation's (the same seeded subspaces)."""
    if not deltas:
        raise ValueError("deltas is empty")
    for name, delta in deltas.items():
        if delta.dim() != 1:
            raise ValueError(f"delta {name!r} must be a vector, got shape {tuple(delta.shape)}")
    first = next(iter(deltas.values()))
    dim = first.shape[0]
    if any(d.shape != (dim,) for d in deltas.values()):
        raise ValueError("every delta must have the same shape")
    basis = _as_matrix(eigvecs, torch.float64, "cpu")
    if basis.dim() == 1:
        basis = basis[:, None]
    if basis.shape[0] != dim:
        raise ValueError(f"eigvecs must have shape ({dim}, R), got {tuple(basis.shape)}")
    r_max = basis.shape[1] if r_max is None else r_max
    if not 1 <= r_max <= basis.shape[1]:
        raise ValueError(f"r_max must be in 1..{basis.shape[1]}, got {r_max}")
    if n_random < 0:
        raise ValueError(f"n_random must be >= 0, got {n_random}")
    totals = {}
    for name, delta in deltas.items():
        totals[name] = quadratic_form(hvp_fn, delta)
        if totals[name] == 0:
            raise ValueError(f"delta^T H delta is 0 for {name!r}: there is no second-order damage to share out")
    dtype, device = first.dtype, first.device

    def gram_of(q: torch.Tensor) -> torch.Tensor:
        # nested subspaces: one product per column, then every r from the leading blocks
        hq = torch.stack([hvp_fn(q[:, j].to(dtype=dtype, device=device)).double().cpu() for j in range(r_max)], 1)
        gram = q.T @ hq
        return 0.5 * (gram + gram.T)

    def shares(q: torch.Tensor, gram: torch.Tensor, name: str) -> np.ndarray:
        c = q.T @ deltas[name].double().cpu()
        return np.array([float(c[:r] @ gram[:r, :r] @ c[:r]) / totals[name] for r in range(1, r_max + 1)])

    def last_share(q: torch.Tensor, name: str) -> np.ndarray:
        projected = q @ (q.T @ deltas[name].double().cpu())
        out = np.full(r_max, np.nan)
        out[-1] = quadratic_form(lambda v: hvp_fn(v.to(dtype=dtype, device=device)), projected) / totals[name]
        return out

    q_top, _ = torch.linalg.qr(basis[:, :r_max])
    gram_top = gram_of(q_top)
    gen = torch.Generator().manual_seed(seed)
    randoms = []
    for _ in range(n_random):
        q = torch.linalg.qr(torch.randn(dim, r_max, generator=gen, dtype=torch.float64))[0]
        randoms.append((q, None if random_last_only else gram_of(q)))
    out = {}
    for name in deltas:
        random = np.array([last_share(q, name) if g is None else shares(q, g, name)
                           for q, g in randoms]).reshape(n_random, r_max)
        stats = {"random_mean": random.mean(0),
                 "random_std": random.std(0, ddof=1) if n_random > 1 else np.full(r_max, np.nan),
                 "random_min": random.min(0), "random_max": random.max(0)} if n_random else \
            {k: np.full(r_max, np.nan) for k in ("random_mean", "random_std", "random_min", "random_max")}
        out[name] = pd.DataFrame({"r": np.arange(1, r_max + 1), "top": shares(q_top, gram_top, name), **stats})
    return out


# --------------------------------------------------------------------------------------------------
# Refresh contraction
# --------------------------------------------------------------------------------------------------
Projector = Callable[[Vector], Vector]


def as_projector(projector, dim: int) -> Projector:
    """A projector ``P`` on vectors of shape ``(dim,)`` from: a callable (used as is); a bool mask of
    shape ``(dim,)`` (coordinate projector); or a basis matrix ``(dim, k)`` (orthonormalised; ``U U^T``)."""
    if callable(projector) and not isinstance(projector, (torch.Tensor, np.ndarray)):
        return projector
    matrix = torch.as_tensor(projector)
    if matrix.dtype == torch.bool:
        if matrix.shape != (dim,):
            raise ValueError(f"a mask projector must have shape ({dim},), got {tuple(matrix.shape)}")
        return lambda v: v * matrix.to(device=v.device, dtype=v.dtype)
    if matrix.dim() == 1:
        matrix = matrix[:, None]
    if matrix.dim() != 2 or matrix.shape[0] != dim:
        raise ValueError(f"a basis projector must have shape ({dim}, k), got {tuple(matrix.shape)}")
    q, _ = torch.linalg.qr(matrix.to(torch.float64))

    def project(v: Vector) -> Vector:
        qq = q.to(device=v.device, dtype=v.dtype)
        return qq @ (qq.T @ v)
    return project


def gd_refresh(loss_fn: LossFn, model: torch.nn.Module, space: ParameterSpace, theta_start: Vector,
               theta_ref: Vector, projector, alpha: float, steps: int) -> pd.DataFrame:
    """Plain gradient descent ``theta_{t+1} = theta_t - alpha g(theta_t)`` on ``loss_fn`` from
    ``theta_start`` (the damaged point ``theta_A* + delta_B``), tracking the harmful component.

    ``projector``: see :func:`as_projector` (callable, bool mask or basis of ``S``). Rows ``step = 0..steps``
    with ``loss``, ``distance_s = ||P_S(theta_t - theta_ref)||`` and ``distance = ||theta_t - theta_ref||``.
    Only the space's coordinates move; the model's weights are restored afterwards. This is the
    theorem's idealised refresh, not the RL refresh of notebook 05. Introduced in ``03_perturbation_theory``.
    """
    space._check_vector(theta_start)
    space._check_vector(theta_ref)
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    project = as_projector(projector, space.dim)
    theta = theta_start.clone()
    ref = theta_ref.to(theta)
    rows = []
    saved = space.get(model)
    try:
        for step in range(steps + 1):
            space.set(model, theta)
            diff = theta - ref
            row = {"step": step, "distance_s": float(project(diff).norm()), "distance": float(diff.norm())}
            if step < steps:
                params = space.parameters(model)
                with _requiring_grad(params):
                    loss = _scalar_loss(loss_fn, model)
                    grads = torch.autograd.grad(loss, params, allow_unused=True)
                row["loss"] = float(loss.detach())
                theta = theta - alpha * space.flatten([None if g is None else g.detach() for g in grads])
            else:
                row["loss"] = loss_value(loss_fn, model)
            rows.append(row)
    finally:
        space.set(model, saved)
    return pd.DataFrame(rows, columns=["step", "loss", "distance_s", "distance"])


def contraction_bound(mu: float, alpha: float, t, x0: float):
    """The refresh theorem's bound ``|1 - alpha mu|^t x0`` on ``||P_S(theta_t - theta_A*)||`` (equal to
    the paper's ``(1 - alpha mu)^t x0`` for ``alpha mu <= 1``). ``t``: int or array of steps.
    Introduced in ``03_perturbation_theory``."""
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    t_arr = np.asarray(t, dtype=np.float64)
    if np.any(t_arr < 0):
        raise ValueError("t must be >= 0")
    out = np.abs(1.0 - alpha * mu) ** t_arr * x0
    return float(out) if np.ndim(out) == 0 else out


def steps_to_bound(alpha: float, mu: float, bound: float, max_steps: int) -> int:
    """The fewest plain-GD steps ``t`` with ``|1 - alpha mu|^t <= bound`` (``max_steps`` when the factor is not
    below 1, or when more would be needed). Introduced in ``03_perturbation_theory`` (the ladder)."""
    factor = abs(1.0 - alpha * mu)
    if not 0 < bound < 1:
        raise ValueError(f"bound must be in (0, 1), got {bound}")
    if factor == 0:
        return 1
    if factor >= 1:
        return max_steps
    return min(max_steps, math.ceil(math.log(bound) / math.log(factor) - 1e-12))


def curvature_on_subspace(hvp_fn: Callable[[Vector], Vector], basis) -> np.ndarray:
    """Eigenvalues (ascending) of ``H`` restricted to ``S = span(basis)``: those of the Rayleigh-Ritz
    matrix ``Q^T H Q`` with ``Q`` an orthonormal basis of ``S`` (``k`` products for ``basis`` of shape
    ``(dim, k)``). The first is ``mu``, the curvature on ``S`` in the refresh theorem."""
    matrix = torch.as_tensor(np.asarray(basis) if not isinstance(basis, torch.Tensor) else basis).to(torch.float64)
    if matrix.dim() == 1:
        matrix = matrix[:, None]
    q, _ = torch.linalg.qr(matrix.cpu())
    hq = torch.stack([hvp_fn(q[:, j]).double().cpu() for j in range(q.shape[1])], 1)
    ritz = q.T @ hq
    return np.linalg.eigvalsh(0.5 * (ritz + ritz.T).numpy())


def smallest_curvature(operator: HessianOperator, seed: int = 0, **eigsh_kwargs) -> float:
    """``mu``: the smallest eigenvalue of ``P H P`` on the operator's (masked) space, by eigsh
    ``which="SA"``. Use when ``S`` is a coordinate set; :func:`curvature_on_subspace` for a basis."""
    values, _ = top_eigenpairs(operator.numpy_matvec, operator.dim, 1, which="SA", seed=seed, **eigsh_kwargs)
    return float(values[0])


def gd_trajectory(loss_fn: LossFn, model: torch.nn.Module, space: ParameterSpace, theta_start: Vector,
                  alpha: float, steps: int) -> list[Vector]:
    """The points ``theta_0 = theta_start, ..., theta_steps`` of plain gradient descent
    ``theta_{t+1} = theta_t - alpha g(theta_t)`` on ``loss_fn`` (each of shape ``(dim,)``), for distances
    between two refresh paths (e.g. from the damaged point and from ``theta_A*`` itself, whose difference
    is the perturbation the theorem contracts). Only the space's coordinates move; the model's weights are
    restored afterwards. Holds ``steps + 1`` vectors. Introduced in ``03_perturbation_theory``."""
    space._check_vector(theta_start)
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    path = [theta_start.clone()]
    with restored_afterwards(model, space):
        for _ in range(steps):
            space.set(model, path[-1])
            path.append(path[-1] - alpha * gradient(loss_fn, model, space).to(path[-1]))
    return path


# --------------------------------------------------------------------------------------------------
# Premises of the theory checks (C5, C6's theorem)
# --------------------------------------------------------------------------------------------------
# Each measures one premise of the Taylor picture or of the contraction theorem from numbers the cached
# analyses hold, and returns a premise dict (:func:`mdrl_lib.claims.record.premise`): name, value, threshold,
# holds. The thresholds come from the rules file ([premises] ``theory_*``); a check passes them in.


def _premise(name: str, value, threshold, holds: bool) -> dict:
    from mdrl_lib.claims.record import premise

    return premise(name, value, threshold, bool(holds))


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator > 0 else math.inf


def drift_ratio(grad_s_norm: float, mu: float, delta_s_norm: float) -> float:
    """``||P_S g_A|| / (mu ||P_S delta_B||)``: what one gradient step from theta_A* moves on S by drift
    (``alpha ||P_S g_A||``) against what it removes of the damage on S by contraction (at least
    ``alpha mu ||P_S delta_B||``); alpha cancels. ``inf`` when ``mu <= 0`` or ``delta_B`` has no part on S.
    Also the distance from theta_A* to L_A's stationary point on S in units of ``||P_S delta_B||`` (for a
    quadratic with curvature >= mu on S). Introduced in ``03_perturbation_theory``."""
    return _ratio(grad_s_norm, mu * delta_s_norm) if mu > 0 else math.inf


def stationarity_premises(grad_norm: float, grad_s_norm: float, h_delta_norm: float, mu: float,
                          delta_s_norm: float, *, max_ratio: float) -> list[dict]:
    """Two premises that theta_A* is stationary for L_A, as the theorem assumes (``g_A = 0``):

    - total: ``||g_A|| / ||H_A delta_B||`` <= ``max_ratio``: the gradient at theta_A* against the restoring
      force of the displacement (the gradient's change over ``delta_B``, to first order); both are gradients,
      so the ratio is dimensionless;
    - on S: :func:`drift_ratio` <= ``max_ratio``.

    Inputs: norms of ``g_A = grad L_A(theta_A*)`` (all coordinates) and of ``P_S g_A``; ``||H_A delta_B||``;
    ``mu``, the smallest curvature on S; ``||P_S delta_B||``. Introduced in ``03_perturbation_theory``."""
    total = _ratio(grad_norm, h_delta_norm)
    on_s = drift_ratio(grad_s_norm, mu, delta_s_norm)
    return [_premise("stationarity (total): ‖g_A‖ / ‖H_A δ_B‖", total, max_ratio, total <= max_ratio),
            _premise("stationarity on S: one-step drift α‖P_S g_A‖ / contraction α μ ‖P_S δ_B‖", on_s, max_ratio,
                     on_s <= max_ratio)]


def locality_error(segment: pd.DataFrame, along: pd.DataFrame | None = None) -> dict:
    """How far the quadratic (Taylor) model of L_A at theta_A* is off along B's displacement.

    ``segment``: :func:`taylor_terms` along theta_A* + t delta_B (its last row, ``t = 1``, is judged:
    ``|predicted - measured| / |measured|``); ``along`` (optional): the same terms at the checkpoints B's stage
    kept (:class:`TaylorAlong`: columns ``step``, ``measured``, ``predicted``); each checkpoint's error is
    taken relative to the largest measured change along the path, ``|predicted_k - measured_k| / max_j
    |measured_j|``, so that a checkpoint where the change passes through zero does not count as infinitely
    wrong. Returns ``{"t1": float, "along": float (nan without along), "worst": the larger}``.
    Introduced in ``03_perturbation_theory``."""
    for name, table, columns in (("segment", segment, {"measured", "predicted"}),
                                 ("along", along, {"step", "measured", "predicted"})):
        if table is not None and not columns <= set(table.columns):
            raise KeyError(f"{name} lacks column(s) {sorted(columns - set(table.columns))}")
    last = segment.iloc[-1]
    t1 = _ratio(abs(float(last["predicted"]) - float(last["measured"])), abs(float(last["measured"])))
    path = math.nan
    if along is not None:
        moved = along[along["step"] > 0]
        scale = float(moved["measured"].abs().max()) if len(moved) else 0.0
        path = _ratio(float((moved["predicted"] - moved["measured"]).abs().max()), scale) if len(moved) else math.nan
    worst = max(t1, path) if not math.isnan(path) else t1
    return {"t1": t1, "along": path, "worst": worst}


def locality_premise(segment: pd.DataFrame, along: pd.DataFrame | None = None, *, rtol: float) -> dict:
    """Premise "locality": the quadratic model at theta_A* is within ``rtol`` of the measured change of L_A at
    ``t = 1`` of the segment and at every checkpoint of B's stage (:func:`locality_error`'s ``worst``).
    Introduced in ``03_perturbation_theory``."""
    worst = locality_error(segment, along)["worst"]
    return _premise("locality: quadratic model's error at t = 1 and at B's checkpoints", worst, rtol, worst <= rtol)


def curvature_premise(mu: float, *, minimum: float = 0.0) -> dict:
    """Premise "curvature on S": ``mu = lambda_min(P_S H_A P_S) > minimum`` (the theorem needs ``mu > 0``; a
    negative ``mu`` means H_A is indefinite on S). Introduced in ``03_perturbation_theory``."""
    return _premise("curvature on S: μ = λ_min(P_S H_A P_S) > threshold", float(mu), minimum, mu > minimum)


def backflow_ratio(backflow: float, curvature_term: float) -> float:
    """``||P_S H_A (I - P_S) delta|| / ||P_S H_A P_S delta||``: the pull that the displacement off S exerts on S
    through H_A (zero when S is invariant under H_A) against the curvature term the theorem keeps."""
    return _ratio(backflow, curvature_term)


def backflow_premise(backflow: float, curvature_term: float, *, max_ratio: float) -> dict:
    """Premise "weak back-flow": :func:`backflow_ratio` <= ``max_ratio``. Introduced in ``03_perturbation_theory``."""
    ratio = backflow_ratio(backflow, curvature_term)
    return _premise("weak back-flow: ‖P_S H_A (I − P_S) δ_B‖ / ‖P_S H_A P_S δ_B‖", ratio, max_ratio,
                    ratio <= max_ratio)


OPTIMIZERS = ("gd", "adam")
SCHEDULES = ("constant", "linear", "cosine")


def plain_gd_premise(optimizer: str, schedule: str, alpha_lambda_max: float, *, max_alpha_lambda: float = 1.0) -> dict:
    """Premise "plain GD": the refresh is plain gradient descent (``optimizer="gd"``, not ``"adam"``) at a
    constant rate (``schedule="constant"``) with ``alpha lambda_max(H_A) <= max_alpha_lambda`` (the theorem's
    ``alpha <= 1 / lambda_max``). Holds for notebook 03's GD refresh; fails for the kit's real refresh (Adam,
    decaying rate). Introduced in ``03_perturbation_theory``."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    holds = optimizer == "gd" and schedule == "constant" and alpha_lambda_max <= max_alpha_lambda
    value = f"{'plain GD' if optimizer == 'gd' else 'Adam'}, {schedule} rate, α λ_max = {alpha_lambda_max:.3g}"
    return _premise("plain GD at a constant rate with α λ_max <= threshold", value, max_alpha_lambda, holds)


def paired_damage(before: Sequence[float], after: Sequence[float]) -> dict:
    """A's held-out score before and after B's stage, paired over items (shape ``(n,)`` each, same items in
    the same order): ``drop`` = mean(before - after), ``se`` its paired standard error
    (sd(before - after) / sqrt(n)), ``standard_errors`` = drop / se (inf when every item moved by the same
    amount, 0 when nothing moved), ``n``. Introduced in ``03_perturbation_theory``."""
    b, a = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    if b.shape != a.shape or b.ndim != 1 or len(b) < 2:
        raise ValueError(f"before and after must be paired score vectors of one length >= 2, got {b.shape}, {a.shape}")
    diff = b - a
    drop, se = float(diff.mean()), float(diff.std(ddof=1) / math.sqrt(len(diff)))
    z = drop / se if se > 0 else (math.inf if drop > 0 else 0.0)
    return {"drop": drop, "se": se, "standard_errors": z, "n": len(diff)}


def damage_premise(before: Sequence[float], after: Sequence[float], *, min_standard_errors: float) -> dict:
    """Premise "damage": B's stage costs A at least ``min_standard_errors`` paired standard errors of A's
    held-out score (:func:`paired_damage`): without damage there is nothing for the theory to explain.
    Introduced in ``03_perturbation_theory``."""
    z = paired_damage(before, after)["standard_errors"]
    return _premise("damage: A's held-out drop over B's stage, in paired standard errors", z, min_standard_errors,
                    z >= min_standard_errors)


def objective_tracking(losses: Sequence[float], scores: Sequence[float]) -> dict:
    """Does L_A track A's held-out score along a path (B's checkpoints)? ``losses``, ``scores``: shape ``(k,)``,
    L_A and the score at each checkpoint in order. Returns ``rank_correlation`` (Spearman's rho of L_A and the
    score: a valid loss has rho near -1), ``p_value`` (one-sided, that rho < 0), ``sign_agreement`` (the share
    of consecutive segments where both moved and in opposite directions, loss up and score down or the reverse;
    segments where either did not move are left out), ``segments`` (how many were counted) and ``k``.
    Introduced in ``03_perturbation_theory``."""
    from scipy.stats import spearmanr

    loss, score = np.asarray(losses, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    if loss.shape != score.shape or loss.ndim != 1 or len(loss) < 3:
        raise ValueError(f"losses and scores must be vectors of one length >= 3, got {loss.shape}, {score.shape}")
    if np.ptp(loss) == 0 or np.ptp(score) == 0:
        rho, p = math.nan, 1.0
    else:
        result = spearmanr(loss, score, alternative="less")
        rho, p = float(result.statistic), float(result.pvalue)
    dl, ds = np.diff(loss), np.diff(score)
    moved = (dl != 0) & (ds != 0)
    agree = float((np.sign(dl[moved]) != np.sign(ds[moved])).mean()) if moved.any() else math.nan
    return {"rank_correlation": rho, "p_value": p, "sign_agreement": agree, "segments": int(moved.sum()),
            "k": len(loss)}


def objective_premises(losses: Sequence[float], scores: Sequence[float], *, alpha: float,
                       min_sign_agreement: float) -> list[dict]:
    """Premises "objective valid": along B's checkpoints L_A and A's held-out score are rank-correlated
    negatively (one-sided Spearman p <= ``alpha``), and their changes have opposite signs in more than
    ``min_sign_agreement`` of the segments (:func:`objective_tracking`). Introduced in ``03_perturbation_theory``."""
    t = objective_tracking(losses, scores)
    agree = t["sign_agreement"]
    return [_premise(f"objective valid: L_A and A's score rank-correlated negatively along B's stage (one-sided "
                     f"Spearman p; rho = {t['rank_correlation']:.2f})", t["p_value"], alpha, t["p_value"] <= alpha),
            _premise("objective valid: share of B's segments where L_A and A's score move in opposite directions",
                     agree, min_sign_agreement, (not math.isnan(agree)) and agree > min_sign_agreement)]


def first_order_segments(gradient_a: Vector, points: Sequence[Vector]) -> pd.DataFrame:
    """The first-order term ``g_A^T delta_B`` split over the segments of B's path: ``points`` are theta_0 =
    theta_A*, theta_1, ..., theta_K (each shape ``(dim,)``, e.g. B's saved checkpoints) and ``gradient_a`` =
    ``g_A(theta_A*)``. Rows ``k = 1..K``: ``first_order_segment = g_A . (theta_k - theta_{k-1})``,
    ``segment_norm``, ``cosine`` (of the segment with g_A) and ``first_order`` (cumulative: at the last row it is
    ``g_A^T (theta_K - theta_A*)``). Since B's steps are ``-eta`` times B's (Adam-scaled) gradients, a small
    cosine means B moves nearly orthogonally to g_A: the link between C3's gradient cosines and C5's first-order
    term. Introduced in ``03_perturbation_theory``."""
    if len(points) < 2:
        raise ValueError("points needs theta_A* and at least one later point")
    g = gradient_a.double()
    g_norm = float(g.norm())
    rows, total = [], 0.0
    for k in range(1, len(points)):
        seg = (points[k] - points[k - 1]).double()
        dot, norm = float(g @ seg), float(seg.norm())
        total += dot
        rows.append({"k": k, "first_order_segment": dot, "segment_norm": norm,
                     "cosine": dot / (g_norm * norm) if g_norm > 0 and norm > 0 else 0.0, "first_order": total})
    return pd.DataFrame(rows)

# --------------------------------------------------------------------------------------------------
# Notebook 03's analyses as cached artifacts
# --------------------------------------------------------------------------------------------------
# Each spec reads A's expert theta_A* (the source of L_A's objective batch) and writes its result as
# JSON or npz; ``kit.open(spec)`` reads it back. The notebook then only reads: a rerun with the store
# built takes seconds. The builds run the same calls the notebook made, in the same order, so their
# numbers are the ones the notebook computed itself.

TABLE_FILE = "table.json"
RESULT_FILE = "result.json"
EIGENPAIRS_FILE = "eigenpairs.npz"


def write_table(path, frame: pd.DataFrame) -> None:
    """``frame`` (index dropped) as JSON columns and rows; floats round-trip exactly."""
    split = frame.to_dict("split")
    path.write_text(json.dumps({"columns": split["columns"], "data": split["data"]}))


def read_table(path) -> pd.DataFrame:
    """The table :func:`write_table` wrote."""
    stored = json.loads(path.read_text())
    return pd.DataFrame(stored["data"], columns=stored["columns"])


@dataclass(frozen=True, eq=False)
class LoadedExpert:
    """A's expert theta_A* loaded for analysis (notebook ``03_perturbation_theory``): ``model`` (fp32, eager
    attention, eval mode), ``objective`` (L_A, a :class:`~mdrl_lib.objectives.DomainObjective`), ``space`` (every
    parameter) and ``theta`` = theta_A*, shape ``(space.dim,)``."""

    model: torch.nn.Module
    objective: object
    space: ParameterSpace
    theta: Vector

    @property
    def loss(self) -> LossFn:
        return self.objective.loss


def load_expert(kit: Kit, objective: Spec) -> LoadedExpert:
    """The source model of the :class:`~mdrl_lib.specs.ObjectiveBatch` ``objective`` (A's expert) with L_A."""
    model, _ = kit.load(objective.source, placement="analysis")
    space = ParameterSpace.from_model(model)
    return LoadedExpert(model=model, objective=kit.objective(objective), space=space, theta=space.get(model))


def weights_vector(kit: Kit, space: ParameterSpace, source) -> Vector:
    """A stored model's weights as an fp32 vector of ``space``, shape ``(space.dim,)``: ``source`` is a spec
    or a safetensors file (a checkpoint along a stage, :meth:`~mdrl_lib.kit.Kit.checkpoints_along`)."""
    from safetensors.torch import load_file

    tensors = load_file(str(source)) if isinstance(source, (str, Path)) else dict(kit.weights(source))
    return space.flatten([tensors[name].float() for name in space.names])


def _objective_spec(spec: Spec) -> Spec:
    if getattr(spec, "kind", "") != "objective":
        raise ConfigError(f"expected an ObjectiveBatch spec (L_A), got {spec!r}")
    return spec


@dataclass(frozen=True)
class HvpCheck(Spec):
    """:func:`hvp_check` of L_A at theta_A* (the ``objective``'s source) for each finite-difference step in
    ``eps``, along one seeded random unit vector. Opens as a table: one row per ``eps`` (``eps = 0.1``...),
    columns ``relative_error``, ``hvp_norm``, ``fd_norm``, ``cosine``. Introduced in ``03_perturbation_theory``."""

    objective: Spec
    eps: tuple[float, ...] = (1e-1, 1e-2)
    seed: int = 0
    kind: ClassVar[str] = "hvp-check"

    def __post_init__(self) -> None:
        _objective_spec(self.objective)
        object.__setattr__(self, "eps", tuple(float(e) for e in self.eps))
        if not self.eps or any(not e > 0 for e in self.eps):
            raise ConfigError(f"hvp-check eps: expected positive steps, got {self.eps!r}")

    def inputs(self) -> tuple[Spec, ...]:
        return (self.objective,)

    def key_fields(self, kit: Kit) -> dict:
        return {"objective": kit.key(self.objective), "eps": list(self.eps), "seed": self.seed}

    def build(self, kit: Kit, directory: Path, progress: bool) -> dict:
        expert = load_expert(kit, self.objective)
        rows = [{"eps": eps, **hvp_check(expert.loss, expert.model, expert.space, eps=eps, seed=self.seed)}
                for eps in self.eps]
        write_table(directory / TABLE_FILE, pd.DataFrame(rows))
        return {"relative_error": [row["relative_error"] for row in rows]}

    def open(self, kit: Kit, artifact: Artifact) -> pd.DataFrame:
        table = read_table(artifact.path / TABLE_FILE)
        return table.set_index(table["eps"].map(lambda e: f"eps = {e:g}")).drop(columns="eps").rename_axis(None)

    def label(self) -> str:
        return f"HVP check of L_{self.objective.domain} at {self.objective.source.label()}"

    def toy_seconds(self, config) -> float:
        return 3.0


@dataclass(frozen=True)
class TaylorSegment(Spec):
    """:func:`taylor_terms` of L_A along theta_A* + t delta_B, ``t = 1/points, 2/points, ..., 1``, on a float64
    copy of the model: theta_A* is the ``objective``'s source, delta_B = ``stage``'s weights - theta_A*.
    Opens as :func:`taylor_terms`'s table. Introduced in ``03_perturbation_theory``."""

    stage: Spec
    objective: Spec
    points: int = 4
    kind: ClassVar[str] = "taylor-segment"

    def __post_init__(self) -> None:
        _objective_spec(self.objective)
        if isinstance(self.points, bool) or not isinstance(self.points, int) or self.points < 1:
            raise ConfigError(f"taylor-segment points: expected a positive integer, got {self.points!r}")

    def inputs(self) -> tuple[Spec, ...]:
        return (self.objective, self.stage)

    def key_fields(self, kit: Kit) -> dict:
        return {"objective": kit.key(self.objective), "stage": kit.key(self.stage), "points": self.points,
                "dtype": "float64"}

    def build(self, kit: Kit, directory: Path, progress: bool) -> dict:
        expert = load_expert(kit, self.objective)
        delta = weights_vector(kit, expert.space, self.stage) - expert.theta
        ts = np.linspace(1 / self.points, 1, self.points)
        model64, theta64 = expert.model.double(), expert.theta.double()
        table = taylor_terms(expert.loss, model64, expert.space, theta64, delta.double(), ts)
        write_table(directory / TABLE_FILE, table)
        return {"at_t1": table.iloc[-1].to_dict()}

    def open(self, kit: Kit, artifact: Artifact) -> pd.DataFrame:
        return read_table(artifact.path / TABLE_FILE)

    def label(self) -> str:
        return f"Taylor terms of L_{self.objective.domain} towards {self.stage.label()}"

    def toy_seconds(self, config) -> float:
        return 1.5 + 0.3 * self.points


@dataclass(frozen=True)
class TaylorAlong(Spec):
    """The Taylor terms of L_A at the checkpoints ``stage`` kept along its way (``save_every``): for each, with
    delta = its weights - theta_A*, the measured change of L_A against ``g_A^T delta`` and
    ``1/2 delta^T H_A delta`` (one gradient and one Hessian operator at theta_A*, one product per
    checkpoint), on a float64 copy of the model. Opens as a table: ``step``, ``first_order``,
    ``second_order``, ``measured``, ``predicted``, ``relative_error``. Introduced in ``03_perturbation_theory``."""

    stage: Spec
    objective: Spec
    kind: ClassVar[str] = "taylor-along"

    def __post_init__(self) -> None:
        _objective_spec(self.objective)
        if not getattr(self.stage, "save_every", 0):
            raise ConfigError(f"taylor-along: {self.stage.label()} keeps no checkpoints along the way "
                              f"(save_every = 0)")

    def inputs(self) -> tuple[Spec, ...]:
        return (self.objective, self.stage)

    def key_fields(self, kit: Kit) -> dict:
        return {"objective": kit.key(self.objective), "stage": kit.key(self.stage), "dtype": "float64"}

    def build(self, kit: Kit, directory: Path, progress: bool) -> dict:
        expert = load_expert(kit, self.objective)
        loss, space, theta = expert.loss, expert.space, expert.theta
        model64, theta64 = expert.model.double(), expert.theta.double()
        g64, op64 = gradient(loss, model64, space), hessian_operator(loss, model64, space)
        rows, displacements = [], []
        for step, path in kit.checkpoints_along(self.stage):
            d = (weights_vector(kit, space, path) - theta).double()
            displacements.append(d)
            rows.append({"step": step, "first_order": float(g64 @ d), "second_order": 0.5 * float(d @ op64(d))})
        op64.release()
        base = loss_value(loss, model64)
        for row, d in zip(rows, displacements):
            with displaced(model64, space, theta64 + d):
                row["measured"] = loss_value(loss, model64) - base
        table = pd.DataFrame(rows).assign(predicted=lambda t: t["first_order"] + t["second_order"],
                                          relative_error=lambda t: (t["predicted"] - t["measured"]).abs()
                                          / t["measured"].abs())
        write_table(directory / TABLE_FILE, table)
        return {"checkpoints": len(rows)}

    def open(self, kit: Kit, artifact: Artifact) -> pd.DataFrame:
        return read_table(artifact.path / TABLE_FILE)

    def label(self) -> str:
        return f"Taylor terms of L_{self.objective.domain} along {self.stage.label()}"

    def toy_seconds(self, config) -> float:
        steps = self.stage.steps if self.stage.steps is not None else config.rl.steps
        return 3.0 + 0.8 * (steps // self.stage.save_every + 1)


@dataclass(frozen=True)
class ConflictRoutes(Spec):
    """The routes A and B use at ``source`` (theta_A*): each domain's top ``fraction`` of MLP channels by mean
    activity at answer positions over its first ``prompts`` RL training prompts (notebook ``02_shared_routes``'s
    active routes), and the channels both use. Opens as ``{domain_a: set, domain_b: set, "shared": set}`` of
    (layer, channel) pairs. Introduced in ``03_perturbation_theory`` (the conflict subspace's search space)."""

    source: Spec
    domain_a: str
    domain_b: str
    fraction: float = 0.2
    prompts: int = 100
    kind: ClassVar[str] = "conflict-routes"

    def __post_init__(self) -> None:
        from mdrl_lib.specs import check_domain

        object.__setattr__(self, "domain_a", check_domain(self.domain_a))
        object.__setattr__(self, "domain_b", check_domain(self.domain_b))
        if self.domain_a == self.domain_b:
            raise ConfigError(f"conflict-routes: A and B must differ, got {self.domain_a!r} twice")
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"conflict-routes fraction: expected a fraction in (0, 1], got {self.fraction!r}")
        if isinstance(self.prompts, bool) or not isinstance(self.prompts, int) or self.prompts < 1:
            raise ConfigError(f"conflict-routes prompts: expected a positive integer, got {self.prompts!r}")

    def inputs(self) -> tuple[Spec, ...]:
        return (self.source,)

    def key_fields(self, kit: Kit) -> dict:
        return {"source": kit.key(self.source), "domains": [self.domain_a, self.domain_b],
                "fraction": self.fraction, "prompts": self.prompts, "positions": "answer"}

    def build(self, kit: Kit, directory: Path, progress: bool) -> dict:
        from mdrl_lib import routes

        model, tokenizer = kit.load(self.source, placement="analysis")
        found = {}
        for domain in (self.domain_a, self.domain_b):
            examples = kit.splits(domain).train[:self.prompts]
            activity = routes.route_activity(model, tokenizer, [e.prompt for e in examples],
                                             [e.answer for e in examples], positions="answer")
            found[domain] = routes.active_routes(activity.channels, self.fraction)
        shared = found[self.domain_a] & found[self.domain_b]
        if not shared:
            raise ValueError(f"{self.domain_a} and {self.domain_b} share no channel in the top {self.fraction:.0%}; "
                             f"raise conflict_route_fraction")
        found["shared"] = shared
        (directory / RESULT_FILE).write_text(json.dumps({name: sorted(map(list, channels))
                                                         for name, channels in found.items()}))
        return {name: len(channels) for name, channels in found.items()}

    def open(self, kit: Kit, artifact: Artifact) -> dict[str, set]:
        stored = json.loads((artifact.path / RESULT_FILE).read_text())
        return {name: {(layer, int(channel)) for layer, channel in channels} for name, channels in stored.items()}

    def label(self) -> str:
        return f"routes of {self.domain_a} and {self.domain_b} at {self.source.label()}"

    def toy_seconds(self, config) -> float:
        return 1.0


@dataclass(frozen=True, eq=False)
class RouteEigenpairs:
    """What a :class:`ConflictEigenpairs` artifact holds: the top ``values`` (shape ``(R,)``, descending) and
    ``vectors`` (``(m, R)``) of H_A restricted to the shared-route coordinates, at positions ``index``
    (``(m,)``) of the full parameter vector; ``hvps``: the products Lanczos used."""

    values: np.ndarray
    vectors: np.ndarray
    index: torch.Tensor
    hvps: int

    @property
    def dim(self) -> int:
        """m, the number of shared-route coordinates."""
        return int(self.index.numel())

    def restricted(self, space: ParameterSpace) -> ParameterSpace:
        """``space`` (the full one) restricted to these coordinates."""
        mask = torch.zeros(space.numel, dtype=torch.bool)
        mask[self.index] = True
        return space.restrict(mask)

    def basis(self, dim: int) -> torch.Tensor:
        """The eigenvectors as vectors of the full space, zero off the routes, shape ``(dim, R)`` float64."""
        basis = torch.zeros(dim, self.vectors.shape[1], dtype=torch.float64)
        basis[self.index] = torch.as_tensor(self.vectors)
        return basis

    def projector(self, dim: int) -> Projector:
        """``P_S`` on full vectors (:func:`as_projector` of :meth:`basis`)."""
        return as_projector(self.basis(dim), dim)

    def mass(self, space: ParameterSpace, k: int = 3) -> pd.DataFrame:
        """The squared mass of the top ``k`` eigenvectors per weight matrix: one row per matrix, columns
        ``v1..vk`` (each column sums to 1)."""
        names = [name for name, _ in self.restricted(space).coordinate_names()]
        mass = pd.DataFrame(self.vectors[:, :k] ** 2, columns=[f"v{i + 1}" for i in range(k)]).assign(
            matrix=[n.removeprefix("model.").removesuffix(".weight") for n in names])
        return mass.groupby("matrix", sort=False).sum()


@dataclass(frozen=True)
class ConflictEigenpairs(Spec):
    """The conflict subspace's candidates: the top-``rank`` eigenpairs of H_A (L_A = ``objective``, at its
    source theta_A*) restricted to the coordinates of the ``routes`` A and B share, by Lanczos
    (:func:`top_eigenpairs`, seeded start, relative accuracy ``tol``) on Hessian-vector products. Opens as a
    :class:`RouteEigenpairs`. Introduced in ``03_perturbation_theory``."""

    routes: ConflictRoutes
    objective: Spec
    rank: int = 16
    seed: int = 0
    tol: float = 1e-4
    kind: ClassVar[str] = "conflict-eigenpairs"

    def __post_init__(self) -> None:
        _objective_spec(self.objective)
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ConfigError(f"conflict-eigenpairs rank: expected a positive integer, got {self.rank!r}")

    def inputs(self) -> tuple[Spec, ...]:
        return (self.routes, self.objective)

    def key_fields(self, kit: Kit) -> dict:
        return {"routes": kit.key(self.routes), "objective": kit.key(self.objective), "rank": self.rank,
                "seed": self.seed, "tol": self.tol}

    def build(self, kit: Kit, directory: Path, progress: bool) -> dict:
        from mdrl_lib import routes

        shared = kit.open(self.routes)["shared"]
        expert = load_expert(kit, self.objective)
        sub = expert.space.restrict(routes.route_coordinate_mask(expert.model, shared))
        operator = hessian_operator(expert.loss, expert.model, sub)
        values, vectors = top_eigenpairs(operator.numpy_matvec, sub.dim, self.rank, tol=self.tol, seed=self.seed)
        operator.release()
        np.savez(directory / EIGENPAIRS_FILE, values=values, vectors=vectors, index=sub.index.numpy())
        return {"coordinates": sub.dim, "hvps": operator.calls, "eigenvalues": [float(v) for v in values]}

    def open(self, kit: Kit, artifact: Artifact) -> RouteEigenpairs:
        with np.load(artifact.path / EIGENPAIRS_FILE) as stored:
            return RouteEigenpairs(values=stored["values"], vectors=stored["vectors"],
                                   index=torch.as_tensor(stored["index"]), hvps=int(artifact.metrics["hvps"]))

    def label(self) -> str:
        return f"top-{self.rank} eigenpairs of H_{self.objective.domain} on the {self.routes.label()}"

    def toy_seconds(self, config) -> float:
        return 0.3 * (4 * self.rank)


@dataclass(frozen=True)
class CapturedShares(Spec):
    """For each of ``stages`` (delta = its weights - theta_A*): :func:`captured_shares` of delta on the
    shared-route coordinates against ``random`` seeded random subspaces (one set of products for all), and
    ``coordinates_part`` = ``delta_S^T H_A delta_S / delta^T H_A delta`` over the full space (delta_S: delta on
    those coordinates only). ``random_last_only``: the random subspaces at ``r = rank`` only (see
    :func:`captured_shares`). Opens as one ``{"shares": table, "coordinates_part": float}`` per stage, in
    order. Introduced in ``03_perturbation_theory``."""

    subspace: ConflictEigenpairs
    stages: tuple[Spec, ...]
    random: int = 5
    seed: int = 0
    random_last_only: bool = False
    kind: ClassVar[str] = "captured-shares"

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        if not self.stages:
            raise ConfigError("captured-shares stages: give at least one stage")
        if isinstance(self.random, bool) or not isinstance(self.random, int) or self.random < 0:
            raise ConfigError(f"captured-shares random: expected an integer >= 0, got {self.random!r}")

    def inputs(self) -> tuple[Spec, ...]:
        return (self.subspace, *self.stages)

    def key_fields(self, kit: Kit) -> dict:
        fields = {"subspace": kit.key(self.subspace), "stages": [kit.key(s) for s in self.stages],
                  "random": self.random, "seed": self.seed}
        if self.random_last_only:  # keyed only when set, so the stores of earlier runs stay valid
            fields["random_last_only"] = True
        return fields

    def build(self, kit: Kit, directory: Path, progress: bool) -> dict:
        eigen = kit.open(self.subspace)
        expert = load_expert(kit, self.subspace.objective)
        deltas = [weights_vector(kit, expert.space, stage) - expert.theta for stage in self.stages]
        index = eigen.index
        operator = hessian_operator(expert.loss, expert.model, eigen.restricted(expert.space))
        shares = captured_shares({i: d[index] for i, d in enumerate(deltas)}, eigen.vectors, operator,
                                 n_random=self.random, seed=self.seed, random_last_only=self.random_last_only)
        operator.release()
        full_operator = hessian_operator(expert.loss, expert.model, expert.space)
        parts = []
        for d in deltas:
            restricted = torch.zeros_like(d)
            restricted[index] = d[index]
            parts.append(quadratic_form(full_operator, restricted) / quadratic_form(full_operator, d))
        full_operator.release()
        for i, table in shares.items():
            write_table(directory / f"shares-{i}.json", table)
        (directory / RESULT_FILE).write_text(json.dumps({"coordinates_part": parts}))
        return {"top_share": [float(shares[i]["top"].iloc[-1]) for i in shares], "coordinates_part": parts}

    def open(self, kit: Kit, artifact: Artifact) -> list[dict]:
        parts = json.loads((artifact.path / RESULT_FILE).read_text())["coordinates_part"]
        return [{"shares": read_table(artifact.path / f"shares-{i}.json"), "coordinates_part": part}
                for i, part in enumerate(parts)]

    def label(self) -> str:
        return (f"captured shares of {len(self.stages)} displacement(s) on the top-{self.subspace.rank} route "
                f"subspace of H_{self.subspace.objective.domain}")

    def toy_seconds(self, config) -> float:
        random = self.random * (len(self.stages) if self.random_last_only else self.subspace.rank)
        return 0.3 * (self.subspace.rank + random + 3 * len(self.stages))


@dataclass(frozen=True)
class TopCurvature(Spec):
    """lambda_max(H_A): the largest eigenvalue of L_A's Hessian (``objective``, at its source theta_A*) over
    every parameter, by Lanczos on Hessian-vector products (relative accuracy ``tol``, seeded start). Opens as
    that float. Introduced in ``03_perturbation_theory`` (the gradient-descent rate alpha = scale / lambda_max)."""

    objective: Spec
    tol: float = 1e-3
    seed: int = 0
    kind: ClassVar[str] = "top-curvature"

    def __post_init__(self) -> None:
        _objective_spec(self.objective)

    def inputs(self) -> tuple[Spec, ...]:
        return (self.objective,)

    def key_fields(self, kit: Kit) -> dict:
        return {"objective": kit.key(self.objective), "tol": self.tol, "seed": self.seed}

    def build(self, kit: Kit, directory: Path, progress: bool) -> dict:
        expert = load_expert(kit, self.objective)
        operator = hessian_operator(expert.loss, expert.model, expert.space)
        values, _ = top_eigenpairs(operator.numpy_matvec, expert.space.dim, 1, tol=self.tol, seed=self.seed)
        operator.release()
        return {"lambda_max": float(values[0]), "hvps": operator.calls}

    def open(self, kit: Kit, artifact: Artifact) -> float:
        return float(artifact.metrics["lambda_max"])

    def label(self) -> str:
        return f"lambda_max of H_{self.objective.domain}"

    def toy_seconds(self, config) -> float:
        return 12.0


@dataclass(frozen=True)
class GDContraction(Spec):
    """The contraction theorem's refresh, measured: plain gradient descent on L_A (the steps of
    :func:`gd_trajectory`, both paths in lockstep so that only their current points are held) at alpha =
    ``rate_scale`` / lambda_max (``curvature``), from the damaged point (``stage``'s weights) and from theta_A*
    itself, with S the span of the ``subspace``'s eigenvectors, for ``steps`` steps, or, with ``until_bound``, for
    the fewest steps whose bound ``|1 - alpha mu|^T`` is at most ``until_bound`` (:func:`steps_to_bound`, at most
    ``steps``). Opens as ``{"alpha", "mu", "to_fixed", "to_path"}``: ``to_fixed[t]`` = ``||P_S(theta_t -
    theta_A*)||`` and ``to_path[t]`` = ``||P_S(theta_t - theta'_t)||`` against the path theta'_t from theta_A*,
    ``t = 0..T``; mu = the smallest of the subspace's eigenvalues. Introduced in ``03_perturbation_theory``."""

    stage: Spec
    subspace: ConflictEigenpairs
    curvature: TopCurvature
    rate_scale: float = 1.0
    steps: int = 30
    until_bound: float | None = None
    kind: ClassVar[str] = "gd-contraction"

    def __post_init__(self) -> None:
        if self.subspace.objective != self.curvature.objective:
            raise ConfigError("gd-contraction: the subspace and the curvature must be of one objective (L_A)")
        if not self.rate_scale > 0:
            raise ConfigError(f"gd-contraction rate_scale: expected a positive number, got {self.rate_scale!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"gd-contraction steps: expected a positive integer, got {self.steps!r}")
        if self.until_bound is not None and not 0 < self.until_bound < 1:
            raise ConfigError(f"gd-contraction until_bound: expected a bound in (0, 1) or None, got {self.until_bound!r}")

    def inputs(self) -> tuple[Spec, ...]:
        return (self.stage, self.subspace, self.curvature)

    def key_fields(self, kit: Kit) -> dict:
        fields = {"stage": kit.key(self.stage), "subspace": kit.key(self.subspace),
                  "curvature": kit.key(self.curvature), "rate_scale": self.rate_scale, "steps": self.steps}
        if self.until_bound is not None:
            fields["until_bound"] = self.until_bound
        return fields

    def build(self, kit: Kit, directory: Path, progress: bool) -> dict:
        eigen = kit.open(self.subspace)
        alpha = self.rate_scale / kit.open(self.curvature)
        expert = load_expert(kit, self.curvature.objective)
        loss, model, space, theta_a = expert.loss, expert.model, expert.space, expert.theta
        project = eigen.projector(space.dim)
        damaged = theta_a + (weights_vector(kit, space, self.stage) - theta_a)
        mu = float(eigen.values.min())
        steps = self.steps if self.until_bound is None else steps_to_bound(alpha, mu, self.until_bound, self.steps)
        clean = theta_a.clone()
        to_fixed, to_path = [], []
        with restored_afterwards(model, space):
            for step in range(steps + 1):
                to_fixed.append(float(project((damaged - theta_a).double()).norm()))
                to_path.append(float(project((damaged - clean).double()).norm()))
                if step < steps:  # the steps of gd_trajectory, both paths in lockstep
                    space.set(model, clean)
                    clean = clean - alpha * gradient(loss, model, space).to(clean)
                    space.set(model, damaged)
                    damaged = damaged - alpha * gradient(loss, model, space).to(damaged)
        result = {"alpha": alpha, "mu": mu, "to_fixed": to_fixed, "to_path": to_path}
        (directory / RESULT_FILE).write_text(json.dumps(result))
        return {"alpha": alpha, "ratio": result["to_fixed"][-1] / result["to_fixed"][0]}

    def open(self, kit: Kit, artifact: Artifact) -> dict:
        return json.loads((artifact.path / RESULT_FILE).read_text())

    def label(self) -> str:
        steps = (f"GD steps until the bound reaches {self.until_bound:g} (at most {self.steps})"
                 if self.until_bound is not None else f"{self.steps} GD steps")
        return f"{steps} on L_{self.curvature.objective.domain} from {self.stage.label()}"

    def toy_seconds(self, config) -> float:
        # until a bound, the length is known only once mu and lambda_max are: the toy's runs to 0.5 take a few
        # hundred steps (alpha mu near 2e-3)
        return 0.3 * 2 * (self.steps if self.until_bound is None else min(self.steps, 400))


@dataclass(frozen=True)
class PathAlong(Spec):
    """Along the checkpoints ``stage`` (B's stage from theta_A*) kept on its way (``save_every``): L_A at each
    (``objective``, fp32), A's greedy held-out score at each (the kit's scoring, :func:`~mdrl_lib.evaluation.score_items`
    on A's eval items) and the first-order term ``g_A^T delta_B`` split over the segments between them
    (:func:`first_order_segments`, g_A at theta_A*). Reuses the stored checkpoints: one gradient, one loss and one
    scoring of A per checkpoint. Opens as ``{"table": DataFrame, "items": {step: [score per item]}}``; the table has
    one row per checkpoint: ``step``, ``L_A``, ``score``, ``first_order_segment`` (g_A . (theta_k - theta_{k-1});
    0 at step 0), ``segment_norm``, ``cosine``, ``first_order``. Introduced in ``03_perturbation_theory``."""

    stage: Spec
    objective: Spec
    kind: ClassVar[str] = "path-along"

    def __post_init__(self) -> None:
        _objective_spec(self.objective)
        if not getattr(self.stage, "save_every", 0):
            raise ConfigError(f"path-along: {self.stage.label()} keeps no checkpoints along the way (save_every = 0)")
        if getattr(self.stage, "parent", None) != self.objective.source:
            raise ConfigError("path-along: the stage must start at the objective's source (theta_A*)")

    def inputs(self) -> tuple[Spec, ...]:
        return (self.objective, self.stage)

    def key_fields(self, kit: Kit) -> dict:
        return {"objective": kit.key(self.objective), "stage": kit.key(self.stage),
                "max_new_tokens": kit.config.rl.max_completion_length,
                "dtype": str(kit.compute_dtype).removeprefix("torch.")}

    def build(self, kit: Kit, directory: Path, progress: bool) -> dict:
        from mdrl_lib.evaluation import score_items

        expert = load_expert(kit, self.objective)
        loss, model, space = expert.loss, expert.model, expert.space
        g = gradient(loss, model, space)
        scorer, tokenizer = kit.load(self.objective.source)
        scorer_space = ParameterSpace.from_model(scorer)
        domain = self.objective.domain
        evals = {domain: kit.evals[domain]}
        rows, items, points = [], {}, []
        for step, path in kit.checkpoints_along(self.stage):
            point = weights_vector(kit, space, path)
            points.append(point)
            with displaced(model, space, point):
                value = loss_value(loss, model)
            scorer_space.set(scorer, weights_vector(kit, scorer_space, path))
            scored = score_items(scorer, tokenizer, evals, max_new_tokens=kit.config.rl.max_completion_length,
                                 batch_size=kit.config.compute.eval_batch_size or None)
            items[str(step)] = [float(x) for x in scored["score"]]
            rows.append({"step": step, "L_A": value, "score": float(np.mean(items[str(step)]))})
        segments = first_order_segments(g, points)
        table = pd.DataFrame(rows)
        first = {"first_order_segment": 0.0, "segment_norm": 0.0, "cosine": 0.0, "first_order": 0.0}
        for column in first:
            table[column] = [first[column], *segments[column].tolist()]
        write_table(directory / TABLE_FILE, table)
        (directory / RESULT_FILE).write_text(json.dumps({"items": items}))
        return {"checkpoints": len(rows), "scores": table["score"].round(6).tolist()}

    def open(self, kit: Kit, artifact: Artifact) -> dict:
        items = json.loads((artifact.path / RESULT_FILE).read_text())["items"]
        return {"table": read_table(artifact.path / TABLE_FILE), "items": {int(k): v for k, v in items.items()}}

    def label(self) -> str:
        return f"L_{self.objective.domain} and {self.objective.domain}'s score along {self.stage.label()}"

    def toy_seconds(self, config) -> float:
        steps = self.stage.steps if self.stage.steps is not None else config.rl.steps
        return 1.0 + 0.3 * (steps // self.stage.save_every + 1)


def nonshared_channel_draws(model: torch.nn.Module, shared: set, draws: int, seed: int = 0) -> list[set]:
    """``draws`` seeded sets of MLP channels, each as many as ``shared`` and none of them in it: the control for
    the shared routes' coordinates (same structure, same count of coordinates, outside the shared routes).
    Channels are (layer name, index) pairs as :func:`mdrl_lib.routes.route_coordinate_mask` takes them.
    Introduced in ``03_perturbation_theory``."""
    from mdrl_lib.routes import _MLP_WEIGHT

    sizes = {}
    for name, tensor in model.state_dict().items():
        match = _MLP_WEIGHT.match(name)
        if match and match["proj"] == "gate_proj":
            sizes[match["layer"]] = tensor.shape[0]
    pool = [(layer, c) for layer in sorted(sizes) for c in range(sizes[layer]) if (layer, c) not in shared]
    if len(pool) < len(shared):
        raise ValueError(f"only {len(pool)} MLP channels lie outside the {len(shared)} shared ones: no control set "
                         f"of the same size can be drawn")
    rng = np.random.default_rng(seed)
    return [{pool[i] for i in rng.choice(len(pool), size=len(shared), replace=False)} for _ in range(draws)]


@dataclass(frozen=True)
class TheoryPremises(Spec):
    """The premises of notebook 03's theory checks that need curvature, at theta_A* (the ``subspace``'s objective
    L_A) with S the span of the ``subspace``'s eigenvectors, for each of ``stages`` (delta_B = its weights -
    theta_A*): ``||g_A||`` and ``||P_S g_A||``; ``||P_S delta_B||``; the curvature term ``||P_S H_A P_S delta_B||``
    and the back-flow ``||P_S H_A (I - P_S) delta_B||``; ``||H_A delta_B||``; the full quadratic term
    ``delta_B^T H_A delta_B`` and the part ``delta_S^T H_A delta_S`` of the shared-route coordinates, against the
    same part on ``draws`` sets of non-shared MLP channels of the same count (:func:`nonshared_channel_draws`);
    and the extreme Ritz values of ``lanczos_steps`` Lanczos iterations on H_A over every parameter
    (:func:`lanczos_ritz`): a negative ``ritz_min`` proves H_A indefinite. Costs ``3 + draws`` Hessian-vector
    products per stage plus ``lanczos_steps``. Opens as ``{"grad_norm", "grad_s_norm", "mu", "ritz_min",
    "ritz_max", "coordinates", "stages": [per stage dict]}``. Introduced in
    ``03_perturbation_theory``."""

    subspace: ConflictEigenpairs
    stages: tuple[Spec, ...]
    draws: int = 10
    seed: int = 0
    lanczos_steps: int = 12
    kind: ClassVar[str] = "theory-premises"

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        if not self.stages:
            raise ConfigError("theory-premises stages: give at least one stage")
        if isinstance(self.draws, bool) or not isinstance(self.draws, int) or self.draws < 1:
            raise ConfigError(f"theory-premises draws: expected a positive integer, got {self.draws!r}")

    def inputs(self) -> tuple[Spec, ...]:
        return (self.subspace, *self.stages)

    def key_fields(self, kit: Kit) -> dict:
        return {"subspace": kit.key(self.subspace), "stages": [kit.key(s) for s in self.stages],
                "draws": self.draws, "seed": self.seed, "lanczos_steps": self.lanczos_steps}

    def build(self, kit: Kit, directory: Path, progress: bool) -> dict:
        from mdrl_lib import routes

        eigen = kit.open(self.subspace)
        shared = kit.open(self.subspace.routes)["shared"]
        expert = load_expert(kit, self.subspace.objective)
        loss, model, space, theta = expert.loss, expert.model, expert.space, expert.theta
        project = eigen.projector(space.dim)
        g = gradient(loss, model, space).double()
        masks = [space.restrict(routes.route_coordinate_mask(model, channels)).mask
                 for channels in nonshared_channel_draws(model, shared, self.draws, seed=self.seed)]
        op = hessian_operator(loss, model, space)
        shared_mask = torch.zeros(space.dim, dtype=torch.bool)
        shared_mask[eigen.index] = True
        per_stage = []
        for stage in self.stages:
            delta = weights_vector(kit, space, stage) - theta
            on_s = project(delta.double()).to(delta)
            h_on, h_off = op(on_s).double(), op(delta - on_s).double()
            h_delta = h_on + h_off
            total = float(delta.double() @ h_delta)
            shared_part = quadratic_form(op, delta * shared_mask.to(delta)) / total
            controls = [quadratic_form(op, delta * m.to(delta)) / total for m in masks]
            per_stage.append({"delta_norm": float(delta.norm()), "delta_s_norm": float(on_s.norm()),
                              "curvature_term": float(project(h_on).norm()), "backflow": float(project(h_off).norm()),
                              "h_delta_norm": float(h_delta.norm()), "quadratic": total, "shared_part": shared_part,
                              "nonshared_parts": controls})
        ritz = lanczos_ritz(op.numpy_matvec, space.dim, self.lanczos_steps, seed=self.seed)
        hvps = op.calls
        op.release()
        result = {"grad_norm": float(g.norm()), "grad_s_norm": float(project(g).norm()),
                  "mu": float(eigen.values.min()), "ritz_min": float(ritz[0]), "ritz_max": float(ritz[-1]),
                  "coordinates": int(eigen.dim),
                  "stages": per_stage}
        (directory / RESULT_FILE).write_text(json.dumps(result))
        return {"hvps": hvps, "ritz_min": result["ritz_min"]}

    def open(self, kit: Kit, artifact: Artifact) -> dict:
        return json.loads((artifact.path / RESULT_FILE).read_text())

    def label(self) -> str:
        return f"theory premises of H_{self.subspace.objective.domain} for {len(self.stages)} displacement(s)"

    def toy_seconds(self, config) -> float:
        return 1.0 + 0.2 * ((3 + self.draws) * len(self.stages) + self.lanczos_steps)

# ---- the notebook's tables from those artifacts ---------------------------------------------------


def displacement_table(deltas: Mapping[str, Vector], theta: Vector) -> pd.DataFrame:
    """One row per named displacement: ``‖δ_B‖`` and ``‖δ_B‖ / ‖θ_A*‖`` (``theta`` = theta_A*)."""
    return pd.DataFrame({name: {"‖δ_B‖": float(d.norm()), "‖δ_B‖ / ‖θ_A*‖": float(d.norm() / theta.norm())}
                         for name, d in deltas.items()}).T


def taylor_summary(segments: Mapping[str, pd.DataFrame], rtol: float) -> pd.DataFrame:
    """One row per regime: the terms at ``t = 1`` of its :func:`taylor_terms` table and the largest ``t`` up
    to which the quadratic prediction is within ``rtol`` (:func:`quadratic_validity`)."""
    return pd.DataFrame({name: {**table.iloc[-1][["measured", "first_order", "second_order",
                                                  "relative_error"]].to_dict(),
                                f"quadratic within {rtol:.0%} up to t": quadratic_validity(table, rtol=rtol)}
                         for name, table in segments.items()}).T


def share_summary(shares: Mapping[str, Mapping], rank: int) -> pd.DataFrame:
    """One row per regime (values of :meth:`CapturedShares.open`): the top-``rank`` share, the largest random
    share of the same dimension and the shared-route coordinates' part of the full quadratic term."""
    return pd.DataFrame({name: {f"top-{rank} share": s["shares"]["top"].iloc[-1],
                                f"random {rank}-dim (max)": s["shares"]["random_max"].iloc[-1],
                                "δ_Sᵀ H δ_S / δᵀ H δ (these coordinates' part of the full quadratic term)":
                                    s["coordinates_part"]} for name, s in shares.items()}).T


def contraction_curves(contraction: Mapping) -> pd.DataFrame:
    """The curves of one :class:`GDContraction` (its opened value) for :func:`~mdrl_lib.plots.plot_contraction`:
    columns ``step``, ``distance``, ``curve`` (to theta_A*, to the GD path from theta_A*, the bound)."""
    to_fixed, to_path = contraction["to_fixed"], contraction["to_path"]
    steps = np.arange(len(to_fixed))
    bound = contraction_bound(contraction["mu"], contraction["alpha"], steps, to_fixed[0])
    return pd.concat([pd.DataFrame({"step": steps, "distance": to_fixed, "curve": "‖P_S(θ_t − θ_A*)‖"}),
                      pd.DataFrame({"step": steps, "distance": to_path, "curve": "‖P_S(θ_t − GD path from θ_A*)‖"}),
                      pd.DataFrame({"step": steps, "distance": bound, "curve": "bound (1 − αμ)^t ‖P_S δ_B‖"})])


def contraction_table(contractions: Mapping[str, Mapping]) -> pd.DataFrame:
    """One row per regime (values of :meth:`GDContraction.open`): ``‖P_S δ_B‖``, the distance after the last
    step to theta_A* and to the GD path from theta_A*, and the bound's value there."""
    rows = {}
    for name, c in contractions.items():
        f, p, steps = c["to_fixed"], c["to_path"], len(c["to_fixed"]) - 1
        rows[name] = {"‖P_S δ_B‖": f[0], f"after {steps} steps (to θ_A*)": f[-1], "(to the GD path from θ_A*)": p[-1],
                      "bound": contraction_bound(c["mu"], c["alpha"], steps, f[0])}
    return pd.DataFrame(rows).T


def distance_table(kit: Kit, expert: LoadedExpert, models: Mapping[str, Spec], project: Projector,
                   index: torch.Tensor) -> pd.DataFrame:
    """One row per named model: L_A there, ``‖θ − θ_A*‖``, ``‖P_S(θ − θ_A*)‖`` and the distance on the
    shared-route coordinates ``index`` (notebook 03's look at the kit's real refresh)."""
    rows = {}
    for label, spec in models.items():
        diff = weights_vector(kit, expert.space, spec) - expert.theta
        with displaced(expert.model, expert.space, expert.theta + diff):
            value = loss_value(expert.loss, expert.model)
        rows[label] = {"L_A": value, "‖θ − θ_A*‖": float(diff.norm()),
                       "on S: ‖P_S(θ − θ_A*)‖": float(project(diff.double()).norm()),
                       "on the shared-route coordinates": float(diff[index].norm())}
    return pd.DataFrame(rows).T
