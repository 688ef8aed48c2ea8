import pytest
import torch
from safetensors.torch import save_file

from mdrl_lib.edits import jaccard, neuron_edit_magnitude, sparsity, top_neurons


def _save(path, tensors):
    path.mkdir()
    save_file(tensors, str(path / "model.safetensors"))
    return path


def test_sparsity_counts_by_hand(tmp_path):
    before = torch.tensor([1.0, 0.25, 0.0, 2.0])
    tiny = torch.nextafter(torch.nextafter(torch.tensor(0.25), torch.tensor(1.0)), torch.tensor(1.0))
    after = torch.tensor([1.0, tiny.item(), 0.0, 2.5])  # equal, a 6e-8 change, zero stays zero, big change
    report = sparsity(_save(tmp_path / "a", {"w": before}), _save(tmp_path / "b", {"w": after}))
    assert (report.entries, report.below_abs, report.below_rel, report.exactly_equal) == (4, 3, 3, 2)
    assert report.share_below_abs == 0.75


def test_bf16_rounding_hides_small_steps(tmp_path):
    before = torch.full((8,), 1.0)
    after = before + 1e-3  # below bf16's spacing at 1.0 (2**-7)
    a, b = _save(tmp_path / "a", {"w": before}), _save(tmp_path / "b", {"w": after})
    assert sparsity(a, b).share_equal == 0.0
    assert sparsity(a, b, dtype=torch.bfloat16).share_equal == 1.0


def test_neuron_edit_magnitude_aggregates_gate_up_rows_and_down_column(tmp_path):
    shape_in, shape_mid = 3, 2
    zeros = {f"model.layers.0.mlp.{p}.weight": torch.zeros(shape_mid, shape_in) for p in ("gate_proj", "up_proj")}
    zeros["model.layers.0.mlp.down_proj.weight"] = torch.zeros(shape_in, shape_mid)
    changed = {k: v.clone() for k, v in zeros.items()}
    changed["model.layers.0.mlp.gate_proj.weight"][1, 0] = 3.0   # channel 1
    changed["model.layers.0.mlp.down_proj.weight"][2, 1] = 4.0   # channel 1 again
    changed["model.layers.0.mlp.up_proj.weight"][0, 2] = 1.0     # channel 0
    mags = neuron_edit_magnitude(_save(tmp_path / "a", zeros), _save(tmp_path / "b", changed))
    assert torch.allclose(mags["model.layers.0"], torch.tensor([1.0, 5.0]))


def test_top_neurons_and_jaccard():
    mags = {"l0": torch.tensor([0.1, 0.9, 0.5]), "l1": torch.tensor([0.8, 0.0, 0.2])}
    assert top_neurons(mags, fraction=2 / 6) == {("l0", 1), ("l1", 0)}
    assert jaccard({1, 2, 3}, {2, 3, 4}) == 0.5 and jaccard(set(), set()) == 1.0
    with pytest.raises(ValueError, match="fraction"):
        top_neurons(mags, fraction=0)


def test_mismatched_or_missing_checkpoints_raise_clearly(tmp_path):
    a = _save(tmp_path / "a", {"w": torch.zeros(2)})
    b = _save(tmp_path / "b", {"w": torch.zeros(3)})
    with pytest.raises(ValueError, match="shape"):
        sparsity(a, b)
    with pytest.raises(FileNotFoundError, match="no safetensors checkpoint"):
        sparsity(a, tmp_path / "missing")
