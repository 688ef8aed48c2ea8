"""Notebook 02's additions: route overlaps against chance, and its figures."""
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from mdrl_lib.plots import plot_ablation_changes, plot_domain_matrix, plot_module_cosines  # noqa: E402
from mdrl_lib.routes import overlap_matrix, pairwise_overlaps  # noqa: E402


def test_pairwise_overlaps_hold_the_shared_count_against_the_hypergeometric_tail():
    table = pairwise_overlaps({"math": {0, 1, 2}, "qa": {2, 3}, "cw": {0, 1, 2}}, units=10)
    row = table.set_index(["a", "b"]).loc[("math", "qa")]
    assert row["shared"] == 1 and row["jaccard"] == pytest.approx(0.25)
    assert row["chance_shared"] == pytest.approx(3 * 2 / 10)
    assert row["p_value"] == pytest.approx(1 - math.comb(7, 2) / math.comb(10, 2))  # P(at least one shared)
    same = table.set_index(["a", "b"]).loc[("math", "cw")]
    assert same["shared"] == 3 and same["p_value"] == pytest.approx(1 / math.comb(10, 3))
    assert list(zip(table["a"], table["b"])) == [("math", "qa"), ("math", "cw"), ("qa", "cw")]


def test_pairwise_overlaps_zero_shared_has_p_one_and_bad_units_are_refused():
    table = pairwise_overlaps({"a": {0}, "b": {1}}, units=4)
    assert table.loc[0, "shared"] == 0 and table.loc[0, "p_value"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="cannot come from"):
        pairwise_overlaps({"a": {0, 1, 2}, "b": {1}}, units=2)
    with pytest.raises(ValueError, match="at least 1"):
        pairwise_overlaps({"a": set(), "b": set()}, units=0)


def test_domain_matrix_annotates_every_cell_with_titles_and_labels():
    matrix = overlap_matrix({"math": {1, 2}, "qa": {2, 3}})
    ax = plot_domain_matrix(matrix, title="Overlap", colorbar_label="Jaccard", note="chance 0.05")
    assert sorted(t.get_text() for t in ax.texts) == ["0.33", "0.33", "1.00", "1.00"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Math", "QA"]
    assert ax.get_title() == "Overlap" and "chance 0.05" in ax.get_xlabel() and ax.get_ylabel() == "domain"
    assert ax.figure.axes[-1].get_ylabel() == "Jaccard"
    plt.close("all")


def test_ablation_changes_draws_one_bar_per_set_and_domain_with_its_interval():
    changes = pd.DataFrame({"ablated": ["math-only", "math-only", "random", "random"],
                            "domain": ["math", "qa", "math", "qa"], "change": [-0.2, 0.0, 0.01, -0.01],
                            "ci_low": [-0.25, -0.02, -0.01, -0.03], "ci_high": [-0.15, 0.02, 0.03, 0.01]})
    ax = plot_ablation_changes(changes, title="Ablation")
    assert [round(p.get_height(), 3) for p in ax.patches] == [-0.2, 0.0, 0.01, -0.01]
    bars = [c for c in ax.containers if hasattr(c, "has_yerr")]
    lows = [s[0][1] for s in bars[0].lines[2][0].get_segments()]
    assert np.allclose(lows, [-0.25, -0.02])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Math", "QA"]
    assert ax.get_title() == "Ablation" and ax.get_xlabel() and ax.get_ylabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["math-only", "random"]
    plt.close("all")


def test_module_cosines_bars_follow_the_table_with_or_without_hue():
    modules = pd.DataFrame({"module": ["l0.attn", "l0.mlp", "l0.attn", "l0.mlp"],
                            "cosine": [0.05, -0.03, 0.04, -0.02], "replicate": ["0", "0", "1", "1"]})
    ax = plot_module_cosines(modules, title="Modules", hue="replicate")
    assert sorted(round(p.get_width(), 3) for p in ax.patches if p.get_width()) == [-0.03, -0.02, 0.04, 0.05]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["l0.attn", "l0.mlp"]
    single = plot_module_cosines(modules[modules["replicate"] == "0"], title="One")
    assert [round(p.get_width(), 3) for p in single.patches] == [0.05, -0.03]
    assert "conflict" in single.get_xlabel() and single.get_title() == "One"
    plt.close("all")


def test_module_cosines_draw_each_band_behind_its_module():
    modules = pd.DataFrame({"module": ["l0.attn", "l0.mlp"], "cosine": [0.05, -0.03]})
    ax = plot_module_cosines(modules, title="Bands", bands={"l0.attn": 0.1, "l0.mlp": 0.2}, band_label="orthogonal")
    spans = ax.collections  # the bars are patches; the bands are the only collections
    xs = sorted((round(float(v.min()), 3), round(float(v.max()), 3))
                for v in (c.get_paths()[0].vertices[:, 0] for c in spans))
    assert xs == [(-0.2, 0.2), (-0.1, 0.1)]
    assert "orthogonal" in [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close("all")
