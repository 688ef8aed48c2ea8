"""The paper's joint C1 criterion and the dense control of notebook 01."""
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from mdrl_lib.edits import dense_control, paper_criterion_table, sparsity_table

H = 0.5
# (before, after) -> unchanged by |d| < 1e-7 and |d|/|x| < 1e-3, in fp32 and after bf16 rounding (worked by hand)
CASES = {
    "equal": ((H, H), 1, 1),
    "tiny": ((H, H + 2**-24), 1, 1),           # 6e-8 absolute, 1.2e-7 relative; vanishes in bf16
    "small": ((H, H + 2**-14), 0, 1),          # 6e-5: fails the absolute test; vanishes in bf16
    "large": ((H, H + 2**-8), 0, 0),           # one bf16 step
    "zero": ((0.0, 0.0), 1, 1),                # a zero that stays zero
    "from_zero": ((0.0, 2**-30), 0, 0),        # absolute 9e-10 passes, relative is infinite
    "near_zero": ((2**-30, 2**-30 + 2**-50), 1, 1),  # relative 1e-6, absolute tiny
    "tiny_weight": ((1e-5, 1e-5 + 5e-8), 0, 0),  # absolute 5e-8 passes, relative 5e-3 fails (bf16 keeps it)
}


def _save(path, tensors):
    path.mkdir()
    save_file(tensors, str(path / "model.safetensors"))
    return path


@pytest.fixture
def pair(tmp_path):
    names = list(CASES)
    before = {"model.layers.0.mlp.up_proj.weight": torch.tensor([CASES[n][0][0] for n in names]).reshape(2, 4),
              "model.norm.weight": torch.tensor([H, H])}
    after = {"model.layers.0.mlp.up_proj.weight": torch.tensor([CASES[n][0][1] for n in names]).reshape(2, 4),
             "model.norm.weight": torch.tensor([H + 2**-8, H])}
    return _save(tmp_path / "a", before), _save(tmp_path / "b", after)


def test_joint_criterion_counts_by_hand(pair):
    fp32, bf16 = (sum(c[i] for c in CASES.values()) for i in (1, 2))
    table = paper_criterion_table(*pair).set_index("precision")
    assert table.loc["fp32", "entries"] == 10 and table.loc["fp32", "unchanged"] == fp32 + 1
    assert table.loc["bf16", "unchanged"] == bf16 + 1
    by_module = paper_criterion_table(*pair, precisions=("fp32",), by=("module",)).set_index("module")
    assert by_module.loc["up_proj", "unchanged"] == fp32 and by_module.loc["norm", "share"] == 0.5
    assert by_module.loc["norm", "relative_l2"] == pytest.approx(2**-8 / math.sqrt(2 * H * H))


def test_joint_share_lies_between_the_equal_share_and_the_smaller_single_criterion(tmp_path):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4000, generator=generator) * 0.05
    scale = torch.logspace(-9, -3, 4000)[torch.randperm(4000, generator=generator)]
    y = x + torch.randn(4000, generator=generator) * scale
    y[:500] = x[:500]
    a = _save(tmp_path / "a", {"w": x.reshape(40, 100)})
    b = _save(tmp_path / "b", {"w": y.reshape(40, 100)})
    joint = paper_criterion_table(a, b).set_index("precision")["share"]
    single = sparsity_table(a, b, abs_tols=(1e-7,), rel_tols=(1e-3,), by=()).set_index(["precision", "criterion"])
    for precision in ("fp32", "bf16"):
        shares = single.loc[precision]["share"]
        assert shares["equal"] <= joint[precision] <= min(shares["abs"], shares["rel"])
    assert single.loc["fp32"]["share"]["abs"] < single.loc["fp32"]["share"]["rel"]  # the two tests differ here


def test_dense_control_matches_each_tensors_edit_norm_and_keeps_unmoved_tensors(pair, tmp_path):
    out = dense_control(*pair, tmp_path / "c" / "noise.safetensors", seed=3)
    noisy = load_file(str(out))
    before = load_file(str(pair[0] / "model.safetensors"))
    after = load_file(str(pair[1] / "model.safetensors"))
    for name in before:
        want = float((after[name] - before[name]).double().norm())
        assert float((noisy[name] - before[name]).double().norm()) == pytest.approx(want, rel=1e-3, abs=1e-12)
    same = {"w": torch.ones(3)}
    unmoved = dense_control(_save(tmp_path / "s", same), _save(tmp_path / "t", same), tmp_path / "u.safetensors")
    assert torch.equal(load_file(str(unmoved))["w"], torch.ones(3))
    again = load_file(str(dense_control(*pair, tmp_path / "d.safetensors", seed=3)))
    other = load_file(str(dense_control(*pair, tmp_path / "e.safetensors", seed=4)))
    assert all(torch.equal(noisy[n], again[n]) for n in noisy)
    assert not torch.equal(noisy["model.norm.weight"], other["model.norm.weight"])
    with pytest.raises(ValueError, match="safetensors"):
        dense_control(*pair, tmp_path / "noise.bin")


def test_dense_control_shares_follow_the_gaussian_closed_form(tmp_path):
    # noise of norm sigma * sqrt(n) on n entries: P(|noise| < t) = erf(t / (sigma sqrt 2))
    n, sigma = 200_000, 1e-3
    x = torch.full((n // 100, 100), 1.0)
    y = x.clone()
    y[0, 0] += sigma * math.sqrt(n)  # one entry carries the whole edit: as sparse as it gets
    a, b = _save(tmp_path / "a", {"w": x}), _save(tmp_path / "b", {"w": y})
    control = dense_control(a, b, tmp_path / "c.safetensors", seed=0)
    table = sparsity_table(a, control, precisions=("fp32",), abs_tols=(5e-4, 1e-3), rel_tols=(), by=())
    shares = table[table["criterion"] == "abs"].set_index("threshold")["share"]
    for t in (5e-4, 1e-3):
        assert shares[t] == pytest.approx(math.erf(t / (sigma * math.sqrt(2))), abs=0.01)
    edit = sparsity_table(a, b, precisions=("fp32",), abs_tols=(5e-4,), rel_tols=(), by=())
    assert edit[edit["criterion"] == "abs"]["share"].item() == pytest.approx(1 - 1 / n)
