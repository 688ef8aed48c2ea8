"""Notebook ``01_sparse_edits``'s exercises: C1's unchanged share of an edit and C2's top-neuron overlap.

- ``01-unchanged-share``: the paper's joint criterion, held against :func:`mdrl_lib.edits.paper_criterion_table`
  (the two checkpoints written as small safetensors files in a temporary folder).
- ``01-top-jaccard``: the Jaccard index of two experts' top neurons, held against
  :func:`mdrl_lib.edits.jaccard_matrix`.
"""
from __future__ import annotations

from mdrl_lib.exercises.core import Case, Exercise

NOTEBOOK = "01_sparse_edits"


def _edit(seed: int, shapes: dict, moves: tuple[float, ...], tiny_share: float, zero_share: float):
    """A base and an edited copy: weights about 0.02 in size, some tiny (the relative test bites) and some 0;
    each entry moved by one of ``moves`` (times a random sign)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    before, after = {}, {}
    for name, shape in shapes.items():
        x = 0.02 * torch.randn(shape, generator=generator)
        draw = torch.rand(shape, generator=generator)
        x = torch.where(draw < tiny_share, x * 1e-4, x)
        x = torch.where(draw > 1 - zero_share, torch.zeros_like(x), x)
        choice = torch.randint(len(moves), shape, generator=generator)
        sign = torch.where(torch.rand(shape, generator=generator) < 0.5, -1.0, 1.0)
        move = torch.tensor(moves, dtype=torch.float32)[choice] * sign
        before[name], after[name] = x.float(), (x + move).float()
    return before, after


def _unchanged_cases() -> list[Case]:
    import tempfile
    from pathlib import Path

    from safetensors.torch import save_file

    from mdrl_lib import edits

    settings = (
        ("one tensor, moves of 0, 3e-8 and 3e-6", 0, {"model.layers.0.mlp.up_proj.weight": (6, 5)},
         (0.0, 3e-8, 3e-6), 0.2, 0.1, {}),
        ("three tensors, a fifth of the weights tiny", 1,
         {"model.embed_tokens.weight": (7, 4), "model.layers.0.mlp.down_proj.weight": (4, 6),
          "model.norm.weight": (4,)},
         (0.0, 5e-8, 2e-7, 1e-5), 0.2, 0.15, {}),
        ("zeros that stay zero and zeros that move", 2, {"w": (20,)}, (0.0, 4e-8), 0.0, 0.5, {}),
        ("the paper's thresholds moved: abs_tol 1e-6, rel_tol 1e-2", 3, {"a": (5, 5), "b": (9,)},
         (0.0, 5e-8, 5e-7, 5e-6), 0.2, 0.1, {"abs_tol": 1e-6, "rel_tol": 1e-2}),
    )
    out = []
    with tempfile.TemporaryDirectory() as folder:
        for label, seed, shapes, moves, tiny, zero, tolerances in settings:
            before, after = _edit(seed, shapes, moves, tiny, zero)
            paths = [Path(folder) / f"{seed}-{side}.safetensors" for side in ("before", "after")]
            for path, tensors in zip(paths, (before, after)):
                save_file({n: t.contiguous() for n, t in tensors.items()}, str(path))
            table = edits.paper_criterion_table(paths[0], paths[1], precisions=("fp32",), **tolerances)
            out.append(Case(label, (before, after), float(table["share"].iloc[0]), kwargs=tolerances))
    return out


def _magnitudes(seed: int, layers: int, neurons: int, scale_last: float = 1.0):
    import torch

    generator = torch.Generator().manual_seed(seed)
    out = {f"model.layers.{i}": torch.rand(neurons, generator=generator) for i in range(layers)}
    out[f"model.layers.{layers - 1}"] = out[f"model.layers.{layers - 1}"] * scale_last
    return out


def _jaccard_cases() -> list[Case]:
    from mdrl_lib import edits

    a = _magnitudes(0, 2, 10)
    noise = _magnitudes(1, 2, 10)
    b = {k: v + 0.3 * noise[k] for k, v in a.items()}
    loud = _magnitudes(2, 2, 10, scale_last=5.0)
    quiet = _magnitudes(3, 2, 10, scale_last=5.0)
    settings = (
        ("an expert against itself, top 20%", a, a, 0.2),
        ("two related experts, two layers of 10 neurons, top 20%", a, b, 0.2),
        ("two loosely related experts, top 50%", a, {k: v + noise[k] for k, v in a.items()}, 0.5),
        ("two unrelated experts, top 30%", a, _magnitudes(4, 2, 10), 0.3),
        ("the second layer moves 5x more in both: the top set is taken across layers, not per layer",
         loud, quiet, 0.25),
        ("three layers of 8 neurons, top 1 in 24 (k = 1)", _magnitudes(5, 3, 8), _magnitudes(6, 3, 8), 1 / 24),
        ("opposite orders: a's smallest are b's largest, top 50%", a, {k: 1 - v for k, v in a.items()}, 0.5),
    )
    out = []
    for label, first, second, fraction in settings:
        matrix = edits.jaccard_matrix({"a": first, "b": second}, fraction)
        out.append(Case(label, (first, second, fraction), float(matrix.loc["a", "b"])))
    return out


EXERCISES = (
    Exercise(
        key="01-unchanged-share", notebook=NOTEBOOK, title="C1's unchanged share of an edit",
        objective="Compute the share of weights an edit leaves unchanged by the paper's joint criterion, the number "
                  "C1 is judged on: |delta| below an absolute threshold and, relative to the weight, below a "
                  "relative one.",
        difficulty=1, importance="core", minutes=10,
        hint="For every entry of every tensor, delta = |after - before|. It is unchanged when delta < abs_tol AND "
             "delta / |before| < rel_tol; an entry that is 0 before and after counts as unchanged (0/0), and one "
             "that moves away from 0 is changed. Add up the unchanged entries over all tensors and divide by all "
             "entries.",
        function="my_unchanged_share", compared_with="mdrl_lib.edits.paper_criterion_table",
        cases=_unchanged_cases),
    Exercise(
        key="01-top-jaccard", notebook=NOTEBOOK, title="C2's top-neuron Jaccard",
        objective="Compute the overlap of two experts' top-k neurons: rank every neuron of every layer together by "
                  "edit magnitude, keep the top fraction, and take the Jaccard index |A ∩ B| / |A ∪ B| of the two "
                  "sets. C2 says these overlap weakly across domains.",
        difficulty=2, importance="core", minutes=15,
        hint="A neuron is a (layer, index) pair. Put all layers' magnitudes together, take k = max(1, "
             "round(fraction * total neurons)) of the largest (across layers, not k per layer), the same k for "
             "both experts, then Jaccard = shared / (2k - shared).",
        function="my_top_jaccard", compared_with="mdrl_lib.edits.jaccard_matrix",
        cases=_jaccard_cases),
)
