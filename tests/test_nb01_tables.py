"""Notebook 01's tables from cached analyses (mdrl_lib.edits): gains, C1's share tables and curves, C2's overlaps."""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
from pandas.testing import assert_frame_equal
from safetensors.torch import save_file

from mdrl_lib.edits import (CURVE_ABS_TOLS, CURVE_REL_TOLS, SparsityTables, aggregate_paper_criterion,
                            criterion_shares, gain_table, grouped_criterion, jaccard_curves, overlap,
                            overlap_by_precision, own_gain, pair_overlaps, paper_criterion_rows, paper_criterion_table,
                            random_jaccard_expectation, single_share, sparsity_table, sweep_curves,
                            unchanged_share_table)

H = 0.5


def items(domain, scores):
    return pd.DataFrame({"domain": domain, "item": range(len(scores)), "score": [float(s) for s in scores]})


def test_own_gain_pairs_items_of_one_domain_by_hand():
    reference = pd.concat([items("math", [0, 0, 1, 1, 0]), items("qa", [1, 1])])
    expert = pd.concat([items("math", [1, 1, 1, 1, 0]), items("qa", [0, 0])]).sample(frac=1, random_state=0)
    gain = own_gain(reference, expert, "math")
    assert (gain.mean_before, gain.mean_after, gain.gain) == pytest.approx((0.4, 0.8, 0.4))
    assert gain.test == "mcnemar_exact" and gain.p_value == pytest.approx(0.5)  # two discordant pairs, both up
    assert own_gain(reference, expert, "qa").gain == pytest.approx(-1.0)
    table = gain_table({"math": gain}, {"math": "Math"})
    assert list(table.index) == ["Math"]
    assert re.fullmatch(r"\[[+-]\d\.\d{3}, [+-]\d\.\d{3}\]", table.loc["Math", "95% CI"])
    assert list(table.columns) == ["base", "expert", "gain", "95% CI", "p", "test"]


def _checkpoint(path, scale):
    """A small model whose entries move by ``scale`` times a fixed pattern (up_proj, norm and a layer-1 q_proj)."""
    generator = torch.Generator().manual_seed(0)
    before = {"model.layers.0.mlp.up_proj.weight": torch.full((4, 8), H),
              "model.layers.1.self_attn.q_proj.weight": torch.randn(4, 4, generator=generator),
              "model.norm.weight": torch.full((4,), H)}
    pattern = torch.randn(4, 8, generator=generator)
    after = {name: t.clone() for name, t in before.items()}
    after["model.layers.0.mlp.up_proj.weight"] += scale * pattern * (pattern > 0)
    after["model.norm.weight"][0] += 2**-8
    path.mkdir()
    save_file(after, str(path / "model.safetensors"))
    base = path.parent / "base.safetensors"
    if not base.exists():
        save_file(before, str(base))
    return base, path / "model.safetensors"


@pytest.fixture
def tables(tmp_path):
    out = {}
    for name, scale in (("math", 1e-2), ("qa", 1e-6)):
        before, after = _checkpoint(tmp_path / name, scale)
        out[name] = SparsityTables(paper_criterion_rows(before, after),
                                   sparsity_table(before, after, by=(), abs_tols=CURVE_ABS_TOLS,
                                                  rel_tols=CURVE_REL_TOLS))
    out["files"] = (before, tmp_path / "math" / "model.safetensors")
    return out


def test_the_saved_tables_read_back_exactly(tables, tmp_path):
    tables["math"].save(tmp_path)
    back = SparsityTables.load(tmp_path)
    assert_frame_equal(back.rows, tables["math"].rows, check_exact=True)
    assert_frame_equal(back.sweep, tables["math"].sweep, check_exact=True)
    assert back.rows["layer"].isna().sum() == 2  # the norm outside the layers, in both precisions


def test_aggregating_the_rows_is_the_paper_criterion_table(tables):
    before, after = tables["files"]
    for by in ((), ("module",), ("layer",), ("module", "layer"), ("tensor",)):
        assert_frame_equal(aggregate_paper_criterion(tables["math"].rows, by),
                           paper_criterion_table(before, after, by=by), check_exact=True)


def test_single_share_picks_one_row_of_a_sweep(tables):
    sweep = tables["math"].sweep
    equal = single_share(sweep, "fp32", "equal", 0.0)
    assert 0 < equal < 1
    assert single_share(sweep, "fp32", "abs", 1e-7 * (1 + 1e-12)) == single_share(sweep, "fp32", "abs", 1e-7)
    assert single_share(sweep, "fp32", "abs", 1e-1) == 1.0  # every move is below 0.1
    with pytest.raises(ValueError, match="no fp32 abs row at threshold 0.5"):
        single_share(sweep, "fp32", "abs", 0.5)


def test_the_share_table_shows_each_criterion_for_each_expert_and_precision(tables):
    table = unchanged_share_table({"math": tables["math"], "qa": tables["qa"]}, {"math": "Math", "qa": "QA"})
    assert list(table.index) == [("Math", "fp32"), ("Math", "bf16"), ("QA", "fp32"), ("QA", "bf16")]
    assert list(table.columns) == ["exactly equal", "|δ| < 1e-07", "|δ|/|w| < 0.001", "both (the paper's criterion)",
                                   "relative L2 of δ"]
    for (expert, precision), row in table.iterrows():
        # the joint share lies between the equal share and the smaller single test
        assert row["exactly equal"] <= row["both (the paper's criterion)"] <= min(row["|δ| < 1e-07"],
                                                                                 row["|δ|/|w| < 0.001"])
    # a move of 1e-6 x the pattern passes the relative test and vanishes in bf16; the norm's one bf16 step stays
    assert table.loc[("QA", "fp32"), "|δ|/|w| < 0.001"] == pytest.approx(1 - 1 / 52)
    assert table.loc[("QA", "bf16"), "both (the paper's criterion)"] == pytest.approx(1 - 1 / 52)
    assert table.loc[("Math", "fp32"), "relative L2 of δ"] > table.loc[("QA", "fp32"), "relative L2 of δ"]


def test_sweep_curves_keep_the_threshold_criteria_of_one_precision(tables):
    curves = sweep_curves({"math": tables["math"]}, {"math": tables["qa"]}, "bf16")
    assert list(curves.columns) == ["expert", "kind", "criterion", "threshold", "share"]
    assert set(curves["criterion"]) == {"abs", "rel"} and set(curves["kind"]) == {"edit", "dense control"}
    assert len(curves) == 2 * (len(CURVE_ABS_TOLS) + len(CURVE_REL_TOLS))
    control = curves[curves["kind"] == "dense control"].set_index(["criterion", "threshold"])["share"]
    assert control.loc[("rel", 1.0)] == single_share(tables["qa"].sweep, "bf16", "rel", 1.0)


def test_criterion_shares_put_edit_and_control_side_by_side(tables):
    table = criterion_shares({"edit": {"math": tables["math"]}, "dense control": {"math": tables["qa"]}},
                             {"math": "Math"})
    assert list(table.columns) == [("fp32", "edit"), ("fp32", "dense control"), ("bf16", "edit"),
                                   ("bf16", "dense control")]
    assert table.columns.names == ["weights", "unchanged, paper's criterion"]
    assert table.loc["Math", ("bf16", "dense control")] == tables["qa"].criterion().set_index("precision").loc[
        "bf16", "share"]


def test_grouped_criterion_by_module_and_by_layer(tables):
    by_module = grouped_criterion({"math": tables["math"]}, "module", {"math": "Math"})
    assert list(by_module.columns) == [("unchanged, fp32", "Math"), ("unchanged, bf16", "Math"),
                                       ("relative L2 of δ", "Math")]
    assert list(by_module.index) == ["q_proj", "up_proj", "norm"]  # the library's module order
    assert by_module.loc["q_proj", ("unchanged, fp32", "Math")] == 1.0
    assert by_module.loc["norm", ("unchanged, bf16", "Math")] == 0.75
    assert by_module.loc["norm", ("relative L2 of δ", "Math")] == pytest.approx(2**-8 / math.sqrt(4 * H * H))
    by_layer = grouped_criterion({"math": tables["math"]}, "layer")
    assert list(by_layer.index) == ["layer 0", "layer 1", "outside the layers"]


def _magnitudes(order, total=20):
    """Magnitudes over two layers of ``total // 2`` neurons whose ranking is ``order`` (best first)."""
    values = torch.zeros(total)
    values[list(order)] = torch.arange(len(order), 0, -1, dtype=torch.float32)
    return {"layers.0": values[: total // 2], "layers.1": values[total // 2:]}


def test_overlap_fills_the_matrix_and_its_diagonal_by_hand():
    magnitudes = {"math": _magnitudes([0, 1, 2, 3]), "qa": _magnitudes([0, 1, 10, 11]),
                  "math (RL seed 1)": _magnitudes([0, 1, 2, 4])}
    pairs = {"cross-domain": [("math", "qa")], "same domain, two RL seeds": [("math", "math (RL seed 1)")]}
    matrix, table = overlap(magnitudes, pairs, 0.1, domains=("math", "qa"))  # k = 2: neurons 0 and 1 everywhere
    assert matrix.loc["math", "qa"] == matrix.loc["qa", "math"] == 1.0
    matrix, table = overlap(magnitudes, pairs, 0.2, domains=("math", "qa"))  # k = 4
    assert matrix.loc["math", "qa"] == pytest.approx(2 / 6) and matrix.loc["math", "math"] == pytest.approx(3 / 5)
    assert np.isnan(matrix.loc["qa", "qa"])
    assert list(table["reference"]) == ["cross-domain", "same domain, two RL seeds"]
    shown = pair_overlaps(table, {"math": "Math", "qa": "QA"})
    assert list(shown.index) == [("cross-domain", "Math", "QA"), ("same domain, two RL seeds", "Math",
                                                                  "math (RL seed 1)")]
    assert list(shown.columns) == ["jaccard", "random_expectation"]


def test_jaccard_curves_give_each_reference_and_chance_per_fraction():
    magnitudes = {"math": _magnitudes([0, 1, 2, 3]), "qa": _magnitudes([0, 1, 10, 11]), "cw": _magnitudes([5, 6, 7, 8])}
    pairs = {"cross-domain": [("math", "qa"), ("math", "cw")]}
    curves = jaccard_curves(magnitudes, pairs, [0.1, 0.2])
    assert list(curves["reference"]) == ["cross-domain (mean)", "random sets (expectation)"] * 2
    assert curves["jaccard"].iloc[2] == pytest.approx((2 / 6 + 0) / 2)
    assert curves["jaccard"].iloc[3] == pytest.approx(random_jaccard_expectation(20, 4))


def test_overlap_by_precision_counts_ties_at_the_cut():
    exact = {"math": _magnitudes([0, 1, 2, 3]), "qa": _magnitudes([0, 1, 10, 11])}
    tied = {"math": _magnitudes([0]), "qa": _magnitudes([0, 1, 10, 11])}  # math: one non-zero, 19 tied at 0
    pairs = {"cross-domain": [("math", "qa")]}
    table = overlap_by_precision({"fp32": exact, "bf16": tied}, pairs, 0.2)
    assert list(table.index) == ["fp32", "bf16"]
    assert table.loc["fp32", "mean Jaccard, cross-domain"] == pytest.approx(2 / 6)
    assert table.loc["fp32", "neurons tied at the cut, left out (max over experts)"] == 0
    assert table.loc["bf16", "neurons tied at the cut, left out (max over experts)"] == 16  # 3 of 19 zeros taken
    assert table.loc["bf16", "random sets"] == pytest.approx(random_jaccard_expectation(20, 4))
