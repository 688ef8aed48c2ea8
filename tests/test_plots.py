import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mdrl_lib.plots import plot_domain_scores, plot_loss_curve  # noqa: E402


def test_loss_curve_places_each_mean_at_the_end_of_its_window():
    ax = plot_loss_curve([2.0, 1.0, 0.5], every=50)
    x, y = ax.lines[0].get_data()
    assert list(x) == [50, 100, 150] and list(y) == [2.0, 1.0, 0.5]
    assert ax.get_xlabel() == "step" and "50 steps" in ax.get_ylabel() and ax.get_title()
    plt.close("all")


def test_domain_scores_bars_have_titles_labels_and_two_se_whiskers():
    scores = pd.DataFrame({"domain": ["math", "cw"], "score": [0.5, 0.8], "se": [0.02, 0.05]})
    ax = plot_domain_scores(scores, title="Base")
    assert [p.get_height() for p in ax.patches] == [0.5, 0.8]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Math", "CW"]
    errorbar = next(c for c in ax.containers if hasattr(c, "has_yerr"))
    segments = errorbar.lines[2][0].get_segments()
    assert np.allclose([s[1][1] - s[0][1] for s in segments], [0.08, 0.2])
    assert ax.get_title() == "Base" and "2 standard errors" in ax.get_xlabel() and ax.get_ylabel()
    plt.close("all")
