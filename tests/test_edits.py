import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mdrl_lib.edits import (
    _intersection_pmf, aggregate_sparsity, edit_analysis, jaccard, jaccard_matrix, jaccard_table, module_type,
    neuron_edit_magnitude, paired_tensors, random_jaccard_expectation, random_jaccard_std, safetensors_index,
    simulate_random_jaccard, sparsity, sparsity_table, top_mask, top_neurons,
)


def _save(path, tensors):
    path.mkdir()
    save_file(tensors, str(path / "model.safetensors"))
    return path


# Hand-made (before, after) pairs. At 0.5 fp32's spacing is 2**-24 and bf16's 2**-8.
H = 0.5
PAIRS = {
    "E": (H, H),                                        # equal
    "T": (H, H + 2**-24),                               # 6e-8: below 1e-7; vanishes in bf16
    "S": (H, H + 2**-14),                               # 6e-5: rel 1.2e-4; vanishes in bf16
    "M": (H, H + 2**-10),                               # 9.8e-4: abs below 1e-3 but rel 2e-3; vanishes in bf16
    "L": (H, H + 2**-8),                                # 3.9e-3: changed everywhere
    "Z": (0.0, 0.0),                                    # zero stays zero: unchanged relatively too
    "z": (0.0, 2**-30),                                 # from zero: abs tiny, rel infinite; bf16 keeps it
    "C": (H + 2**-9 - 2**-24, H + 2**-9 + 2**-24),      # 1.2e-7 in fp32, but bf16 rounds them 2**-8 apart
}
ABS, REL = (1e-7, 1e-3), (1e-3,)
# Unchanged flags worked out by hand: (equal, abs < 1e-7, abs < 1e-3, rel < 1e-3)
FLAGS = {
    "fp32": {"E": (1, 1, 1, 1), "T": (0, 1, 1, 1), "S": (0, 0, 1, 1), "M": (0, 0, 1, 0), "L": (0, 0, 0, 0),
             "Z": (1, 1, 1, 1), "z": (0, 1, 1, 0), "C": (0, 0, 1, 1)},
    "bf16": {"E": (1, 1, 1, 1), "T": (1, 1, 1, 1), "S": (1, 1, 1, 1), "M": (1, 1, 1, 1), "L": (0, 0, 0, 0),
             "Z": (1, 1, 1, 1), "z": (0, 1, 1, 0), "C": (0, 0, 0, 0)},
}
TENSORS = {  # name: (shape, codes)
    "model.embed_tokens.weight": ((2, 4), "EEEETSLZ"),
    "model.layers.0.self_attn.q_proj.weight": ((2, 2), "MLCE"),
    "model.layers.0.self_attn.q_proj.bias": ((2,), "Tz"),
    "model.layers.0.input_layernorm.weight": ((2,), "SS"),
    "model.layers.1.input_layernorm.weight": ((2,), "LE"),
    "model.layers.1.self_attn.q_proj.weight": ((2, 2), "zzMT"),
    "model.norm.weight": ((3,), "zZC"),
}
GROUPS = {  # (module, layer): tensors
    ("embed_tokens", None): ["model.embed_tokens.weight"],
    ("q_proj", 0): ["model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.q_proj.bias"],
    ("q_proj", 1): ["model.layers.1.self_attn.q_proj.weight"],
    ("norm", 0): ["model.layers.0.input_layernorm.weight"],
    ("norm", 1): ["model.layers.1.input_layernorm.weight"],
    ("norm", None): ["model.norm.weight"],
}


def _hand_checkpoints(tmp_path):
    before, after = {}, {}
    for name, (shape, codes) in TENSORS.items():
        before[name] = torch.tensor([PAIRS[c][0] for c in codes], dtype=torch.float32).reshape(shape)
        after[name] = torch.tensor([PAIRS[c][1] for c in codes], dtype=torch.float32).reshape(shape)
    return before, after


def _expected(precision, names):
    codes = "".join(TENSORS[n][1] for n in names)
    flags = np.array([FLAGS[precision][c] for c in codes]).sum(axis=0)
    keys = [("equal", 0.0), ("abs", 1e-7), ("abs", 1e-3), ("rel", 1e-3)]
    return len(codes), dict(zip(keys, flags.tolist()))


def _observed(table, precision, **where):
    rows = table[table["precision"] == precision]
    for column, value in where.items():
        rows = rows[rows[column].isna()] if value is None else rows[rows[column] == value]
    assert rows["entries"].nunique() == 1
    return int(rows["entries"].iloc[0]), {(r.criterion, r.threshold): r.unchanged for r in rows.itertuples()}


@pytest.fixture
def hand(tmp_path):
    before, after = _hand_checkpoints(tmp_path)
    return _save(tmp_path / "a", before), _save(tmp_path / "b", after)


def test_the_hand_made_pairs_are_what_the_flags_say():
    # the premises of FLAGS: each after value is exactly representable in fp32 and rounds as claimed
    for code, (x, y) in PAIRS.items():
        assert torch.tensor(y, dtype=torch.float32).item() == y and torch.tensor(x).item() == x, code
    bf = lambda v: torch.tensor(v).to(torch.bfloat16).item()  # noqa: E731
    assert bf(PAIRS["C"][0]) == H and bf(PAIRS["C"][1]) == H + 2**-8 and bf(PAIRS["M"][1]) == H


def test_sparsity_table_counts_every_module_layer_and_precision_by_hand(hand):
    table = sparsity_table(*hand, abs_tols=ABS, rel_tols=REL)
    assert list(table.columns) == ["precision", "module", "layer", "criterion", "threshold", "entries",
                                   "unchanged", "share"]
    for precision in ("fp32", "bf16"):
        for (module, layer), names in GROUPS.items():
            assert _observed(table, precision, module=module, layer=layer) == _expected(precision, names), \
                (precision, module, layer)
    assert (table["share"] == table["unchanged"] / table["entries"]).all()
    assert len(table) == 2 * len(GROUPS) * 4


def test_overall_per_module_and_per_layer_tables_add_up(hand):
    fine = sparsity_table(*hand, abs_tols=ABS, rel_tols=REL, by=("tensor",))
    overall = aggregate_sparsity(fine, ())
    for precision in ("fp32", "bf16"):
        assert _observed(overall, precision) == _expected(precision, list(TENSORS))
        per_module = aggregate_sparsity(fine, ("module",))
        assert _observed(per_module, precision, module="norm") == _expected(
            precision, [n for n in TENSORS if "norm" in n])
        per_layer = aggregate_sparsity(fine, ("layer",))
        assert _observed(per_layer, precision, layer=1) == _expected(
            precision, [n for n in TENSORS if ".layers.1." in n])
        assert _observed(per_layer, precision, layer=None) == _expected(
            precision, ["model.embed_tokens.weight", "model.norm.weight"])
    same = sparsity_table(*hand, abs_tols=ABS, rel_tols=REL, by=())
    assert same.drop(columns="share").equals(overall.drop(columns="share"))


def test_small_blocks_and_row_chunks_give_the_same_counts(hand):
    whole = sparsity_table(*hand, abs_tols=ABS, rel_tols=REL, by=("tensor",))
    pieces = edit_analysis(*hand, abs_tols=ABS, rel_tols=REL, by=("tensor",), neurons=False,
                           chunk_elements=3, block_elements=2).table
    assert whole.equals(pieces)


def test_bf16_checkpoint_needs_its_master_for_fp32(tmp_path):
    before, after = _hand_checkpoints(tmp_path)
    base = _save(tmp_path / "base", before)
    stage = _save(tmp_path / "stage", {k: v.to(torch.bfloat16) for k, v in after.items()})
    save_file(after, str(stage / "master_fp32.safetensors"))
    with pytest.raises(ValueError, match="master_fp32.safetensors"):
        sparsity_table(base, stage)  # fp32 asked of a bf16 file: the rounding would count as an edit
    bf16 = sparsity_table(base, stage, precisions=("bf16",), abs_tols=ABS, rel_tols=REL, by=())
    fp32 = sparsity_table(base, stage / "master_fp32.safetensors", precisions="fp32", abs_tols=ABS,
                          rel_tols=REL, by=())
    assert _observed(bf16, "bf16") == _expected("bf16", list(TENSORS))
    assert _observed(fp32, "fp32") == _expected("fp32", list(TENSORS))
    # rounding the master gives exactly the bf16 checkpoint's counts
    from_master = sparsity_table(base, stage / "master_fp32.safetensors", precisions=("bf16",),
                                 abs_tols=ABS, rel_tols=REL, by=())
    assert from_master.equals(bf16)


def test_sparsity_summary_and_bf16_rounding(tmp_path):
    before = torch.tensor([1.0, 0.25, 0.0, 2.0])
    tiny = torch.nextafter(torch.nextafter(torch.tensor(0.25), torch.tensor(1.0)), torch.tensor(1.0))
    after = torch.tensor([1.0, tiny.item(), 0.0, 2.5])  # equal, a 6e-8 change, zero stays zero, big change
    report = sparsity(_save(tmp_path / "a", {"w": before}), _save(tmp_path / "b", {"w": after}))
    assert (report.entries, report.below_abs, report.below_rel, report.exactly_equal) == (4, 3, 3, 2)
    assert report.share_below_abs == 0.75
    a = _save(tmp_path / "c", {"w": torch.full((8,), 1.0)})
    b = _save(tmp_path / "d", {"w": torch.full((8,), 1.0 + 1e-3)})  # below bf16's spacing at 1.0 (2**-7)
    assert sparsity(a, b).share_equal == 0.0
    assert sparsity(a, b, dtype=torch.bfloat16).share_equal == 1.0


def test_module_type_names():
    assert module_type("model.layers.3.self_attn.k_proj.bias") == "k_proj"
    assert module_type("model.layers.3.post_attention_layernorm.weight") == "norm"
    assert module_type("model.layers.3.self_attn.q_norm.weight") == "norm"
    assert module_type("model.embed_tokens.weight") == "embed_tokens"
    assert module_type("lm_head.weight") == "lm_head"


def _mlp(layers, intermediate=2, hidden=3, value=0.0):
    out = {}
    for layer in layers:
        for proj in ("gate_proj", "up_proj"):
            out[f"model.layers.{layer}.mlp.{proj}.weight"] = torch.full((intermediate, hidden), value)
        out[f"model.layers.{layer}.mlp.down_proj.weight"] = torch.full((hidden, intermediate), value)
    return out


def test_neuron_edit_magnitude_aggregates_gate_up_rows_and_down_column(tmp_path):
    zeros = _mlp([0])
    changed = {k: v.clone() for k, v in zeros.items()}
    changed["model.layers.0.mlp.gate_proj.weight"][1, 0] = 3.0   # channel 1
    changed["model.layers.0.mlp.down_proj.weight"][2, 1] = 4.0   # channel 1 again
    changed["model.layers.0.mlp.up_proj.weight"][0, 2] = 1.0     # channel 0
    a, b = _save(tmp_path / "a", zeros), _save(tmp_path / "b", changed)
    assert torch.equal(neuron_edit_magnitude(a, b)["model.layers.0"], torch.tensor([1.0, 5.0]))
    chunked = neuron_edit_magnitude(a, b, chunk_elements=2)  # gate/up and down read two rows at a time
    assert torch.equal(chunked["model.layers.0"], torch.tensor([1.0, 5.0]))
    # in bf16 a change of 1e-3 at 1.0 vanishes, one of 2**-6 stays
    ones = _mlp([0], value=1.0)
    moved = {k: v.clone() for k, v in ones.items()}
    moved["model.layers.0.mlp.gate_proj.weight"][0, 0] += 1e-3
    moved["model.layers.0.mlp.gate_proj.weight"][1, 0] += 2**-6
    c, d = _save(tmp_path / "c", ones), _save(tmp_path / "d", moved)
    both = edit_analysis(c, d, sparsity=False).magnitudes
    assert both["bf16"]["model.layers.0"].tolist() == [0.0, 2**-6]
    assert both["fp32"]["model.layers.0"][0] > 0


def test_layers_come_in_numeric_order_and_layouts_must_match(tmp_path):
    a, b = _save(tmp_path / "a", _mlp([2, 10])), _save(tmp_path / "b", _mlp([2, 10], value=1.0))
    mags = neuron_edit_magnitude(a, b)
    assert list(mags) == ["model.layers.2", "model.layers.10"]
    assert torch.allclose(mags["model.layers.2"], torch.full((2,), math.sqrt(9.0)))  # 3 + 3 + 3 ones
    with pytest.raises(ValueError, match="different neuron layouts"):
        jaccard_matrix({"x": mags, "y": {"model.layers.2": mags["model.layers.2"]}})
    with pytest.raises(ValueError, match="no MLP"):
        neuron_edit_magnitude(_save(tmp_path / "c", {"w": torch.zeros(2)}), _save(tmp_path / "d", {"w": torch.ones(2)}))


def test_top_neurons_breaks_ties_by_order():
    mags = {"l0": torch.tensor([1.0, 2.0, 2.0]), "l1": torch.tensor([2.0, 0.0])}
    assert top_neurons(mags, fraction=2 / 5) == {("l0", 1), ("l0", 2)}   # (l1, 0) ties but comes later
    assert top_neurons(mags, fraction=3 / 5) == {("l0", 1), ("l0", 2), ("l1", 0)}
    assert top_mask(mags, 1 / 5).tolist() == [False, True, False, False, False]
    assert jaccard_matrix({"a": mags}, 2 / 5).attrs["cut_ties"] == {"a": 1}
    with pytest.raises(ValueError, match="fraction"):
        top_neurons(mags, fraction=0)


def test_jaccard_matrix_and_table_by_hand():
    a = {"l0": torch.tensor([9.0, 8, 7, 6, 0, 0, 0, 0, 0, 0])}   # top 4: {0, 1, 2, 3}
    b = {"l0": torch.tensor([9.0, 8, 0, 0, 7, 6, 0, 0, 0, 0])}   # top 4: {0, 1, 4, 5}
    c = {"l0": torch.tensor([0.0, 0, 0, 0, 0, 0, 9, 8, 7, 6])}   # top 4: {6, 7, 8, 9}
    assert jaccard({1, 2, 3}, {2, 3, 4}) == 0.5 and jaccard(set(), set()) == 1.0
    matrix = jaccard_matrix({"a": a, "b": b, "c": c}, fraction=0.4)
    assert matrix.loc["a", "b"] == pytest.approx(2 / 6) and matrix.loc["b", "a"] == matrix.loc["a", "b"]
    assert matrix.loc["a", "c"] == 0.0 and (np.diag(matrix.to_numpy()) == 1.0).all()
    assert matrix.attrs["k"] == 4 and matrix.attrs["neurons"] == 10
    assert matrix.attrs["random_expectation"] == pytest.approx(random_jaccard_expectation(10, 4))
    table = jaccard_table({"a": a, "b": b, "c": c},
                          {"cross-domain": [("a", "c")], "same domain, two seeds": [("a", "b")]}, fraction=0.4)
    assert table["reference"].tolist() == ["cross-domain", "same domain, two seeds"]
    assert table["jaccard"].tolist() == pytest.approx([0.0, 2 / 6])
    assert (table["k"] == 4).all() and (table["random_expectation"] == matrix.attrs["random_expectation"]).all()
    with pytest.raises(ValueError, match="unknown expert"):
        jaccard_table({"a": a}, {"x": [("a", "qa")]})


def _brute_force_jaccard(total, k):
    subsets = [frozenset(s) for s in itertools.combinations(range(total), k)]
    values = [Fraction(len(x & y), len(x | y)) for x in subsets for y in subsets]
    return sum(values) / len(values), values


@pytest.mark.parametrize("total, k", [(6, 2), (7, 3), (5, 5), (8, 1), (6, 4)])
def test_random_jaccard_expectation_matches_enumeration(total, k):
    mean, values = _brute_force_jaccard(total, k)
    assert random_jaccard_expectation(total, k) == pytest.approx(float(mean), abs=1e-12)
    variance = sum((v - mean) ** 2 for v in values) / len(values)
    assert random_jaccard_std(total, k) == pytest.approx(math.sqrt(variance), abs=1e-9)
    support, pmf = _intersection_pmf(total, k)
    assert pmf.sum() == pytest.approx(1.0) and (support * pmf).sum() == pytest.approx(k * k / total)


def test_random_jaccard_expectation_matches_a_seeded_simulation():
    total, k, trials = 300, 30, 20000
    draws = simulate_random_jaccard(total, k, trials=trials, seed=0)
    standard_error = draws.std(ddof=1) / math.sqrt(trials)
    assert abs(draws.mean() - random_jaccard_expectation(total, k)) < 4 * standard_error
    assert draws.std() == pytest.approx(random_jaccard_std(total, k), rel=0.05)
    again, other = (simulate_random_jaccard(total, k, trials=100, seed=s) for s in (1, 2))
    assert np.array_equal(again, simulate_random_jaccard(total, k, trials=100, seed=1))
    assert not np.array_equal(again, other)
    # the paper's scale: about 117k neurons, top 10%: the chance level is near k / (2N - k)
    assert random_jaccard_expectation(116736, 11674) == pytest.approx(11674 / (2 * 116736 - 11674), rel=1e-3)
    with pytest.raises(ValueError, match="k <= total"):
        random_jaccard_expectation(5, 6)


def test_paired_tensors_and_index(hand):
    index = safetensors_index(hand[0])
    assert index["model.embed_tokens.weight"].shape == (2, 4) and index["model.norm.weight"].dtype == "F32"
    names = [name for name, _, _ in paired_tensors(*hand)]
    assert names == sorted(TENSORS)
    _, x, y = next(t for t in paired_tensors(*hand, dtype=torch.bfloat16) if t[0] == "model.norm.weight")
    assert (y - x).tolist() == [2**-30, 0.0, 2**-8]


def test_bad_input_raises_clearly(tmp_path, hand):
    a = _save(tmp_path / "x", {"w": torch.zeros(2)})
    b = _save(tmp_path / "y", {"w": torch.zeros(3)})
    with pytest.raises(ValueError, match="shape"):
        sparsity(a, b)
    with pytest.raises(FileNotFoundError, match="no safetensors checkpoint"):
        sparsity(a, tmp_path / "missing")
    with pytest.raises(ValueError, match="valid: fp32, bf16"):
        sparsity_table(*hand, precisions=("fp16",))
    with pytest.raises(ValueError, match="valid: tensor, module, layer"):
        sparsity_table(*hand, by=("row",))
    with pytest.raises(ValueError, match="positive"):
        sparsity_table(*hand, abs_tols=(0.0,))
    (tmp_path / "junk.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(ValueError, match="not a safetensors file"):
        safetensors_index(tmp_path / "junk.safetensors")
