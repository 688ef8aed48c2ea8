"""Notebook ``02_shared_routes``'s exercises: the global gradient cosine split by module, and a channel ablation.

- ``02-module-cosines``: the global cosine of two domains' gradients and each module's part of it, held against
  :func:`mdrl_lib.routes.gradient_cosines`.
- ``02-ablation-hook``: a model's output with chosen MLP channels zeroed by a forward pre-hook, held against
  :func:`mdrl_lib.routes.ablate_channels` on the ladder's small controlled network
  (:class:`mdrl_lib.controlled.ControlledNet`, the same layout as the toy LM's MLPs).
"""
from __future__ import annotations

from mdrl_lib.exercises.core import Case, Exercise

NOTEBOOK = "02_shared_routes"
_MODULES = ("model.layers.0.self_attn", "model.layers.0.mlp", "model.layers.1.self_attn", "model.layers.1.mlp",
            "other")


def _gradients(seed: int, sizes: tuple[int, ...]):
    import torch

    generator = torch.Generator().manual_seed(seed)
    return {m: torch.randn(n, generator=generator) for m, n in zip(_MODULES, sizes)}


def _cosine_cases() -> list[Case]:
    import torch

    from mdrl_lib import routes

    a, b = _gradients(0, (6, 10, 6, 10, 4)), _gradients(1, (6, 10, 6, 10, 4))
    x, y, z = _gradients(2, (8, 12, 3)).values()
    conflict_a = {_MODULES[0]: x, _MODULES[1]: y, "other": 0.1 * z}
    conflict_b = {_MODULES[0]: x.clone(), _MODULES[1]: -y * (x.norm() / y.norm()) ** 2, "other": 0.1 * z.flip(0)}
    silent = {**b, _MODULES[2]: torch.zeros(6)}
    related = {m: v + 0.5 * b[m] for m, v in a.items()}
    settings = (
        ("two independent random gradients over five modules", a, b),
        ("a gradient against a noisy copy of itself", a, related),
        ("one module agrees, one conflicts as strongly: globally near orthogonal", conflict_a, conflict_b),
        ("a module where one gradient is zero", a, silent),
        ("a gradient against itself", a, a),
    )
    out = []
    for label, first, second in settings:
        comparison = routes.gradient_cosines(first, second)
        contributions = dict(zip(comparison.modules["module"], comparison.modules["contribution"].astype(float)))
        out.append(Case(label, (first, second), (float(comparison.cosine), contributions)))
    return out


def _net(seed: int):
    import torch

    from mdrl_lib.controlled import ControlledNet, ControlledWorld

    model = ControlledNet(ControlledWorld(seed=seed), torch.Generator().manual_seed(seed))
    inputs = torch.randn(5, model.head.in_features, generator=torch.Generator().manual_seed(seed + 100),
                         dtype=torch.float64)
    return model.eval(), inputs


def _ablation_cases() -> list[Case]:
    import torch

    from mdrl_lib import routes

    layer = "model.layers.0"
    out = []
    for seed, label, indices in ((0, "one channel", {3}), (0, "three channels", {0, 5, 7}),
                                 (1, "three channels of another network", {1, 6, 11}),
                                 (1, "every channel: the MLP adds nothing", set(range(12))),
                                 (2, "no channel: the model as it is", set())):
        model, inputs = _net(seed)
        channels = {(layer, i) for i in indices}
        with torch.no_grad():
            clean = model(inputs)
            with routes.ablate_channels(model, channels):
                expected = model(inputs)

        def after(args, clean=clean) -> str | None:
            with torch.no_grad():
                now = args[0](args[1])
            gap = float((now - clean).abs().max())
            if gap > 1e-12:
                return (f"after your function returned, the model's output still differs from the unablated one "
                        f"(by up to {gap:.3g}): remove every hook you registered, e.g. in a finally block")
            return None

        out.append(Case(f"{label}: {sorted(indices)} of {layer}'s 12 channels", (model, inputs, channels), expected,
                        rtol=1e-9, atol=1e-12, after=after))
    return out


EXERCISES = (
    Exercise(
        key="02-module-cosines", notebook=NOTEBOOK, title="The global cosine, split by module",
        objective="Compute the global cosine of two gradients split by module, and each module's contribution "
                  "dot_m / (|a| |b|): the contributions add up to the global cosine, so a near-zero global cosine "
                  "can hide modules that conflict and modules that cooperate (C3).",
        difficulty=2, importance="core", minutes=15,
        hint="The global inner product is the sum of the modules' inner products, and |a|^2 is the sum of the "
             "modules' squared norms. So global cosine = sum_m dot_m / (|a| |b|) and module m's contribution is "
             "dot_m / (|a| |b|), with the global norms, not the module's own. Return (global cosine, {module: "
             "contribution}).",
        function="my_cosine_by_module", compared_with="mdrl_lib.routes.gradient_cosines",
        cases=_cosine_cases),
    Exercise(
        key="02-ablation-hook", notebook=NOTEBOOK, title="Zero MLP channels with a forward pre-hook",
        objective="Run a model with chosen MLP channels switched off: zero their intermediate activations, the "
                  "input of down_proj, with a forward pre-hook, and leave the model as it was afterwards. This is "
                  "the causal test of C4: do the domains need their shared routes?",
        difficulty=3, importance="useful", minutes=20,
        hint="Group the (layer, index) channels by layer; the layer module is dict(model.named_modules())[layer]. "
             "On its mlp.down_proj register a forward pre-hook hook(module, args) that returns (x, *args[1:]) "
             "with x = args[0].clone() and x[..., indices] = 0. Compute model(inputs) under torch.no_grad(), then "
             "remove every handle in a finally block.",
        function="my_ablated_output", compared_with="mdrl_lib.routes.ablate_channels",
        cases=_ablation_cases),
)
