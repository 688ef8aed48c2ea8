"""How much RL changes a model, and where: deltas between two checkpoints, streamed tensor by tensor.

Introduced in notebook ``01_sparse_edits`` (claims C1 and C2). Checkpoints are read with
``safetensors.safe_open`` one tensor at a time, so memory stays near the largest pair of tensors
however big the model is.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from safetensors import safe_open

ABS_TOL = 1e-7
REL_TOL = 1e-3
_MLP = re.compile(r"^(?P<layer>.*\.layers\.\d+)\.mlp\.(?P<proj>gate_proj|up_proj|down_proj)\.weight$")


@dataclass(frozen=True)
class SparsityReport:
    """Counts over all entries of two checkpoints (C1): the share unchanged by each criterion."""

    entries: int
    below_abs: int
    below_rel: int
    exactly_equal: int

    @property
    def share_below_abs(self) -> float:
        return self.below_abs / self.entries

    @property
    def share_below_rel(self) -> float:
        return self.below_rel / self.entries

    @property
    def share_equal(self) -> float:
        return self.exactly_equal / self.entries


def checkpoint_file(path: str | Path) -> Path:
    """The safetensors file of a checkpoint directory (or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no safetensors checkpoint at {path}")
    return path


def paired_tensors(before: str | Path, after: str | Path, dtype: torch.dtype | None = None
                   ) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, before, after) for every tensor both checkpoints hold, one pair at a time, as fp32;
    with ``dtype`` (e.g. torch.bfloat16) both are first rounded to that precision."""
    with safe_open(str(checkpoint_file(before)), "pt") as a, safe_open(str(checkpoint_file(after)), "pt") as b:
        names = sorted(set(a.keys()) & set(b.keys()))
        if not names:
            raise ValueError(f"{before} and {after} share no tensor names")
        for name in names:
            x, y = a.get_tensor(name), b.get_tensor(name)
            if x.shape != y.shape:
                raise ValueError(f"tensor {name} has shape {tuple(x.shape)} before and {tuple(y.shape)} after")
            if dtype is not None:
                x, y = x.to(dtype), y.to(dtype)
            yield name, x.float(), y.float()


def sparsity(before: str | Path, after: str | Path, dtype: torch.dtype | None = None,
             abs_tol: float = ABS_TOL, rel_tol: float = REL_TOL) -> SparsityReport:
    """C1: how many entries change by less than ``abs_tol`` absolutely, by less than ``rel_tol``
    relative to ``|before|``, and not at all; optionally after rounding both to ``dtype``."""
    entries = below_abs = below_rel = equal = 0
    for _, x, y in paired_tensors(before, after, dtype):
        delta = (y - x).abs()
        entries += delta.numel()
        below_abs += int((delta < abs_tol).sum())
        below_rel += int((delta < rel_tol * x.abs()).sum() + ((delta == 0) & (x == 0)).sum())
        equal += int((delta == 0).sum())
    return SparsityReport(entries, below_abs, below_rel, equal)


def neuron_edit_magnitude(before: str | Path, after: str | Path) -> dict[str, torch.Tensor]:
    """C2: per MLP layer, each intermediate channel's edit magnitude, shape (intermediate_size,):
    the L2 norm of the changes of its gate and up projection rows and its down projection column."""
    squared: dict[str, torch.Tensor] = {}
    for name, x, y in paired_tensors(before, after):
        match = _MLP.match(name)
        if not match:
            continue
        delta_sq = (y - x).pow(2)
        per_channel = delta_sq.sum(dim=0) if match["proj"] == "down_proj" else delta_sq.sum(dim=1)
        layer = match["layer"]
        squared[layer] = squared.get(layer, 0) + per_channel
    if not squared:
        raise ValueError("no MLP gate/up/down projection weights found (expected names like "
                         "'model.layers.0.mlp.gate_proj.weight')")
    return {layer: total.sqrt() for layer, total in sorted(squared.items())}


def top_neurons(magnitudes: dict[str, torch.Tensor], fraction: float = 0.1) -> set[tuple[str, int]]:
    """The top ``fraction`` of (layer, channel) neurons by edit magnitude across all layers (ties by order)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    keys = [(layer, i) for layer, values in magnitudes.items() for i in range(values.numel())]
    values = torch.cat([v.flatten() for v in magnitudes.values()])
    k = max(1, round(fraction * len(keys)))
    order = torch.argsort(values, descending=True, stable=True)[:k]
    return {keys[i] for i in order.tolist()}


def jaccard(a: set, b: set) -> float:
    """|a ∩ b| / |a ∪ b| (1.0 for two empty sets)."""
    union = a | b
    return len(a & b) / len(union) if union else 1.0
