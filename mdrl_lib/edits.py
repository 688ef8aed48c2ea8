"""How much RL changes a model, and where: deltas between two checkpoints, streamed tensor by tensor.

Introduced in notebook ``01_sparse_edits`` (claims C1 and C2). Checkpoints are read straight from
their safetensors files: the header gives each tensor's byte range, and each tensor (or block of
rows of a large one) is read with ``os.preadv`` into a buffer reused for the whole pass. Nothing is
memory-mapped, so the process holds only those buffers, not the pages of the files it has read,
however big the model is.

Which files to compare is the caller's choice, by path. A stage trained with precision ``bf16``
(see :func:`mdrl_lib.training.save_stage`) holds its fp32 master in ``master_fp32.safetensors`` and
the bf16-rounded checkpoint in ``model.safetensors``: pass the master file for the fp32 comparison;
precision ``"bf16"`` rounds both sides to bf16 first, which for such a stage's master gives exactly
its ``model.safetensors``.

Notebook 01's analyses are cached in the kit's store like checkpoints, keyed by the checkpoints they
compare: :class:`EditSparsity` (C1's tables), :class:`DenseControlSparsity` (the same for a dense edit
of the same size), :class:`NeuronMagnitudes` (C2) and :class:`RoundedScores` (a model's held-out
results with its weights rounded to bf16).
"""
from __future__ import annotations

import json
import math
import os
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from mdrl_lib.specs import Scores, Spec

ABS_TOL = 1e-7
REL_TOL = 1e-3
ABS_SWEEP = (1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3)
REL_SWEEP = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
PRECISIONS = ("fp32", "bf16")
CRITERIA = ("equal", "abs", "rel")
GROUPINGS = ("tensor", "module", "layer")
# Module types in the order tables list them; other leaf names follow alphabetically.
MODULE_ORDER = ("embed_tokens", "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
                "norm", "lm_head")
CHUNK_ELEMENTS = 1 << 23  # a tensor up to this size is read whole; larger ones in blocks of rows
BLOCK_ELEMENTS = 1 << 16  # the counting works on blocks this small, so its temporaries stay in cache

_MLP = re.compile(r"^(?P<layer>.*\.layers\.\d+)\.mlp\.(?P<proj>gate_proj|up_proj|down_proj)\.weight$")
_NO_MLP = "no MLP gate/up/down projection weights found (expected names like 'model.layers.0.mlp.gate_proj.weight')"
_LAYER = re.compile(r"\.layers\.(\d+)\.")
_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
             "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


# ----------------------------------------------------------------------------------------------
# Reading safetensors files without memory-mapping them


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lies in a safetensors file: dtype code (``F32``, ``BF16``, ...), shape and
    the absolute byte offset and length of its data."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype in _DTYPES

    @property
    def rows(self) -> int:
        """Length of the leading dimension (1 for a scalar): large tensors are read in blocks of rows."""
        return self.shape[0] if self.shape else 1

    @property
    def row_len(self) -> int:
        return self.numel // self.rows if self.rows else 0


def checkpoint_file(path: str | Path) -> Path:
    """The safetensors file of a checkpoint directory (its ``model.safetensors``) or the file itself."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no safetensors checkpoint at {path}")
    return path


def safetensors_index(path: str | Path) -> dict[str, TensorInfo]:
    """Every tensor of a safetensors file (or checkpoint directory) by name, from the header alone."""
    path = checkpoint_file(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path} is not a safetensors file (shorter than its 8-byte header length)")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > size - 8:
            raise ValueError(f"{path} is not a safetensors file (header length {header_len} past the end)")
        header = json.loads(f.read(header_len))
    data_start = 8 + header_len
    index = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        shape = tuple(int(s) for s in entry["shape"])
        if entry["dtype"] in _ITEMSIZE and end - begin != math.prod(shape) * _ITEMSIZE[entry["dtype"]]:
            raise ValueError(f"{path}: tensor {name} has {end - begin} bytes for shape {shape} {entry['dtype']}")
        if data_start + end > size:
            raise ValueError(f"{path}: tensor {name} ends past the end of the file (truncated?)")
        index[name] = TensorInfo(name, entry["dtype"], shape, data_start + begin, end - begin)
    return index


def _read_exactly(fd: int, buffer: np.ndarray, nbytes: int, offset: int) -> None:
    view = memoryview(buffer)[:nbytes]
    done = 0
    while done < nbytes:
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            raise OSError(f"unexpected end of file reading {nbytes} bytes at offset {offset}")
        done += got


def _row_blocks(info: TensorInfo, chunk_elements: int) -> list[tuple[int, int]]:
    """(first row, rows) blocks covering a tensor, whole when it has at most ``chunk_elements`` entries."""
    rows = info.rows
    if info.numel <= chunk_elements or rows <= 1:
        return [(0, rows)]
    step = max(1, chunk_elements // max(info.row_len, 1))
    return [(r, min(step, rows - r)) for r in range(0, rows, step)]


def _raw_view(buffer: torch.Tensor, dtype: str, count: int) -> torch.Tensor:
    itemsize = _ITEMSIZE[dtype]
    return buffer[: count * itemsize].view(_DTYPES[dtype])


# ----------------------------------------------------------------------------------------------
# Names


def module_type(name: str) -> str:
    """The kind of module a parameter belongs to: ``q_proj`` ... ``down_proj``, ``embed_tokens``,
    ``lm_head``, ``norm`` (every norm), else the name's last component before weight/bias."""
    parts = name.split(".")
    leaf = parts[-2] if len(parts) > 1 and parts[-1] in ("weight", "bias") else parts[-1]
    return "norm" if "norm" in leaf else leaf


def layer_index(name: str) -> int | None:
    """The decoder layer a parameter belongs to (``model.layers.3.…`` -> 3), None outside the layers."""
    match = _LAYER.search(name)
    return int(match.group(1)) if match else None


def _layer_key(layer: str) -> tuple[str, int]:
    match = re.search(r"(\d+)$", layer)
    return (layer[: match.start()], int(match.group(1))) if match else (layer, -1)


# ----------------------------------------------------------------------------------------------
# One streaming pass: sparsity counts and neuron edit magnitudes


@dataclass
class EditAnalysis:
    """The result of :func:`edit_analysis`: ``table``, sparsity counts as a tidy DataFrame (see
    :func:`sparsity_table`), and ``magnitudes``, precision -> MLP layer -> (intermediate_size,)
    neuron edit magnitudes (empty when not asked for)."""

    table: pd.DataFrame
    magnitudes: dict[str, dict[str, torch.Tensor]]


def _check_precisions(precisions: Sequence[str]) -> tuple[str, ...]:
    if isinstance(precisions, str):
        precisions = (precisions,)
    precisions = tuple(precisions)
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown or not precisions:
        raise ValueError(f"unknown precision(s) {unknown or precisions}; valid: {', '.join(PRECISIONS)}")
    if len(set(precisions)) != len(precisions):
        raise ValueError(f"precisions repeat: {precisions}")
    return precisions


def _check_tolerances(values: Iterable[float], what: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    if any(not (v > 0 and math.isfinite(v)) for v in values):
        raise ValueError(f"{what} must be positive finite numbers, got {values}")
    return values


def _plan(before: Path, after: Path, precisions: tuple[str, ...], mlp_only: bool
          ) -> tuple[list[tuple[TensorInfo, TensorInfo]], list[str]]:
    """The tensor pairs to compare, in the order they lie in ``before``; every check before any work."""
    index_a, index_b = safetensors_index(before), safetensors_index(after)
    only_a, only_b = sorted(set(index_a) - set(index_b)), sorted(set(index_b) - set(index_a))
    if only_a or only_b:
        warnings.warn(f"tensors only in {before.name}: {only_a[:5]}{'...' if len(only_a) > 5 else ''}; "
                      f"only in {after.name}: {only_b[:5]}{'...' if len(only_b) > 5 else ''}; comparing the rest",
                      stacklevel=3)
    names = sorted(set(index_a) & set(index_b))
    if not names:
        raise ValueError(f"{before} and {after} share no tensor names")
    skipped, pairs = [], []
    for name in names:
        a, b = index_a[name], index_b[name]
        if a.shape != b.shape:
            raise ValueError(f"tensor {name} has shape {a.shape} before and {b.shape} after")
        if not (a.is_float and b.is_float):
            skipped.append(name)
            continue
        if "fp32" in precisions and a.dtype != b.dtype:
            raise ValueError(
                f"tensor {name} is stored as {a.dtype} in {before} but {b.dtype} in {after}: comparing them as "
                f"stored ('fp32') would count the rounding as an edit. Pass a file of the same precision (a bf16 "
                f"stage keeps its fp32 master in master_fp32.safetensors) or ask for precisions=('bf16',)")
        if mlp_only and not _MLP.match(name):
            continue
        pairs.append((a, b))
    if not pairs and mlp_only:
        raise ValueError(_NO_MLP)
    if not pairs:
        raise ValueError(f"{before} and {after} share no float tensors (skipped: {skipped[:5]})")
    pairs.sort(key=lambda pair: pair[0].offset)
    return pairs, skipped


class _Workspace:
    """Buffers reused for the whole pass: raw bytes of both files, fp32 copies, |delta| and block temporaries."""

    def __init__(self, chunk: int, itemsize_a: int, itemsize_b: int, block: int):
        self.raw_a = torch.empty(chunk * itemsize_a, dtype=torch.uint8)
        self.raw_b = torch.empty(chunk * itemsize_b, dtype=torch.uint8)
        self.raw_a_np, self.raw_b_np = self.raw_a.numpy(), self.raw_b.numpy()
        self.delta = torch.empty(chunk, dtype=torch.float32)
        self.delta_np = self.delta.numpy()
        block = min(block, chunk)
        self.x = torch.empty(block, dtype=torch.float32)
        self.y = torch.empty(block, dtype=torch.float32)
        self.x_half = torch.empty(block, dtype=torch.bfloat16)
        self.y_half = torch.empty(block, dtype=torch.bfloat16)
        self.x_np, self.y_np = self.x.numpy(), self.y.numpy()
        self.magnitude_x = np.empty(block, dtype=np.float32)
        self.ratio = np.empty(block, dtype=np.float32)
        self.mask = np.empty(block, dtype=bool)
        self.mask2 = np.empty(block, dtype=bool)
        self.block = block


def _as_float32(raw: torch.Tensor, precision: str, out: torch.Tensor, out_np: np.ndarray,
                half: torch.Tensor) -> np.ndarray:
    """``raw`` (any float dtype) as an fp32 numpy array, rounded to bf16 first for precision bf16."""
    n = raw.numel()
    if precision == "bf16" and raw.dtype != torch.bfloat16:
        half[:n].copy_(raw)
        out[:n].copy_(half[:n])
        return out_np[:n]
    if raw.dtype == torch.float32:
        return raw.numpy()
    out[:n].copy_(raw)
    return out_np[:n]


def _count_block(x: np.ndarray, y: np.ndarray, delta: np.ndarray, ws: _Workspace, counts: np.ndarray,
                 abs_tols: np.ndarray, rel_tols: np.ndarray, sparsity: bool) -> None:
    """Write |y - x| into ``delta`` and add this block's unchanged counts to ``counts`` (equal, the
    absolute tolerances, the relative ones)."""
    np.subtract(y, x, out=delta)
    np.abs(delta, out=delta)
    if not sparsity:
        return
    n = len(x)
    mask, ratio, magnitude_x = ws.mask[:n], ws.ratio[:n], ws.magnitude_x[:n]
    counts[0] += np.count_nonzero(np.equal(delta, 0, out=mask))
    for j, tol in enumerate(abs_tols, start=1):
        counts[j] += np.count_nonzero(np.less(delta, tol, out=mask))
    if len(rel_tols):
        np.abs(x, out=magnitude_x)
        with np.errstate(divide="ignore", invalid="ignore"):
            np.divide(delta, magnitude_x, out=ratio)  # d/0 = inf (changed); 0/0 = nan, counted below
        first = 1 + len(abs_tols)
        for j, tol in enumerate(rel_tols, start=first):
            counts[j] += np.count_nonzero(np.less(ratio, tol, out=mask))
        zeros = np.count_nonzero(np.equal(magnitude_x, 0, out=mask))
        if zeros:  # a zero that stays zero is unchanged under every relative tolerance
            np.equal(delta, 0, out=ws.mask2[:n])
            counts[first:] += np.count_nonzero(np.logical_and(mask, ws.mask2[:n], out=mask))


def edit_analysis(before: str | Path, after: str | Path, *, precisions: Sequence[str] = PRECISIONS,
                  abs_tols: Iterable[float] = ABS_SWEEP, rel_tols: Iterable[float] = REL_SWEEP,
                  by: Sequence[str] = ("module", "layer"), sparsity: bool = True, neurons: bool = True,
                  chunk_elements: int = CHUNK_ELEMENTS, block_elements: int = BLOCK_ELEMENTS) -> EditAnalysis:
    """C1 and C2 in one streaming pass over two checkpoints (files or directories).

    For each ``precision`` (``"fp32"``: values as stored, compared in fp32; ``"bf16"``: both sides
    rounded to bf16 first) it counts, per tensor, the entries unchanged by each criterion:
    ``equal`` (delta == 0), ``abs`` (|delta| < t for each t in ``abs_tols``) and ``rel``
    (|delta| / |before| < t for each t in ``rel_tols``; a zero that stays zero counts as unchanged).
    Deltas and tolerances are compared in fp32 (the table shows the tolerances as given). With
    ``neurons`` it also returns each MLP neuron's edit magnitude (see :func:`neuron_edit_magnitude`)
    per precision. ``by`` sets the table's grouping (see :func:`aggregate_sparsity`).

    Memory: a few buffers of ``chunk_elements`` entries (a tensor larger than that is read in blocks
    of rows; a down projection so read sums its columns blockwise, which can differ from a
    whole-tensor sum in the last bit); the counting runs on ``block_elements`` at a time. The
    result does not depend on either otherwise. Introduced in ``01_sparse_edits``.
    """
    precisions = _check_precisions(precisions)
    abs_tols, rel_tols = _check_tolerances(abs_tols, "abs_tols"), _check_tolerances(rel_tols, "rel_tols")
    abs_array, rel_array = np.array(abs_tols, dtype=np.float32), np.array(rel_tols, dtype=np.float32)
    by = _check_by(by)
    if not (sparsity or neurons):
        raise ValueError("nothing to compute: set sparsity or neurons")
    if chunk_elements < 1 or block_elements < 1:
        raise ValueError("chunk_elements and block_elements must be positive")
    before, after = checkpoint_file(before), checkpoint_file(after)
    pairs, skipped = _plan(before, after, precisions, mlp_only=not sparsity)
    if neurons and not any(_MLP.match(a.name) for a, _ in pairs):
        raise ValueError(_NO_MLP)

    blocks = {a.name: _row_blocks(a, chunk_elements) for a, _ in pairs}
    chunk = max(1, max(rows * a.row_len for a, _ in pairs for _, rows in blocks[a.name]))
    ws = _Workspace(chunk, max(_ITEMSIZE[a.dtype] for a, _ in pairs), max(_ITEMSIZE[b.dtype] for _, b in pairs),
                    block_elements)
    n_criteria = 1 + len(abs_array) + len(rel_array)
    counts = {a.name: np.zeros((len(precisions), n_criteria), dtype=np.int64) for a, _ in pairs}
    squares: dict[str, dict[str, dict[str, torch.Tensor]]] = {p: {} for p in precisions}

    fd_a, fd_b = os.open(before, os.O_RDONLY), os.open(after, os.O_RDONLY)
    try:
        for a, b in pairs:
            row_len = a.row_len
            mlp = _MLP.match(a.name) if neurons else None
            for first_row, rows in blocks[a.name]:
                n = rows * row_len
                if n == 0:
                    continue
                for fd, info, raw in ((fd_a, a, ws.raw_a_np), (fd_b, b, ws.raw_b_np)):
                    itemsize = _ITEMSIZE[info.dtype]
                    _read_exactly(fd, raw, n * itemsize, info.offset + first_row * row_len * itemsize)
                raw_x, raw_y = _raw_view(ws.raw_a, a.dtype, n), _raw_view(ws.raw_b, b.dtype, n)
                for p, precision in enumerate(precisions):
                    row_counts = counts[a.name][p]
                    for start in range(0, n, ws.block):
                        stop = min(start + ws.block, n)
                        x = _as_float32(raw_x[start:stop], precision, ws.x, ws.x_np, ws.x_half)
                        y = _as_float32(raw_y[start:stop], precision, ws.y, ws.y_np, ws.y_half)
                        _count_block(x, y, ws.delta_np[start:stop], ws, row_counts, abs_array, rel_array, sparsity)
                    if mlp:
                        _add_neuron_squares(squares[precision], mlp, ws.delta[:n].view(rows, row_len),
                                            first_row, a.rows)
    finally:
        os.close(fd_a)
        os.close(fd_b)

    table = _counts_table(pairs, counts, precisions, abs_tols, rel_tols) if sparsity else pd.DataFrame()
    if sparsity:
        table = aggregate_sparsity(table, by)
        table.attrs["skipped"] = skipped
    magnitudes = {p: _magnitudes(squares[p]) for p in precisions} if neurons else {}
    return EditAnalysis(table, magnitudes)


def _add_neuron_squares(layers: dict, match: re.Match, delta: torch.Tensor, first_row: int, rows_total: int
                        ) -> None:
    """Accumulate squared changes per intermediate channel: gate/up rows, down columns. Squares
    ``delta`` in place: a fresh temporary per tensor would let the allocator's heap grow."""
    parts = layers.setdefault(match["layer"], {})
    proj = match["proj"]
    squared = delta.mul_(delta)
    if proj == "down_proj":
        column_sums = squared.sum(dim=0)
        parts[proj] = column_sums if proj not in parts else parts[proj] + column_sums
    else:
        if proj not in parts:
            parts[proj] = torch.empty(rows_total, dtype=torch.float32)
        parts[proj][first_row:first_row + delta.shape[0]] = squared.sum(dim=1)


def _magnitudes(squares: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    out = {}
    for layer in sorted(squares, key=_layer_key):
        parts = squares[layer]
        missing = [p for p in ("gate_proj", "up_proj", "down_proj") if p not in parts]
        if missing:
            raise ValueError(f"layer {layer} lacks MLP weights {missing}")
        out[layer] = (parts["gate_proj"] + parts["up_proj"] + parts["down_proj"]).sqrt()
    return out


def _counts_table(pairs, counts, precisions, abs_tols, rel_tols) -> pd.DataFrame:
    criteria = [("equal", 0.0)] + [("abs", t) for t in abs_tols] + [("rel", t) for t in rel_tols]
    rows = []
    for a, _ in pairs:
        module, layer = module_type(a.name), layer_index(a.name)
        for p, precision in enumerate(precisions):
            for j, (criterion, threshold) in enumerate(criteria):
                rows.append((a.name, module, layer, precision, criterion, threshold, a.numel,
                             int(counts[a.name][p, j])))
    table = pd.DataFrame(rows, columns=["tensor", "module", "layer", "precision", "criterion", "threshold",
                                        "entries", "unchanged"])
    table["layer"] = table["layer"].astype("Int64")
    return table


def _check_by(by: Sequence[str]) -> tuple[str, ...]:
    if isinstance(by, str):
        by = (by,)
    by = tuple(by)
    unknown = [g for g in by if g not in GROUPINGS]
    if unknown:
        raise ValueError(f"unknown grouping(s) {unknown}; valid: {', '.join(GROUPINGS)} (or () for overall)")
    return by


def aggregate_sparsity(table: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """Sum a sparsity table's counts over groups: ``by`` a subset of ("tensor", "module", "layer"),
    () for the whole model. Columns: precision, the ``by`` columns, criterion, threshold, entries,
    unchanged, share (= unchanged / entries). Introduced in ``01_sparse_edits``."""
    by = _check_by(by)
    if "tensor" in by:
        by = tuple(dict.fromkeys(("tensor", "module", "layer") + by))
    missing = [c for c in ("precision", *by, "criterion", "threshold", "entries", "unchanged") if c not in table]
    if missing:
        raise ValueError(f"table lacks columns {missing} (aggregate a finer table: by=('tensor',) keeps everything)")
    keys = ["precision", *by, "criterion", "threshold"]
    out = table.groupby(keys, sort=False, dropna=False)[["entries", "unchanged"]].sum().reset_index()
    out["share"] = out["unchanged"] / out["entries"]
    order = {"precision": {p: i for i, p in enumerate(PRECISIONS)}, "criterion": {c: i for i, c in enumerate(CRITERIA)},
             "module": {m: i for i, m in enumerate(MODULE_ORDER)}}
    sort_keys = [k for k in ("precision", "module", "layer", "tensor", "criterion", "threshold") if k in out]

    def key(column: pd.Series) -> pd.Series:
        if column.name in order:
            known = order[column.name]
            return column.map(lambda v: (known.get(v, len(known)), str(v)))
        return column

    out = out.sort_values(sort_keys, key=key, na_position="last", kind="stable").reset_index(drop=True)
    out.attrs = dict(table.attrs)
    return out


def sparsity_table(before: str | Path, after: str | Path, *, precisions: Sequence[str] = PRECISIONS,
                   abs_tols: Iterable[float] = ABS_SWEEP, rel_tols: Iterable[float] = REL_SWEEP,
                   by: Sequence[str] = ("module", "layer"), chunk_elements: int = CHUNK_ELEMENTS) -> pd.DataFrame:
    """C1 as a tidy table, one streaming pass: for each precision, group (``by``: any of tensor,
    module, layer; () for the whole model), criterion (equal, abs, rel) and threshold, the number of
    entries and of unchanged ones and their share. See :func:`edit_analysis` for the criteria.
    Introduced in ``01_sparse_edits``."""
    return edit_analysis(before, after, precisions=precisions, abs_tols=abs_tols, rel_tols=rel_tols, by=by,
                         neurons=False, chunk_elements=chunk_elements).table


# ----------------------------------------------------------------------------------------------
# The original two-tolerance summary


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


def _precision_of(dtype: torch.dtype | None) -> str:
    if dtype is None or dtype == torch.float32:
        return "fp32"
    if dtype == torch.bfloat16:
        return "bf16"
    raise ValueError(f"dtype must be None, torch.float32 or torch.bfloat16, got {dtype}")


def sparsity(before: str | Path, after: str | Path, dtype: torch.dtype | None = None,
             abs_tol: float = ABS_TOL, rel_tol: float = REL_TOL) -> SparsityReport:
    """C1 at one pair of tolerances over the whole model: entries changing by less than ``abs_tol``,
    by less than ``rel_tol`` relative to ``|before|``, and not at all; with ``dtype=torch.bfloat16``
    both sides are rounded to bf16 first. Introduced in ``01_sparse_edits``."""
    table = sparsity_table(before, after, precisions=(_precision_of(dtype),), abs_tols=(abs_tol,),
                           rel_tols=(rel_tol,), by=())
    unchanged = dict(zip(table["criterion"], table["unchanged"]))
    return SparsityReport(int(table["entries"].iloc[0]), int(unchanged["abs"]), int(unchanged["rel"]),
                          int(unchanged["equal"]))


def paired_tensors(before: str | Path, after: str | Path, dtype: torch.dtype | None = None
                   ) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, before, after) for every float tensor both checkpoints hold, one pair at a time, as
    fp32 (fresh tensors); with ``dtype=torch.bfloat16`` both are first rounded to bf16."""
    precision = _precision_of(dtype)
    before, after = checkpoint_file(before), checkpoint_file(after)
    pairs, _ = _plan(before, after, (precision,), mlp_only=False)
    with open(before, "rb", buffering=0) as fa, open(after, "rb", buffering=0) as fb:
        for a, b in sorted(pairs, key=lambda pair: pair[0].name):
            tensors = []
            for f, info in ((fa, a), (fb, b)):
                raw = torch.empty(info.nbytes, dtype=torch.uint8)
                _read_exactly(f.fileno(), raw.numpy(), info.nbytes, info.offset)
                t = raw.view(_DTYPES[info.dtype]).reshape(info.shape)
                if precision == "bf16":
                    t = t.to(torch.bfloat16)
                tensors.append(t.float())
            yield a.name, tensors[0], tensors[1]


# ----------------------------------------------------------------------------------------------
# C2: neuron edit magnitudes, top neurons and their overlap


def neuron_edit_magnitude(before: str | Path, after: str | Path, precision: str = "fp32",
                          chunk_elements: int = CHUNK_ELEMENTS) -> dict[str, torch.Tensor]:
    """C2: per MLP layer (in layer order), each intermediate channel's edit magnitude, shape
    (intermediate_size,): the L2 norm of the changes of its gate and up projection rows and its
    down projection column (``precision`` as in :func:`edit_analysis`). Reads only MLP weights.
    Introduced in ``01_sparse_edits``."""
    precision = _check_precisions((precision,))[0]
    return edit_analysis(before, after, precisions=(precision,), sparsity=False, neurons=True,
                         chunk_elements=chunk_elements).magnitudes[precision]


def _flatten(magnitudes: Mapping[str, torch.Tensor]) -> torch.Tensor:
    if not magnitudes:
        raise ValueError("no magnitudes given")
    return torch.cat([torch.as_tensor(v).flatten().float() for v in magnitudes.values()])


def _top_k(total: int, fraction: float) -> int:
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return max(1, round(fraction * total))


def top_mask(magnitudes: Mapping[str, torch.Tensor], fraction: float = 0.1) -> torch.Tensor:
    """Boolean mask over all neurons (layers in the mapping's order, channels in order), shape
    (total,): the ``k = round(fraction * total)`` (at least 1) largest edit magnitudes. Ties are
    broken by that order: among equal magnitudes the earlier neuron is taken."""
    values = _flatten(magnitudes)
    k = _top_k(values.numel(), fraction)
    mask = torch.zeros(values.numel(), dtype=torch.bool)
    mask[torch.argsort(values, descending=True, stable=True)[:k]] = True
    return mask


def top_neurons(magnitudes: Mapping[str, torch.Tensor], fraction: float = 0.1) -> set[tuple[str, int]]:
    """The top ``fraction`` of (layer, channel) neurons by edit magnitude across all layers, as in
    :func:`top_mask` (ties by order). Introduced in ``01_sparse_edits``."""
    keys = [(layer, i) for layer, values in magnitudes.items() for i in range(torch.as_tensor(values).numel())]
    return {keys[i] for i in torch.nonzero(top_mask(magnitudes, fraction)).flatten().tolist()}


def jaccard(a: set, b: set) -> float:
    """|a ∩ b| / |a ∪ b| (1.0 for two empty sets)."""
    union = a | b
    return len(a & b) / len(union) if union else 1.0


def _layout(magnitudes_by_name: Mapping[str, Mapping[str, torch.Tensor]]) -> list[tuple[str, int]]:
    if len(magnitudes_by_name) < 1:
        raise ValueError("magnitudes_by_name is empty")
    layouts = {name: [(layer, torch.as_tensor(v).numel()) for layer, v in m.items()]
               for name, m in magnitudes_by_name.items()}
    first_name, first = next(iter(layouts.items()))
    for name, layout in layouts.items():
        if layout != first:
            raise ValueError(f"experts {first_name!r} and {name!r} have different neuron layouts (layers and "
                             f"sizes must match, in the same order): {first[:3]}... vs {layout[:3]}...")
    return first


def _cut_ties(values: torch.Tensor, mask: torch.Tensor) -> int:
    """Neurons left out of the top set although their magnitude equals the smallest one taken."""
    cut = values[mask].min()
    return int(((values == cut) & ~mask).sum())


def jaccard_matrix(magnitudes_by_name: Mapping[str, Mapping[str, torch.Tensor]], fraction: float = 0.1
                   ) -> pd.DataFrame:
    """C2: the Jaccard index of the top-``fraction`` neuron sets of every pair of experts (name ->
    magnitudes as from :func:`neuron_edit_magnitude`), a square DataFrame indexed both ways by name.
    ``attrs``: ``neurons`` (N), ``k``, ``random_expectation`` (:func:`random_jaccard_expectation`)
    and ``cut_ties`` (name -> neurons tied with the cut but left out: many ties, e.g. magnitudes
    exactly 0 in bf16, make the sets partly arbitrary). Introduced in ``01_sparse_edits``."""
    layout = _layout(magnitudes_by_name)
    names = list(magnitudes_by_name)
    values = {n: _flatten(magnitudes_by_name[n]) for n in names}
    masks = {n: top_mask(magnitudes_by_name[n], fraction) for n in names}
    total = sum(size for _, size in layout)
    k = _top_k(total, fraction)
    matrix = np.empty((len(names), len(names)))
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            inter = int((masks[a] & masks[b]).sum())
            matrix[i, j] = inter / (2 * k - inter)
    out = pd.DataFrame(matrix, index=pd.Index(names, name="expert"), columns=pd.Index(names, name="expert"))
    out.attrs.update(neurons=total, k=k, fraction=fraction, random_expectation=random_jaccard_expectation(total, k),
                     cut_ties={n: _cut_ties(values[n], masks[n]) for n in names})
    return out


def jaccard_table(magnitudes_by_name: Mapping[str, Mapping[str, torch.Tensor]],
                  pairs: Mapping[str, Iterable[tuple[str, str]]], fraction: float = 0.1) -> pd.DataFrame:
    """Top-``fraction`` Jaccard for chosen pairs, grouped by what they stand for: ``pairs`` maps a
    reference label (e.g. "cross-domain", "same domain, two seeds") to (name, name) pairs. Tidy
    columns: reference, a, b, fraction, neurons, k, jaccard, random_expectation (two independent
    uniformly random k-sets). Introduced in ``01_sparse_edits``."""
    if isinstance(pairs, (list, tuple)):
        raise TypeError("pairs must map a reference label to (a, b) pairs, e.g. {'cross-domain': [('math', 'qa')]}")
    wanted = {n for group in pairs.values() for pair in group for n in pair}
    unknown = sorted(wanted - set(magnitudes_by_name))
    if unknown:
        raise ValueError(f"unknown expert(s) {unknown}; valid: {', '.join(magnitudes_by_name)}")
    layout = _layout(magnitudes_by_name)
    total = sum(size for _, size in layout)
    k = _top_k(total, fraction)
    expected = random_jaccard_expectation(total, k)
    masks: dict[str, torch.Tensor] = {}
    rows = []
    for reference, group in pairs.items():
        for a, b in group:
            for n in (a, b):
                if n not in masks:
                    masks[n] = top_mask(magnitudes_by_name[n], fraction)
            inter = int((masks[a] & masks[b]).sum())
            rows.append((reference, a, b, fraction, total, k, inter / (2 * k - inter), expected))
    return pd.DataFrame(rows, columns=["reference", "a", "b", "fraction", "neurons", "k", "jaccard",
                                       "random_expectation"])


# ----------------------------------------------------------------------------------------------
# The random-set reference


def _intersection_pmf(total: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Support and probabilities of |A ∩ B| for independent uniform k-subsets A, B of ``total``
    items: hypergeometric, P(i) = C(k, i) C(total - k, k - i) / C(total, k), via log-gamma."""
    if not (isinstance(total, int) and isinstance(k, int)) or isinstance(total, bool) or isinstance(k, bool):
        raise TypeError(f"total and k must be integers, got {total!r} and {k!r}")
    if not 1 <= k <= total:
        raise ValueError(f"need 1 <= k <= total, got k={k}, total={total}")

    def log_comb(n: int, r: int) -> float:
        return math.lgamma(n + 1) - math.lgamma(r + 1) - math.lgamma(n - r + 1)

    support = np.arange(max(0, 2 * k - total), k + 1)
    log_norm = log_comb(total, k)
    log_p = np.array([log_comb(k, i) + log_comb(total - k, k - i) - log_norm for i in support.tolist()])
    return support, np.exp(log_p)


def random_jaccard_expectation(total: int, k: int) -> float:
    """E[J] for two independent uniformly random k-subsets of ``total`` items:
    sum over i of P(|A ∩ B| = i) * i / (2k - i), with the hypergeometric pmf (E|A ∩ B| = k^2 / total).
    Introduced in ``01_sparse_edits`` as the chance level of C2's overlap."""
    support, pmf = _intersection_pmf(total, k)
    return float(np.sum(pmf * support / (2 * k - support)))


def random_jaccard_std(total: int, k: int) -> float:
    """The standard deviation of that Jaccard index, from the same pmf."""
    support, pmf = _intersection_pmf(total, k)
    j = support / (2 * k - support)
    mean = float(np.sum(pmf * j))
    return math.sqrt(max(float(np.sum(pmf * j * j)) - mean * mean, 0.0))


def simulate_random_jaccard(total: int, k: int, trials: int = 1000, seed: int = 0) -> np.ndarray:
    """Jaccard indices of ``trials`` pairs of independent uniformly random k-subsets of ``total``
    items, drawn with a seeded generator, shape (trials,): the check of
    :func:`random_jaccard_expectation`."""
    _intersection_pmf(total, k)  # validates
    if trials < 1:
        raise ValueError(f"trials must be positive, got {trials}")
    generator = torch.Generator().manual_seed(seed)
    out = np.empty(trials)
    batch = max(1, min(trials, (1 << 22) // total))
    for start in range(0, trials, batch):
        size = min(batch, trials - start)
        sets = []
        for _ in range(2):
            members = torch.rand(size, total, generator=generator).argsort(dim=1)[:, :k]
            mask = torch.zeros(size, total, dtype=torch.bool)
            mask.scatter_(1, members, True)
            sets.append(mask)
        inter = (sets[0] & sets[1]).sum(dim=1).double().numpy()
        out[start:start + size] = inter / (2 * k - inter)
    return out


# ----------------------------------------------------------------------------------------------
# C1 by the paper's joint criterion, and a dense edit of the same size


def paper_criterion_table(before: str | Path, after: str | Path, *, precisions: Sequence[str] = PRECISIONS,
                          abs_tol: float = ABS_TOL, rel_tol: float = REL_TOL, by: Sequence[str] = ()
                          ) -> pd.DataFrame:
    """C1 by the paper's criterion taken jointly: an entry is unchanged when |delta| < ``abs_tol``
    *and* |delta| / |before| < ``rel_tol`` (a zero that stays zero counts), compared in fp32 after
    rounding both sides to bf16 for precision ``"bf16"``. Its share lies between the ``equal``
    share and the smaller of the ``abs`` and ``rel`` shares of :func:`sparsity_table`.

    Columns: precision, the ``by`` columns (any of tensor, module, layer; () for the whole model),
    entries, unchanged, share, and ``relative_l2`` = ||delta|| / ||before|| over the group (how
    small the edit is as a whole). Reads one tensor pair at a time (:func:`paired_tensors`).
    Introduced in ``01_sparse_edits``.
    """
    rows = paper_criterion_rows(before, after, precisions=precisions, abs_tol=abs_tol, rel_tol=rel_tol)
    return aggregate_paper_criterion(rows, by)


def paper_criterion_rows(before: str | Path, after: str | Path, *, precisions: Sequence[str] = PRECISIONS,
                         abs_tol: float = ABS_TOL, rel_tol: float = REL_TOL) -> pd.DataFrame:
    """The per-tensor counts behind :func:`paper_criterion_table`, one row per precision and tensor:
    tensor, module, layer, precision, entries, unchanged, and the sums of squares ``delta_sq`` =
    ||delta||^2 and ``before_sq`` = ||before||^2 (float64). :func:`aggregate_paper_criterion` groups
    them. Introduced in ``01_sparse_edits``."""
    precisions = _check_precisions(precisions)
    abs_tol, rel_tol = _check_tolerances((abs_tol, rel_tol), "abs_tol and rel_tol")
    abs_t, rel_t = torch.tensor(abs_tol, dtype=torch.float32), torch.tensor(rel_tol, dtype=torch.float32)
    rows = []
    for precision in precisions:
        dtype = torch.bfloat16 if precision == "bf16" else None
        for name, x, y in paired_tensors(before, after, dtype=dtype):
            delta = (y - x).abs_()
            magnitude = x.abs()
            ratio = delta / magnitude  # d/0 = inf (changed); 0/0 = nan, counted below
            relative_ok = (ratio < rel_t) | ((magnitude == 0) & (delta == 0))
            unchanged = int(((delta < abs_t) & relative_ok).sum())
            rows.append((name, module_type(name), layer_index(name), precision, x.numel(), unchanged,
                         float(delta.double().square().sum()), float(x.double().square().sum())))
    table = pd.DataFrame(rows, columns=list(CRITERION_ROW_COLUMNS))
    table["layer"] = table["layer"].astype("Int64")
    return table


CRITERION_ROW_COLUMNS = ("tensor", "module", "layer", "precision", "entries", "unchanged", "delta_sq", "before_sq")


def aggregate_paper_criterion(rows: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """:func:`paper_criterion_table` from its per-tensor ``rows`` (:func:`paper_criterion_rows`): counts
    and sums of squares added over the groups of ``by`` in row order, then share and relative_l2."""
    by = _check_by(by)
    if "tensor" in by:
        by = tuple(dict.fromkeys(("tensor", "module", "layer") + by))
    keys = ["precision", *by]
    out = rows.groupby(keys, sort=False, dropna=False)[["entries", "unchanged", "delta_sq", "before_sq"]].sum()
    out = out.reset_index()
    out["share"] = out["unchanged"] / out["entries"]
    with np.errstate(divide="ignore", invalid="ignore"):
        out["relative_l2"] = np.sqrt(out["delta_sq"] / out["before_sq"])
    out = out.drop(columns=["delta_sq", "before_sq"])
    order = {"precision": {p: i for i, p in enumerate(PRECISIONS)}, "module": {m: i for i, m in enumerate(MODULE_ORDER)}}

    def key(column: pd.Series) -> pd.Series:
        if column.name in order:
            known = order[column.name]
            return column.map(lambda v: (known.get(v, len(known)), str(v)))
        return column

    sort_keys = [k for k in ("precision", "module", "layer", "tensor") if k in out]
    return out.sort_values(sort_keys, key=key, na_position="last", kind="stable").reset_index(drop=True)


def dense_control(before: str | Path, after: str | Path, path: str | Path, seed: int = 0) -> Path:
    """Write a checkpoint (fp32 safetensors at ``path``) that moves ``before`` as far as ``after`` does,
    tensor by tensor, but densely: each float tensor becomes before + noise, the noise Gaussian
    (a generator seeded by ``seed``, drawn in sorted name order) and scaled to exactly
    ||after - before|| of that tensor (a tensor that did not move stays as it was). Compared with
    ``before`` it gives the unchanged shares an edit of this size would have if it were spread over
    every entry: the baseline that tells a sparse edit from a merely small one. Holds one tensor
    pair at a time plus the output (toy and small models). Introduced in ``01_sparse_edits``."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"path must name a .safetensors file, got {path}")
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(int(seed))
    out: dict[str, torch.Tensor] = {}
    for name, x, y in paired_tensors(before, after):
        norm = float((y - x).double().norm())
        if norm == 0.0:
            out[name] = x.contiguous()
            continue
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float64)
        out[name] = (x.double() + noise * (norm / float(noise.norm()))).float().contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path), metadata={"format": "pt"})
    return path


# ----------------------------------------------------------------------------------------------
# Cached analyses: notebook 01's tables as store artifacts, keyed like the checkpoints they compare

CURVE_ABS_TOLS = ABS_SWEEP + (1e-2, 1e-1)  # the sweeps widened so that the curves reach every entry
CURVE_REL_TOLS = REL_SWEEP + (1.0,)
CRITERION_ROWS_FILE = "criterion_rows.csv"
SWEEP_FILE = "sweep.csv"
MAGNITUDES_FILE = "magnitudes.safetensors"
ROUNDINGS = {"bf16": torch.bfloat16}


@dataclass(frozen=True, eq=False)
class SparsityTables:
    """What :class:`EditSparsity` caches for one checkpoint against another: ``rows``, the per-tensor
    counts of the paper's joint criterion in both precisions (:func:`paper_criterion_rows`), and
    ``sweep``, the whole model's unchanged counts per precision, criterion and threshold
    (:func:`sparsity_table` with ``by=()``). Introduced in ``01_sparse_edits``."""

    rows: pd.DataFrame
    sweep: pd.DataFrame

    def criterion(self, by: Sequence[str] = ()) -> pd.DataFrame:
        """:func:`paper_criterion_table` grouped by ``by`` (() for the whole model), from the cached rows."""
        return aggregate_paper_criterion(self.rows, by)

    def save(self, directory: Path) -> None:
        self.rows.to_csv(directory / CRITERION_ROWS_FILE, index=False)
        self.sweep.to_csv(directory / SWEEP_FILE, index=False)

    @classmethod
    def load(cls, directory: Path) -> "SparsityTables":
        """The tables :meth:`save` wrote, every float as it was (read back with round-trip precision)."""
        rows = pd.read_csv(directory / CRITERION_ROWS_FILE, float_precision="round_trip",
                           dtype={"tensor": str, "module": str, "precision": str, "layer": "Int64"})
        sweep = pd.read_csv(directory / SWEEP_FILE, float_precision="round_trip",
                            dtype={"precision": str, "criterion": str})
        return cls(rows, sweep)


@dataclass(frozen=True)
class EditSparsity(Spec):
    """C1's tables of checkpoint ``after`` against ``before`` (each read as its fp32 weights, the fp32
    master of a bf16 stage): the paper's joint criterion (``abs_tol``, ``rel_tol``) per tensor and the
    threshold sweeps ``abs_tols`` and ``rel_tols`` over the whole model, both in fp32 and bf16. A
    derived artifact (introduced in ``01_sparse_edits``); ``kit.open`` gives :class:`SparsityTables`."""

    before: Spec
    after: Spec
    abs_tol: float = ABS_TOL
    rel_tol: float = REL_TOL
    abs_tols: tuple[float, ...] = CURVE_ABS_TOLS
    rel_tols: tuple[float, ...] = CURVE_REL_TOLS
    kind: ClassVar[str] = "edit-sparsity"

    def __post_init__(self) -> None:
        for name in ("abs_tols", "rel_tols"):
            object.__setattr__(self, name, _check_tolerances(getattr(self, name), name))
        tolerances = _check_tolerances((self.abs_tol, self.rel_tol), "abs_tol and rel_tol")
        object.__setattr__(self, "abs_tol", tolerances[0])
        object.__setattr__(self, "rel_tol", tolerances[1])

    def inputs(self) -> tuple[Spec, ...]:
        return (self.before, self.after)

    def key_fields(self, kit) -> dict:
        return {"before": kit.key(self.before), "after": kit.key(self.after), "precisions": list(PRECISIONS),
                "abs_tol": self.abs_tol, "rel_tol": self.rel_tol, "abs_tols": list(self.abs_tols),
                "rel_tols": list(self.rel_tols)}

    def measure(self, before: Path, after: Path) -> SparsityTables:
        """The tables of the weight file ``after`` against ``before``."""
        rows = paper_criterion_rows(before, after, abs_tol=self.abs_tol, rel_tol=self.rel_tol)
        sweep = sparsity_table(before, after, by=(), abs_tols=self.abs_tols, rel_tols=self.rel_tols)
        return SparsityTables(rows, sweep)

    def build(self, kit, directory: Path, progress: bool) -> dict:
        return self.store(self.measure(kit.weights_file(self.before), kit.weights_file(self.after)), directory)

    @staticmethod
    def store(tables: SparsityTables, directory: Path) -> dict:
        """Write ``tables`` into ``directory``; the manifest metrics: entries and each precision's share."""
        tables.save(directory)
        overall = tables.criterion().set_index("precision")
        return {"entries": int(overall["entries"].iloc[0]),
                "unchanged_share": {p: round(float(overall.loc[p, "share"]), 6) for p in overall.index}}

    def open(self, kit, artifact) -> SparsityTables:
        return SparsityTables.load(artifact.path)

    def label(self) -> str:
        return f"sparsity of {self.after.label()} vs {self.before.label()}"

    def toy_seconds(self, config) -> float:
        return 0.1


@dataclass(frozen=True)
class DenseControlSparsity(EditSparsity):
    """:class:`EditSparsity` of the dense control of ``after``: ``before`` plus Gaussian noise of exactly
    the edit's norm, tensor by tensor (:func:`dense_control`, seeded by ``seed``). The control is written
    into the build's directory and removed once measured; only its tables are kept. Introduced in
    ``01_sparse_edits``."""

    seed: int = 0
    kind: ClassVar[str] = "dense-control-sparsity"

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a whole number >= 0, got {self.seed!r}")

    def key_fields(self, kit) -> dict:
        return {**super().key_fields(kit), "seed": self.seed}

    def build(self, kit, directory: Path, progress: bool) -> dict:
        before = kit.weights_file(self.before)
        control = dense_control(before, kit.weights_file(self.after), directory / "control.safetensors",
                                seed=self.seed)
        tables = self.measure(before, control)
        control.unlink()
        return self.store(tables, directory)

    def label(self) -> str:
        return f"sparsity of a dense control of {self.after.label()} (seed {self.seed}) vs {self.before.label()}"

    def toy_seconds(self, config) -> float:
        return 0.1


@dataclass(frozen=True)
class NeuronMagnitudes(Spec):
    """C2's neuron edit magnitudes of ``after`` against ``before`` (:func:`neuron_edit_magnitude`) in
    fp32 and bf16. ``kit.open`` gives precision -> MLP layer (in layer order) -> (intermediate_size,)
    tensor. Introduced in ``01_sparse_edits``."""

    before: Spec
    after: Spec
    kind: ClassVar[str] = "neuron-magnitudes"

    def inputs(self) -> tuple[Spec, ...]:
        return (self.before, self.after)

    def key_fields(self, kit) -> dict:
        return {"before": kit.key(self.before), "after": kit.key(self.after), "precisions": list(PRECISIONS),
                "chunk_elements": CHUNK_ELEMENTS}

    def build(self, kit, directory: Path, progress: bool) -> dict:
        from safetensors.torch import save_file

        before, after = kit.weights_file(self.before), kit.weights_file(self.after)
        magnitudes = {p: neuron_edit_magnitude(before, after, precision=p) for p in PRECISIONS}
        layers = list(magnitudes[PRECISIONS[0]])
        flat = {f"{p}/{layer}": m.contiguous() for p, by_layer in magnitudes.items() for layer, m in by_layer.items()}
        save_file(flat, str(directory / MAGNITUDES_FILE))
        return {"layers": layers, "neurons": sum(m.numel() for m in magnitudes[PRECISIONS[0]].values())}

    def open(self, kit, artifact) -> dict[str, dict[str, torch.Tensor]]:
        from safetensors.torch import load_file

        stored = load_file(str(artifact.path / MAGNITUDES_FILE))
        return {p: {layer: stored[f"{p}/{layer}"] for layer in artifact.metrics["layers"]} for p in PRECISIONS}

    def label(self) -> str:
        return f"neuron edit magnitudes of {self.after.label()} vs {self.before.label()}"

    def toy_seconds(self, config) -> float:
        return 0.02


@dataclass(frozen=True)
class RoundedScores(Scores):
    """Per-item held-out results of ``of`` with every weight rounded to ``precision`` (bf16) and back, as
    a bf16 checkpoint would store it: the reference of a bf16 expert's gain, so that the rounding alone
    is not counted as learning. Same files and reader as :class:`~mdrl_lib.specs.Scores`. Introduced in
    ``01_sparse_edits``."""

    precision: str = "bf16"
    kind: ClassVar[str] = "rounded-scores"

    def __post_init__(self) -> None:
        if self.precision not in ROUNDINGS:
            raise ValueError(f"unknown precision {self.precision!r}; valid: {', '.join(ROUNDINGS)}")

    def key_fields(self, kit) -> dict:
        return {**super().key_fields(kit), "precision": self.precision}

    def prepare(self, model) -> None:
        """Round every weight to ``precision`` and back, in place."""
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.copy_(parameter.to(ROUNDINGS[self.precision]).to(parameter.dtype))

    def build(self, kit, directory: Path, progress: bool) -> dict:
        return {**super().build(kit, directory, progress), "precision": self.precision}

    def label(self) -> str:
        return f"scores of {self.of.label()} rounded to {self.precision}"

    def toy_seconds(self, config) -> float:
        from mdrl_lib.plan import TOY_SECONDS

        return TOY_SECONDS["scores"]


# ----------------------------------------------------------------------------------------------
# Notebook 01's tables from those artifacts


def own_gain(reference_items: pd.DataFrame, items: pd.DataFrame, domain: str) -> pd.Series:
    """The held-out gain of ``items`` over ``reference_items`` (per-item tables: domain, item, score) on
    ``domain``, paired item by item: one row of :func:`mdrl_lib.stats.paired_difference_table` with
    ``diff`` named ``gain`` (McNemar for 0/1 domains, Wilcoxon for fractional ones). Introduced in
    ``01_sparse_edits``."""
    from mdrl_lib.domains.base import FRACTIONAL_DOMAINS
    from mdrl_lib.stats import paired_difference_table

    frame = pd.concat([reference_items.assign(checkpoint="reference"), items.assign(checkpoint="expert")])
    frame = frame[frame["domain"] == domain][["checkpoint", "domain", "item", "score"]]
    table = paired_difference_table(frame, before="reference", after="expert", kind=FRACTIONAL_DOMAINS)
    return table.rename(columns={"diff": "gain"}).iloc[0]


def gain_table(gains: Mapping[str, pd.Series], names: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per expert (``names`` maps its key to a title) of :func:`own_gain` results: base, expert,
    gain, its 95% interval as text, p and the test."""
    names = names or {}
    return pd.DataFrame({names.get(d, d): {"base": g.mean_before, "expert": g.mean_after, "gain": g.gain,
                                           "95% CI": f"[{g.ci_low:+.3f}, {g.ci_high:+.3f}]", "p": g.p_value,
                                           "test": g.test}
                         for d, g in gains.items()}).T


def single_share(sweep: pd.DataFrame, precision: str, criterion: str, threshold: float) -> float:
    """The unchanged share of one precision, criterion and threshold of a sweep table (:func:`sparsity_table`
    with ``by=()``); thresholds match with :func:`numpy.isclose`."""
    row = sweep[(sweep["precision"] == precision) & (sweep["criterion"] == criterion)
                & np.isclose(sweep["threshold"], threshold)]
    if row.empty:
        raise ValueError(f"the sweep holds no {precision} {criterion} row at threshold {threshold:g}")
    return float(row["share"].iloc[0])


def unchanged_share_table(tables: Mapping[str, SparsityTables], names: Mapping[str, str] | None = None, *,
                          abs_tol: float = ABS_TOL, rel_tol: float = REL_TOL) -> pd.DataFrame:
    """C1 per expert and precision (index: expert title, weights): the share exactly equal, below
    ``abs_tol``, below ``rel_tol``, both (the paper's criterion) and the relative L2 of delta."""
    names = names or {}
    rows = []
    for d, tables_d in tables.items():
        overall = tables_d.criterion().set_index("precision")
        for precision in PRECISIONS:
            rows.append({"expert": names.get(d, d), "weights": precision,
                         "exactly equal": single_share(tables_d.sweep, precision, "equal", 0.0),
                         f"|δ| < {abs_tol:g}": single_share(tables_d.sweep, precision, "abs", abs_tol),
                         f"|δ|/|w| < {rel_tol:g}": single_share(tables_d.sweep, precision, "rel", rel_tol),
                         "both (the paper's criterion)": overall.loc[precision, "share"],
                         "relative L2 of δ": overall.loc[precision, "relative_l2"]})
    return pd.DataFrame(rows).set_index(["expert", "weights"])


def sweep_curves(edit_tables: Mapping[str, SparsityTables], control_tables: Mapping[str, SparsityTables],
                 precision: str) -> pd.DataFrame:
    """The threshold curves of one precision for :func:`mdrl_lib.plots.plot_unchanged_vs_threshold`:
    columns expert, kind (``edit`` or ``dense control``), criterion (abs, rel), threshold, share."""
    frames = []
    for d in edit_tables:
        for kind, table in (("edit", edit_tables[d].sweep), ("dense control", control_tables[d].sweep)):
            part = table[(table["precision"] == precision) & table["criterion"].isin(["abs", "rel"])]
            frames.append(part.assign(expert=d, kind=kind)[["expert", "kind", "criterion", "threshold", "share"]])
    return pd.concat(frames, ignore_index=True)


def criterion_shares(tables_by_kind: Mapping[str, Mapping[str, SparsityTables]],
                     names: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The paper's joint criterion per expert (rows) for each precision and kind (columns: weights,
    then e.g. ``edit`` and ``dense control``)."""
    names = names or {}
    overall = {kind: {d: t.criterion().set_index("precision") for d, t in tables.items()}
               for kind, tables in tables_by_kind.items()}
    return (pd.DataFrame({(precision, kind): {names.get(d, d): frame[d].loc[precision, "share"] for d in frame}
                          for precision in PRECISIONS for kind, frame in overall.items()})
            .rename_axis(columns=["weights", "unchanged, paper's criterion"]))


def grouped_criterion(tables: Mapping[str, SparsityTables], by: str,
                      names: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Per group of ``by`` (module or layer; layers read "layer N", the rest "outside the layers") and
    expert: the unchanged share (both tests) in fp32 and bf16 and the relative L2 of delta in fp32.
    Columns: a (measure, expert) MultiIndex."""
    names = names or {}
    grouped = {d: t.criterion(by=(by,)) for d, t in tables.items()}
    columns = {}
    for measure, precision, value in (("unchanged, fp32", "fp32", "share"), ("unchanged, bf16", "bf16", "share"),
                                      ("relative L2 of δ", "fp32", "relative_l2")):
        for d, table in grouped.items():
            columns[(measure, names.get(d, d))] = table[table["precision"] == precision].set_index(by)[value]
    out = pd.DataFrame(columns)
    out.columns = pd.MultiIndex.from_tuples(out.columns, names=["measure", "expert"])
    if by == "layer":
        out = out.rename(index=lambda v: "outside the layers" if pd.isna(v) else f"layer {v}")
    return out


def overlap(magnitudes_by_name: Mapping[str, Mapping[str, torch.Tensor]],
            pairs: Mapping[str, Iterable[tuple[str, str]]], fraction: float,
            domains: Sequence[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """C2 at one ``fraction``: the domain x domain matrix of cross-domain Jaccard indices (its diagonal:
    the same domain with two RL seeds, NaN where not measured) and the tidy :func:`jaccard_table` of
    every pair of ``pairs`` (reference label -> (name, name) pairs; ``cross-domain`` fills the matrix)."""
    from mdrl_lib.domains.base import DOMAIN_NAMES

    domains = list(DOMAIN_NAMES if domains is None else domains)
    table = jaccard_table(magnitudes_by_name, pairs, fraction=fraction)
    matrix = pd.DataFrame(np.nan, index=domains, columns=domains)
    for row in table.itertuples():
        if row.reference == "cross-domain":
            matrix.loc[row.a, row.b] = matrix.loc[row.b, row.a] = row.jaccard
        else:
            matrix.loc[row.a, row.a] = row.jaccard
    return matrix, table


def jaccard_curves(magnitudes_by_name: Mapping[str, Mapping[str, torch.Tensor]],
                   pairs: Mapping[str, Iterable[tuple[str, str]]], fractions: Iterable[float]) -> pd.DataFrame:
    """C2 against the top fraction k, for :func:`mdrl_lib.plots.plot_jaccard_vs_fraction`: per fraction,
    the mean Jaccard of each reference of ``pairs`` and the random-set expectation (columns fraction,
    reference, jaccard)."""
    rows = []
    for fraction in fractions:
        table = jaccard_table(magnitudes_by_name, pairs, fraction=fraction)
        for reference, value in table.groupby("reference", sort=False)["jaccard"].mean().items():
            rows.append({"fraction": fraction, "reference": f"{reference} (mean)", "jaccard": value})
        rows.append({"fraction": fraction, "reference": "random sets (expectation)",
                     "jaccard": table["random_expectation"].iloc[0]})
    return pd.DataFrame(rows)


def overlap_by_precision(magnitudes: Mapping[str, Mapping[str, Mapping[str, torch.Tensor]]],
                         pairs: Mapping[str, Iterable[tuple[str, str]]], fraction: float) -> pd.DataFrame:
    """C2 per precision of the weights (``magnitudes``: precision -> name -> layer -> magnitudes; index
    weights): the mean Jaccard of each reference, the random-set expectation and the most neurons any
    expert leaves out although tied with its cut (:func:`jaccard_matrix`'s ``cut_ties``)."""
    rows = []
    for precision, by_name in magnitudes.items():
        ties = jaccard_matrix(by_name, fraction=fraction).attrs["cut_ties"]
        table = jaccard_table(by_name, pairs, fraction=fraction)
        means = table.groupby("reference", sort=False)["jaccard"].mean()
        rows.append({"weights": precision, **{f"mean Jaccard, {ref}": v for ref, v in means.items()},
                     "random sets": table["random_expectation"].iloc[0],
                     "neurons tied at the cut, left out (max over experts)": max(ties.values())})
    return pd.DataFrame(rows).set_index("weights")


def pair_overlaps(table: pd.DataFrame, names: Mapping[str, str] | None = None) -> pd.DataFrame:
    """A :func:`jaccard_table` for reading: indexed by reference and the two experts' titles (``names``),
    with the Jaccard index and the random-set expectation."""
    names = names or {}
    titled = table.assign(a=table["a"].map(lambda n: names.get(n, n)), b=table["b"].map(lambda n: names.get(n, n)))
    return titled.set_index(["reference", "a", "b"])[["jaccard", "random_expectation"]]
