"""Notebook ``03_perturbation_theory``'s exercises: the damage's Taylor terms by double backward, and the share of
the second-order damage a subspace carries.

- ``03-taylor-terms``: t g.delta and t^2/2 delta^T H delta, held against :func:`mdrl_lib.perturbation.taylor_terms`
  on the ladder's controlled network and its task loss (:func:`mdrl_lib.controlled.build_world`, untrained).
- ``03-captured-share``: (P delta)^T H (P delta) / delta^T H delta, held against
  :func:`mdrl_lib.perturbation.captured_share` on small symmetric matrices.
"""
from __future__ import annotations

from mdrl_lib.exercises.core import Case, Exercise

NOTEBOOK = "03_perturbation_theory"


def _taylor_cases() -> list[Case]:
    import torch

    from mdrl_lib import perturbation as pt
    from mdrl_lib.controlled import ControlledWorld, TaskLoss, build_world

    out = []
    for seed, t, scale, only, label in ((0, 1.0, 0.05, None, "a random displacement of every trained weight"),
                                        (0, 0.3, 0.05, None, "the same displacement at t = 0.3"),
                                        (1, 1.0, 0.2, "down_proj", "a larger step on down_proj only"),
                                        (2, -0.5, 0.1, None, "a step backwards, t = -0.5, on another world")):
        world = ControlledWorld(seed=seed, train_items=32, held_out_items=10)
        model, data = build_world(world)
        mask = model.trained_mask()
        loss_fn = TaskLoss(data, "a", mask)
        generator = torch.Generator().manual_seed(seed + 10)
        delta = {}
        for name, keep in mask.items():
            step = scale * torch.randn(keep.shape, generator=generator, dtype=torch.float64) * keep
            delta[name] = step if only is None or only in name else torch.zeros_like(step)
        names = list(delta)
        space = pt.ParameterSpace.from_model(model, names)
        table = pt.taylor_terms(loss_fn, model, space, space.get(model), space.flatten([delta[n] for n in names]), [t])
        expected = (float(table["first_order"].iloc[0]), float(table["second_order"].iloc[0]))
        out.append(Case(f"{label} (world seed {seed})", (loss_fn, model, delta, t), expected, rtol=1e-6, atol=1e-12))
    return out


def _symmetric(seed: int, eigenvalues: tuple[float, ...]):
    import torch

    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=generator, dtype=torch.float64))
    values = torch.tensor(eigenvalues, dtype=torch.float64)
    return q @ torch.diag(values) @ q.T, q, generator


def _share_cases() -> list[Case]:
    import torch

    from mdrl_lib import perturbation as pt

    spectrum = (10.0, 5.0, 1.0, 0.5, 0.2, 0.1, 0.05, 0.01)
    h, q, generator = _symmetric(0, spectrum)
    delta = torch.randn(8, generator=generator, dtype=torch.float64)
    mixed = torch.randn(8, 3, generator=generator, dtype=torch.float64)
    h2, q2, generator2 = _symmetric(1, (4.0, 2.0, -1.0, 0.5, -0.3, 0.2))
    delta2 = torch.randn(6, generator=generator2, dtype=torch.float64)
    settings = (
        ("the two top eigenvectors", delta, q[:, :2], h),
        ("the two bottom eigenvectors", delta, q[:, -2:], h),
        ("three random columns, not orthonormal", delta, mixed, h),
        ("two columns spanning the same plane as the top two, scaled and mixed", delta,
         q[:, :2] @ torch.tensor([[2.0, 1.0], [0.0, 3.0]], dtype=torch.float64), h),
        ("an indefinite H, one direction", delta2, q2[:, :1] + 0.3 * q2[:, 2:3], h2),
        ("every direction: the whole damage", delta2, q2, h2),
    )
    out = []
    for label, d, basis, matrix in settings:
        table = pt.captured_share(d, basis, lambda v, matrix=matrix: matrix @ v, n_random=0)
        out.append(Case(f"{label} ({tuple(basis.shape)} basis)", (d, basis, matrix), float(table["top"].iloc[-1]),
                        rtol=1e-7, atol=1e-10))
    return out


EXERCISES = (
    Exercise(
        key="03-taylor-terms", notebook=NOTEBOOK, title="The damage's Taylor terms by double backward",
        objective="Compute the first- and second-order terms of how A's loss changes along t * delta: t g.delta "
                  "and t^2/2 delta^T H delta, with H delta by double backward (a Hessian-vector product, never the "
                  "Hessian). C5 says the second term carries the damage.",
        difficulty=3, importance="core", minutes=20,
        hint="Take the parameters named in delta (model.named_parameters()), loss = loss_fn(model), grads = "
             "torch.autograd.grad(loss, params, create_graph=True). slope = sum((g * delta[name]).sum()); "
             "differentiating slope again, torch.autograd.grad(slope, params), gives H delta. Return "
             "(t * slope, t**2 / 2 * sum((H delta) * delta)) as floats.",
        function="my_taylor_terms", compared_with="mdrl_lib.perturbation.taylor_terms",
        cases=_taylor_cases),
    Exercise(
        key="03-captured-share", notebook=NOTEBOOK, title="The share a subspace captures",
        objective="Compute the share of the second-order damage delta^T H delta carried by delta's projection on a "
                  "subspace: (P delta)^T H (P delta) / delta^T H delta. A small subspace with a share near 1 is "
                  "C5's conflict subspace.",
        difficulty=2, importance="core", minutes=15,
        hint="The columns of basis span the subspace but need not be orthonormal: orthonormalise them first "
             "(q, _ = torch.linalg.qr(basis)), then P delta = q @ (q.T @ delta). Divide (P delta) @ H @ (P delta) "
             "by delta @ H @ delta. With an indefinite H the share can leave [0, 1].",
        function="my_captured_share", compared_with="mdrl_lib.perturbation.captured_share",
        cases=_share_cases),
)
