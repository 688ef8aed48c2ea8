"""The controlled rung of notebook 03's ladder: a learned two-task network where the theory's premises hold.

Introduced in notebook ``03_perturbation_theory`` (the ladder from the quadratic world to the toy LM). The quadratic
world makes the perturbation theory exact by construction; the toy LM breaks its premises. Between them this rung
is a small network trained with a cross-entropy loss, built so that the premises *can* hold, and then measured
with the same library functions as the LM (:mod:`mdrl_lib.perturbation`, :mod:`mdrl_lib.routes`):

- **The world.** Inputs come in three groups of ``group_inputs`` features: A's own, shared, B's own. Task A's
  inputs carry A's group and the shared group, task B's carry B's and the shared one; each task's inputs reach the
  other task's own group only at the scale ``leak``. One residual gated-MLP block (``gate_proj``, ``up_proj``,
  ``down_proj``, named as in the LM so that :func:`mdrl_lib.routes.route_coordinate_mask` reads it) has
  ``group_channels`` channels per group, each reading its own group's inputs only; a fixed random head maps the
  result to ``classes`` logits. Targets are soft labels of two teachers of the same architecture whose shared
  channels are correlated by ``teacher_correlation`` (so A and B want different things of the shared channels:
  the conflict).
- **theta_A\\*.** The base is trained on both tasks (Adam, ``base_steps``). L_A is A's mean cross-entropy plus a
  pull ``proximal / 2 ||theta - theta_base||^2`` toward the base (the analogue of RL's KL to its reference; it
  gives every direction some curvature, so a true minimum exists). theta_A\\* minimises L_A by Newton's method on
  the exact Hessian until ``||g_A|| <= gradient_tolerance``; the Hessian there is checked positive definite.
- **B's stage.** Plain gradient descent on B's cross-entropy from theta_A\\* for ``b_steps`` steps, keeping a
  checkpoint every ``checkpoint_every`` steps, at the largest rate of ``b_rates`` whose quadratic model of L_A stays
  within ``locality_target`` (half the locality premise's tolerance) at t = 1 and at every checkpoint. The rule reads
  locality only: whether that stage also damages A enough is the damage premise's business, and every rate tried is
  reported (the trade-off between locality and damage).
- **The measurements** (what notebook 03 measures on the LM): the Taylor terms of L_A along delta_B and at B's
  checkpoints; the routes each task uses (top ``route_fraction`` of channels by mean activity, the LM's rule) and
  the channels both use; S = the top-``rank`` eigenvectors of H_A restricted to the shared channels' coordinates
  (:func:`mdrl_lib.perturbation.top_eigenpairs` on a :class:`~mdrl_lib.perturbation.HessianOperator`, as
  :class:`~mdrl_lib.perturbation.ConflictEigenpairs` does for the LM); the captured share of delta_B's
  second-order damage on S against random subspaces of the same coordinates, and the shared coordinates' part of
  the whole term against sets of non-shared channels of the same count; stationarity, curvature on S and
  back-flow; A's held-out per-item score (minus the cross-entropy) before and after B's stage; L_A against that
  score along B's checkpoints; and a plain gradient-descent refresh on L_A from the damaged point at
  ``alpha = gd_rate_scale / lambda_max(H_A)`` (exact), run until the theorem's bound ``|1 - alpha mu|^t`` is at most
  ``gd_bound`` (at most ``gd_max_steps`` steps).

Why the premises can hold here and not in the LM: A's inputs reach B's own channels only through ``leak``, so B's
large moves on its own channels barely couple into H_A, and theta_A\\* is a true minimum of L_A. The back-flow is
then small but not zero (it grows with ``leak``); it is measured, never assumed.

Settings were chosen from the premises alone, before any verdict was read, on exploratory world seeds 0-4: the
route fraction that makes each task's top routes its own group plus the shared one (2/3), the leak (0.1: back-flow
near 1e-3 of the curvature term), and B's stage: a fixed rate could not serve every seed (at 3e-4 one seed's
quadratic error was 0.04 and its damage 4 standard errors, another's 0.005 and 0.7), so the rate is chosen per run
by the locality rule above. Everything runs in float64 on the CPU, seeded by ``seed``; it takes a few seconds.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from mdrl_lib.config import MAX_SEED, ConfigError, Param
from mdrl_lib.specs import Spec

if TYPE_CHECKING:
    from mdrl_lib.kit import Kit
    from mdrl_lib.store import Artifact

GROUPS: tuple[str, ...] = ("a", "shared", "b")  # the input groups, in order; channel group i reads input group i
LAYER = "model.layers.0"  # the block's name, as the LM's (routes.route_coordinate_mask reads it)
RESULT_FILE = "result.json"


@dataclass(frozen=True)
class ControlledWorld:
    """The controlled rung's settings (see the module's docstring); every one enters the artifact's key."""

    seed: int = 0
    group_inputs: int = 4
    group_channels: int = 4
    classes: int = 4
    train_items: int = 400
    held_out_items: int = 1600
    teacher_correlation: float = 0.3
    leak: float = 0.1
    proximal: float = 0.01
    base_steps: int = 1500
    base_lr: float = 0.01
    gradient_tolerance: float = 1e-9
    b_rates: tuple[float, ...] = (0.02, 0.01, 0.005, 0.002, 0.001, 5e-4, 2e-4, 1e-4)
    b_steps: int = 10
    checkpoint_every: int = 2
    locality_target: float = 0.05
    route_fraction: float = 2 / 3
    rank: int = 16
    random_subspaces: int = 10
    nonshared_draws: int = 10
    gd_rate_scale: float = 1.0
    gd_bound: float = 0.5
    gd_max_steps: int = 5000

    def __post_init__(self) -> None:
        counts = {"group_inputs": 1, "group_channels": 2, "classes": 2, "train_items": 10, "held_out_items": 10,
                  "base_steps": 0, "b_steps": 1, "checkpoint_every": 1, "rank": 1, "random_subspaces": 1,
                  "nonshared_draws": 1, "gd_max_steps": 1}
        for name, minimum in counts.items():
            Param(int, "", minimum=minimum, maximum=10**6).check(f"controlled {name}", getattr(self, name))
        Param(int, "", minimum=0, maximum=MAX_SEED).check("controlled seed", self.seed)
        for name, low, high in (("teacher_correlation", -1.0, 1.0), ("leak", 0.0, 1.0)):
            Param(float, "", minimum=low, maximum=high).check(f"controlled {name}", getattr(self, name))
        for name, high in (("route_fraction", 1.0), ("gd_rate_scale", 2.0), ("gd_bound", 1.0)):
            Param(float, "", above=0.0, maximum=high).check(f"controlled {name}", getattr(self, name))
        for name in ("proximal", "base_lr", "gradient_tolerance", "locality_target"):
            Param(float, "", above=0.0, maximum=10.0).check(f"controlled {name}", getattr(self, name))
        if isinstance(self.b_rates, (str, bytes)) or not isinstance(self.b_rates, tuple) or not self.b_rates:
            raise ConfigError(f"controlled b_rates: expected a non-empty tuple of rates, got {self.b_rates!r}")
        for rate in self.b_rates:
            Param(float, "", above=0.0, maximum=10.0).check("controlled b_rates", rate)
        if self.checkpoint_every > self.b_steps:
            raise ConfigError(f"controlled checkpoint_every: {self.checkpoint_every} exceeds b_steps ({self.b_steps}); "
                              f"B's stage would keep no checkpoint along the way")
        if self.gd_bound >= 1:
            raise ConfigError(f"controlled gd_bound: expected a bound below 1 (the refresh must contract), got "
                              f"{self.gd_bound!r}")

    @property
    def inputs(self) -> int:
        return 3 * self.group_inputs

    @property
    def channels(self) -> int:
        return 3 * self.group_channels


class _MLP(nn.Module):
    def __init__(self, inputs: int, channels: int, read_mask: torch.Tensor):
        super().__init__()
        self.gate_proj = nn.Linear(inputs, channels, bias=False)
        self.up_proj = nn.Linear(inputs, channels, bias=False)
        self.down_proj = nn.Linear(channels, inputs, bias=False)
        self.register_buffer("read_mask", read_mask)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        gate = F.linear(h, self.gate_proj.weight * self.read_mask)
        up = F.linear(h, self.up_proj.weight * self.read_mask)
        return self.down_proj(F.silu(gate) * up)


class _Block(nn.Module):
    def __init__(self, inputs: int, channels: int, read_mask: torch.Tensor):
        super().__init__()
        self.mlp = _MLP(inputs, channels, read_mask)


class _Body(nn.Module):
    def __init__(self, inputs: int, channels: int, read_mask: torch.Tensor):
        super().__init__()
        self.layers = nn.ModuleList([_Block(inputs, channels, read_mask)])


class ControlledNet(nn.Module):
    """The controlled rung's network: ``logits = head(x + mlp(x))`` with one gated MLP whose channel group ``i``
    reads input group ``i`` only (``read_mask``); ``head`` is fixed (not trained). Input ``(n, 3 g)``, output
    ``(n, classes)``. Weights are drawn from ``generator`` (float64). Introduced in notebook 03."""

    def __init__(self, world: ControlledWorld, generator: torch.Generator):
        super().__init__()
        g, k = world.group_inputs, world.group_channels
        read_mask = torch.zeros(world.channels, world.inputs, dtype=torch.float64)
        for i in range(len(GROUPS)):
            read_mask[i * k:(i + 1) * k, i * g:(i + 1) * g] = 1.0
        self.model = _Body(world.inputs, world.channels, read_mask)
        self.head = nn.Linear(world.inputs, world.classes, bias=False)
        with torch.no_grad():
            for p in self.parameters():
                p.data = torch.randn(p.shape, generator=generator, dtype=torch.float64) / math.sqrt(p.shape[1])
            for name in ("gate_proj", "up_proj"):
                getattr(self.mlp, name).weight.mul_(read_mask)  # unread coordinates are zero and stay zero
        self.head.requires_grad_(False)

    @property
    def mlp(self) -> _MLP:
        return self.model.layers[0].mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for block in self.model.layers:
            h = h + block.mlp(h)
        return self.head(h)

    def trained_mask(self) -> dict[str, torch.Tensor]:
        """The coordinates that train, per parameter name: the read coordinates of ``gate_proj`` and ``up_proj``
        and all of ``down_proj`` (what :class:`~mdrl_lib.perturbation.ParameterSpace` is restricted to)."""
        read = self.mlp.read_mask.bool()
        return {f"{LAYER}.mlp.gate_proj.weight": read, f"{LAYER}.mlp.up_proj.weight": read,
                f"{LAYER}.mlp.down_proj.weight": torch.ones_like(self.mlp.down_proj.weight, dtype=torch.bool)}


def channel_groups(world: ControlledWorld) -> dict[str, set]:
    """Each input group's channels as (layer, index) pairs, the form the routes take."""
    k = world.group_channels
    return {group: {(LAYER, c) for c in range(i * k, (i + 1) * k)} for i, group in enumerate(GROUPS)}


def task_inputs(world: ControlledWorld, task: str, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` inputs of ``task`` (``"a"`` or ``"b"``), shape ``(count, 3 g)``: standard normal on the task's own
    group and the shared one, scaled by ``leak`` on the other task's group."""
    if task not in ("a", "b"):
        raise ValueError(f"unknown task {task!r}; valid: a, b")
    x = torch.randn(count, world.inputs, generator=generator, dtype=torch.float64)
    other = GROUPS.index("b" if task == "a" else "a")
    g = world.group_inputs
    x[:, other * g:(other + 1) * g] *= world.leak
    return x


@dataclass(frozen=True, eq=False)
class ControlledData:
    """Train and held-out inputs and soft targets per task: ``train[task] = (x, p)``, ``held_out[task] = (x, p)``,
    x of shape ``(n, 3 g)``, p ``(n, classes)``."""

    train: dict
    held_out: dict


def build_world(world: ControlledWorld) -> tuple[ControlledNet, ControlledData]:
    """The untrained network and the two tasks' data, drawn from one generator seeded by ``world.seed``: the
    network, A's teacher (the network's architecture and head, shared weights scaled by 2), B's teacher (each
    trained weight correlated with A's teacher's by ``teacher_correlation``), then the inputs. Introduced in
    notebook 03."""
    generator = torch.Generator().manual_seed(world.seed)
    net = ControlledNet(world, generator)
    teacher_a = ControlledNet(world, generator)
    teacher_a.head.weight.data.copy_(net.head.weight.data)
    teacher_b = ControlledNet(world, generator)
    teacher_b.load_state_dict(teacher_a.state_dict())
    rho = world.teacher_correlation
    with torch.no_grad():
        for p in teacher_a.mlp.parameters():
            p.mul_(2.0)
        for pa, pb in zip(teacher_a.mlp.parameters(), teacher_b.mlp.parameters()):
            fresh = 2.0 * torch.randn(pb.shape, generator=generator, dtype=torch.float64) / math.sqrt(pb.shape[1])
            pb.copy_(rho * pa + math.sqrt(1.0 - rho * rho) * fresh)
        for teacher in (teacher_a, teacher_b):
            for name in ("gate_proj", "up_proj"):
                getattr(teacher.mlp, name).weight.mul_(teacher.mlp.read_mask)
    train, held_out = {}, {}
    for task, teacher in (("a", teacher_a), ("b", teacher_b)):
        for store, count in ((train, world.train_items), (held_out, world.held_out_items)):
            x = task_inputs(world, task, count, generator)
            with torch.no_grad():
                store[task] = (x, F.softmax(teacher(x), dim=1))
    return net, ControlledData(train=train, held_out=held_out)


def item_losses(net: nn.Module, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the soft targets ``p`` under the network's logits, one per item, shape ``(n,)``."""
    return -(p * F.log_softmax(net(x), dim=1)).sum(dim=1)


class TaskLoss:
    """L_task(theta): the task's mean train cross-entropy, plus ``proximal / 2 ||theta - reference||^2`` over the
    trained coordinates when ``reference`` (a state dict of the trained parameters) is given. A loss function of
    the model, as :mod:`mdrl_lib.perturbation` takes them."""

    def __init__(self, data: ControlledData, task: str, mask: dict[str, torch.Tensor],
                 reference: dict[str, torch.Tensor] | None = None, proximal: float = 0.0):
        self.x, self.p = data.train[task]
        self.mask, self.reference, self.proximal = mask, reference, proximal

    def __call__(self, model: nn.Module) -> torch.Tensor:
        loss = item_losses(model, self.x, self.p).mean()
        if self.reference is not None and self.proximal > 0:
            pull = sum((((p - self.reference[n]) * self.mask[n]) ** 2).sum() for n, p in model.named_parameters()
                       if n in self.mask)
            loss = loss + 0.5 * self.proximal * pull
        return loss


def newton_minimum(loss_fn, model: nn.Module, space, tolerance: float, max_iterations: int = 200,
                   max_quasi_newton: int = 500) -> dict:
    """Minimise ``loss_fn`` over ``space``: up to ``max_quasi_newton`` L-BFGS iterations (over the model's
    parameters the space covers), then damped Newton steps on the exact Hessian (shifted to be positive definite
    when it is not, with a backtracking line search) until ``||g|| <= tolerance``. Leaves the model at
    the minimum. Returns ``iterations``, ``grad_norm``, ``converged``, ``hessian_min`` and ``hessian_max`` (the
    extreme eigenvalues of the Hessian there)."""
    from mdrl_lib.perturbation import dense_hessian, gradient, loss_value

    params = space.parameters(model)
    quasi = torch.optim.LBFGS(params, lr=1.0, max_iter=max_quasi_newton, tolerance_grad=tolerance,
                              tolerance_change=0.0, history_size=50, line_search_fn="strong_wolfe")

    def closure():  # L-BFGS first: cheap steps most of the way, then exact Newton steps to the tolerance
        quasi.zero_grad()
        loss = loss_fn(model)
        loss.backward()
        return loss

    if max_quasi_newton:
        quasi.step(closure)
        for p in params:
            p.grad = None
    iterations = 0
    for iterations in range(max_iterations + 1):
        g = gradient(loss_fn, model, space).double()
        if float(g.norm()) <= tolerance or iterations == max_iterations:
            break
        hessian = dense_hessian(loss_fn, model, space)
        low = float(torch.linalg.eigvalsh(hessian)[0])
        shift = 0.0 if low > 1e-8 else 1e-3 - low
        step = torch.linalg.solve(hessian + shift * torch.eye(space.dim, dtype=torch.float64), g)
        start, before, size = space.get(model).clone(), loss_value(loss_fn, model), 1.0
        while True:
            space.set(model, start - size * step)
            if loss_value(loss_fn, model) <= before or size < 1e-10:
                break
            size *= 0.5
    values = torch.linalg.eigvalsh(dense_hessian(loss_fn, model, space))
    grad_norm = float(g.norm())
    return {"iterations": iterations, "grad_norm": grad_norm, "converged": grad_norm <= tolerance,
            "hessian_min": float(values[0]), "hessian_max": float(values[-1])}


def channel_activity(net: ControlledNet, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean |activation| of each MLP channel (the input of ``down_proj``) over the inputs ``x``: ``{layer:
    (channels,)}``, the LM's route activity (:func:`mdrl_lib.routes.route_activity`) for this network."""
    captured = {}
    hook = net.mlp.down_proj.register_forward_pre_hook(lambda module, args: captured.__setitem__("a", args[0]))
    try:
        with torch.no_grad():
            net(x)
    finally:
        hook.remove()
    return {LAYER: captured["a"].abs().mean(dim=0)}


def b_stage(net: nn.Module, space, loss_b, theta_a: torch.Tensor, rate: float, steps: int,
            every: int) -> dict[int, torch.Tensor]:
    """B's stage: ``steps`` plain gradient-descent steps on ``loss_b`` from ``theta_a`` at ``rate``; returns the
    checkpoints ``{step: theta}`` at step 0, every ``every`` steps and the last (the model's weights are restored
    afterwards). Introduced in notebook 03."""
    from mdrl_lib.perturbation import gradient, restored_afterwards

    checkpoints = {0: theta_a.clone()}
    with restored_afterwards(net, space):
        theta = theta_a.clone()
        for step in range(1, steps + 1):
            space.set(net, theta)
            theta = theta - rate * gradient(loss_b, net, space).double()
            if step % every == 0 or step == steps:
                checkpoints[step] = theta.clone()
    return checkpoints


def measure(world: ControlledWorld) -> dict[str, Any]:
    """Build the controlled rung and take every measurement notebook 03 takes on the LM (the module's docstring).
    Returns a JSON-ready dict: ``minimum`` (Newton's result), ``routes`` (channel indices: a, b, shared, and the
    shared input group's), ``b_rate`` (the rate chosen) and ``b_trials`` (each rate tried: locality error, ||delta_B||,
    A's held-out drop and its paired standard errors), ``segment`` (Taylor terms along theta_A* + t delta_B, t =
    0.25..1), ``along`` (at B's checkpoints: step, measured, predicted, L_A, score), ``eigenvalues`` (S's),
    ``shares`` (captured-share table),
    ``coordinates_part``, ``nonshared_parts``, the premise norms (``grad_norm``, ``grad_s_norm``, ``h_delta_norm``,
    ``mu``, ``delta_s_norm``, ``curvature_term``, ``backflow``, ``lambda_max``), ``before`` / ``after`` (A's held-out
    per-item scores), and ``refresh`` (alpha, steps, loss, distance_s, distance). Introduced in notebook 03."""
    from mdrl_lib import perturbation as pt
    from mdrl_lib import routes

    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        net, data = build_world(world)
        mask = net.trained_mask()
        space = pt.ParameterSpace.from_model(net, list(mask), mask=mask)
        # the base: both tasks, Adam on the trained coordinates
        params = [p for n, p in net.named_parameters() if n in mask]
        optimizer = torch.optim.Adam(params, lr=world.base_lr)
        both = [TaskLoss(data, t, mask) for t in ("a", "b")]
        for _ in range(world.base_steps):
            optimizer.zero_grad()
            (both[0](net) + both[1](net)).backward()  # unread coordinates get no gradient (read_mask)
            optimizer.step()
        reference = {n: p.detach().clone() for n, p in net.named_parameters() if n in mask}
        loss_a = TaskLoss(data, "a", mask, reference, world.proximal)
        loss_b = TaskLoss(data, "b", mask)
        minimum = newton_minimum(loss_a, net, space, world.gradient_tolerance)
        theta_a = space.get(net).clone()

        def score(theta: torch.Tensor) -> np.ndarray:
            with pt.displaced(net, space, theta), torch.no_grad():
                return (-item_losses(net, *data.held_out["a"])).numpy()

        # routes: each task's top channels by activity on its train inputs, and the channels both use
        found = {t: routes.active_routes(channel_activity(net, data.train[t][0]), world.route_fraction)
                 for t in ("a", "b")}
        shared = found["a"] & found["b"]
        if not shared:
            raise ValueError(f"the tasks share no channel in their top {world.route_fraction:.0%}; "
                             f"raise route_fraction")
        # B's stage: plain gradient descent on B's cross-entropy at the largest rate that keeps the quadratic model
        # of L_A within locality_target (judged with the exact Hessian at theta_A*)
        base_loss = pt.loss_value(loss_a, net)
        g_a = pt.gradient(loss_a, net, space).double()
        hessian = pt.dense_hessian(loss_a, net, space)

        def quadratic(d: torch.Tensor) -> float:
            return float(g_a @ d) + 0.5 * float(d @ hessian @ d)

        def l_a(theta: torch.Tensor) -> float:
            with pt.displaced(net, space, theta):
                return pt.loss_value(loss_a, net)

        trials = []
        for rate in world.b_rates:
            checkpoints = b_stage(net, space, loss_b, theta_a, rate, world.b_steps, world.checkpoint_every)
            delta = checkpoints[world.b_steps] - theta_a
            points = [(t, theta_a + t * delta, t * delta) for t in (0.25, 0.5, 0.75, 1.0)]
            segment = pd.DataFrame([{"t": t, "measured": l_a(p) - base_loss, "predicted": quadratic(d)}
                                    for t, p, d in points])
            along = pd.DataFrame([{"step": k, "measured": l_a(p) - base_loss, "predicted": quadratic(p - theta_a)}
                                  for k, p in checkpoints.items()])
            error = pt.locality_error(segment, along)["worst"]
            damage = pt.paired_damage(score(theta_a), score(checkpoints[world.b_steps]))
            trials.append({"rate": rate, "locality_error": error, "delta_norm": float(delta.norm()),
                           "damage": damage["drop"], "damage_standard_errors": damage["standard_errors"]})
            chosen = (rate, checkpoints)
            if error <= world.locality_target:
                break
        rate, checkpoints = chosen
        delta = checkpoints[world.b_steps] - theta_a
        segment = pt.taylor_terms(loss_a, net, space, theta_a, delta, [0.25, 0.5, 0.75, 1.0])
        along = [{"step": k, "measured": l_a(p) - base_loss, "predicted": quadratic(p - theta_a), "L_A": l_a(p),
                  "score": float(score(p).mean())} for k, p in checkpoints.items()]
        before, after = score(theta_a), score(checkpoints[world.b_steps])
        full = pt.hessian_operator(loss_a, net, space)  # at theta_A*: the weights stay put from here on
        # S: top eigenvectors of H_A on the shared channels' coordinates (as ConflictEigenpairs for the LM)
        sub = space.restrict(routes.route_coordinate_mask(net, shared))
        sub_operator = pt.hessian_operator(loss_a, net, sub)
        rank = min(world.rank, sub.dim)
        values, vectors = pt.top_eigenpairs(sub_operator.numpy_matvec, sub.dim, rank, tol=0.0, seed=world.seed)
        sub_operator.release()
        positions = torch.searchsorted(space.index, sub.index)
        basis = torch.zeros(space.dim, rank, dtype=torch.float64)
        basis[positions] = torch.as_tensor(vectors)
        project = pt.as_projector(basis, space.dim)
        shares = pt.captured_share(delta, basis, full, r_max=rank, n_random=world.random_subspaces, seed=world.seed)
        total = pt.quadratic_form(full, delta)
        shared_mask = torch.zeros(space.dim, dtype=torch.float64)
        shared_mask[positions] = 1.0
        nonshared_parts = []
        for channels in pt.nonshared_channel_draws(net, shared, world.nonshared_draws, seed=world.seed):
            control = torch.searchsorted(space.index, space.restrict(routes.route_coordinate_mask(net, channels)).index)
            control_mask = torch.zeros(space.dim, dtype=torch.float64)
            control_mask[control] = 1.0
            nonshared_parts.append(pt.quadratic_form(full, delta * control_mask) / total)
        on_s = project(delta)
        h_on, h_off = full(on_s).double(), full(delta - on_s).double()
        mu = float(pt.curvature_on_subspace(full, basis)[0])
        coordinates_part = pt.quadratic_form(full, delta * shared_mask) / total
        lambda_max = minimum["hessian_max"]
        full.release()
        # the theorem's refresh: plain GD on L_A at alpha = scale / lambda_max, until the bound is at most gd_bound
        alpha = world.gd_rate_scale / lambda_max
        steps = pt.steps_to_bound(alpha, mu, world.gd_bound, world.gd_max_steps)
        refresh = pt.gd_refresh(loss_a, net, space, checkpoints[world.b_steps], theta_a, project, alpha, steps)
    result = {
        "world": asdict(world), "parameters": space.dim, "minimum": minimum,
        "routes": {t: sorted(c for _, c in found[t]) for t in ("a", "b")} | {
            "shared": sorted(c for _, c in shared),
            "shared_group": sorted(c for _, c in channel_groups(world)["shared"])},
        "coordinates": int(sub.dim), "segment": segment.to_dict("list"), "along": along, "b_rate": rate,
        "b_trials": trials,
        "eigenvalues": [float(v) for v in values], "rank": rank, "shares": shares.to_dict("list"),
        "coordinates_part": float(coordinates_part),
        "nonshared_parts": nonshared_parts, "grad_norm": float(g_a.norm()), "grad_s_norm": float(project(g_a).norm()),
        "h_delta_norm": float((h_on + h_off).norm()), "mu": mu, "delta_norm": float(delta.norm()),
        "delta_s_norm": float(on_s.norm()), "theta_norm": float(theta_a.norm()),
        "curvature_term": float(project(h_on).norm()), "backflow": float(project(h_off).norm()),
        "lambda_max": lambda_max, "before": before.tolist(), "after": after.tolist(),
        "refresh": {"alpha": alpha, "steps": steps, **refresh.to_dict("list")},
        "seconds": round(time.perf_counter() - start, 2)}
    return result


@dataclass(frozen=True)
class ControlledRung(Spec):
    """The controlled rung's measurements (:func:`measure`) for ``world``, as an artifact (JSON). Needs nothing
    else: the network and its data are built from ``world.seed``. Opens as :func:`measure`'s dict. Introduced in
    notebook ``03_perturbation_theory``."""

    world: ControlledWorld = ControlledWorld()
    kind: ClassVar[str] = "controlled-rung"

    def __post_init__(self) -> None:
        if not isinstance(self.world, ControlledWorld):
            raise ConfigError(f"controlled-rung world: expected a ControlledWorld, got {self.world!r}")

    def key_fields(self, kit: Kit) -> dict:
        return {"world": asdict(self.world), "dtype": "float64"}

    def build(self, kit: Kit, directory: Path, progress: bool) -> dict:
        result = measure(self.world)
        (directory / RESULT_FILE).write_text(json.dumps(result))
        return {"parameters": result["parameters"], "newton_iterations": result["minimum"]["iterations"],
                "seconds": result["seconds"]}

    def open(self, kit: Kit, artifact: Artifact) -> dict:
        return json.loads((artifact.path / RESULT_FILE).read_text())

    def label(self) -> str:
        return f"controlled two-task network (seed {self.world.seed})"

    def toy_seconds(self, config) -> float:
        return 5.0
