"""benchmarks/edits.py on tiny shapes: its checkpoint writer and its naive reference implementation."""
from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from tests.script_runner import ROOT, load_script

SHAPES = {
    "model.embed_tokens.weight": (50, 8),
    "model.layers.0.input_layernorm.weight": (8,),
    "model.layers.0.self_attn.q_proj.weight": (8, 8),
    "model.layers.0.self_attn.q_proj.bias": (8,),
    "model.layers.0.mlp.gate_proj.weight": (16, 8),
    "model.layers.0.mlp.up_proj.weight": (16, 8),
    "model.layers.0.mlp.down_proj.weight": (8, 16),
    "model.layers.1.mlp.gate_proj.weight": (16, 8),
    "model.layers.1.mlp.up_proj.weight": (16, 8),
    "model.layers.1.mlp.down_proj.weight": (8, 16),
}


@pytest.fixture
def checkpoints(tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    bench = load_script(ROOT / "benchmarks" / "edits.py")
    monkeypatch.setattr(bench, "parameter_shapes", lambda tiny=False: SHAPES)
    before, after = tmp_path / "before.safetensors", tmp_path / "after.safetensors"
    count = bench.write_checkpoints(before, after, density=0.3, seed=0)
    yield bench, before, after, count
    torch.set_num_threads(threads)


def test_written_checkpoints_are_safetensors_with_a_sparse_perturbation(checkpoints):
    bench, before, after, count = checkpoints
    a, b = load_file(str(before)), load_file(str(after))
    assert count == sum(math.prod(s) for s in SHAPES.values())
    assert {n: tuple(t.shape) for n, t in a.items()} == SHAPES and a.keys() == b.keys()
    assert torch.equal(a["model.layers.0.input_layernorm.weight"], torch.ones(8))
    changed = sum(int((a[n] != b[n]).sum()) for n in a) / count
    # 30% of entries moved; those moved by less than fp32's spacing (about a tenth) stay put
    assert 0.2 < changed < 0.32
    relative = torch.cat([((b[n] - a[n]).abs() / a[n].abs()).flatten() for n in a])
    assert relative.max() <= 0.1 * (1 + 1e-6)


def test_naive_and_streaming_agree_exactly(checkpoints):
    bench, before, after, _ = checkpoints
    streaming, naive = bench.run_streaming(before, after), bench.run_naive(before, after)
    assert bench.agree(streaming, naive) == (True, "yes")
    assert len(naive["magnitudes"]["fp32"]) == 2
    key = next(iter(naive["counts"]))
    entries, unchanged = naive["counts"][key]
    naive["counts"][key] = (entries, unchanged + 1)
    assert not bench.agree(streaming, naive)[0]
