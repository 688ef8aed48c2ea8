"""The figures of notebook 01: threshold sweeps, the rate grid and top-neuron overlap against k."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mdrl_lib.plots import plot_jaccard_vs_fraction, plot_unchanged_vs_rate, plot_unchanged_vs_threshold  # noqa: E402


def test_threshold_sweep_has_a_panel_per_criterion_solid_edits_and_dashed_controls():
    rows = []
    for expert in ("math", "qa"):
        for kind, offset in (("edit", 0.1), ("dense control", 0.0)):
            for criterion, thresholds in (("abs", (1e-7, 1e-5)), ("rel", (1e-3, 1e-1))):
                rows += [{"expert": expert, "kind": kind, "criterion": criterion, "threshold": t,
                          "share": min(1.0, offset + i * 0.5)} for i, t in enumerate(thresholds)]
    fig = plot_unchanged_vs_threshold(pd.DataFrame(rows), "sweep", paper_range=(0.77, 0.89),
                                      paper_thresholds={"abs": 1e-7, "rel": 1e-3})
    left, right = fig.axes[:2]
    assert left.get_xscale() == "log" and "absolute" in left.get_xlabel() and "relative" in right.get_xlabel()
    assert left.get_ylabel() == "share of entries unchanged" and fig._suptitle.get_text() == "sweep"
    lines = {line.get_label(): line for line in left.get_lines()}
    assert lines["Math"].get_linestyle() == "-" and lines["Math (dense control)"].get_linestyle() == "--"
    assert list(lines["Math"].get_ydata()) == [0.1, 0.6] and list(lines["Math"].get_xdata()) == [1e-7, 1e-5]
    assert lines["paper's threshold"].get_xdata()[0] == 1e-7
    assert [line.get_xdata()[0] for line in right.get_lines() if line.get_label() == "paper's threshold"] == [1e-3]
    plt.close("all")


def test_rate_grid_shows_shares_by_weights_and_gains_with_their_intervals():
    grid = pd.DataFrame({"rate": [1e-6, 1e-5, 1e-6, 1e-5, 1e-6, 1e-5],
                         "weights": ["fp32 master"] * 2 + ["bf16 checkpoint"] * 2 + ["dense control, bf16"] * 2,
                         "share": [0.01, 0.0, 0.96, 0.78, 0.95, 0.77]})
    gains = pd.DataFrame({"rate": [1e-5, 1e-6], "gain": [0.04, 0.007], "ci_low": [0.03, 0.0], "ci_high": [0.05, 0.02]})
    fig = plot_unchanged_vs_rate(grid, gains, "grid", paper_range=(0.77, 0.89))
    left, right = fig.axes[:2]
    lines = {line.get_label(): line for line in left.get_lines()}
    assert list(lines["bf16 checkpoint"].get_xdata()) == [1e-6, 1e-5]
    assert list(lines["bf16 checkpoint"].get_ydata()) == [0.96, 0.78]
    assert lines["dense control, bf16"].get_linestyle() == "--" and lines["fp32 master"].get_linestyle() == "-"
    assert left.get_xscale() == right.get_xscale() == "log" and "learning rate" in right.get_xlabel()
    container = right.containers[0]
    assert list(container.lines[0].get_ydata()) == [0.007, 0.04]  # sorted by rate
    segments = container.lines[2][0].get_segments()
    assert np.allclose([(s[0][1], s[1][1]) for s in segments], [(0.0, 0.02), (0.03, 0.05)])
    assert "gain" in right.get_ylabel() and fig._suptitle.get_text() == "grid"
    plt.close("all")


def test_jaccard_against_k_draws_one_labelled_line_per_reference():
    curves = pd.DataFrame({"fraction": [0.1, 0.2] * 2, "reference": ["cross"] * 2 + ["random"] * 2,
                           "jaccard": [0.07, 0.13, 0.05, 0.11]})
    ax = plot_jaccard_vs_fraction(curves, "overlap")
    lines = [line for line in ax.get_lines() if len(line.get_xdata()) == 2]
    assert sorted(tuple(line.get_ydata()) for line in lines) == [(0.05, 0.11), (0.07, 0.13)]
    assert "top fraction" in ax.get_xlabel() and "Jaccard" in ax.get_ylabel() and ax.get_title() == "overlap"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["cross", "random"]
    plt.close("all")
