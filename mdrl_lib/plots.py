"""The kit's figures, in one style: labelled axes, titles, and the domain colours used everywhere.

Introduced in notebook ``00_toy_world``.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from mdrl_lib.domains.base import DOMAIN_NAMES, DOMAIN_TITLES

DOMAIN_COLORS = dict(zip(DOMAIN_NAMES, sns.color_palette("colorblind", len(DOMAIN_NAMES))))


def use_style() -> None:
    """The kit's plotting style (called by every plotting function)."""
    sns.set_theme(style="whitegrid", context="notebook")


def plot_loss_curve(losses: Sequence[float], every: int, title: str = "Supervised warm-up") -> plt.Axes:
    """Mean training loss per ``every`` steps against the step number."""
    use_style()
    _, ax = plt.subplots(figsize=(6, 3.2))
    steps = [every * (i + 1) for i in range(len(losses))]
    ax.plot(steps, losses, marker="o", markersize=3)
    ax.set(xlabel="step", ylabel=f"mean loss over {every} steps", title=title)
    return ax


def plot_domain_scores(scores: pd.DataFrame, title: str, ylabel: str = "held-out score") -> plt.Axes:
    """Bars of ``scores.score`` per domain with 2-standard-error whiskers (columns domain, score, se)."""
    use_style()
    _, ax = plt.subplots(figsize=(5, 3.2))
    labels = [DOMAIN_TITLES.get(d, d) for d in scores["domain"]]
    ax.bar(labels, scores["score"], yerr=2 * scores["se"], capsize=4,
           color=[DOMAIN_COLORS.get(d, "grey") for d in scores["domain"]])
    ax.set(ylim=(0, 1.05), xlabel="domain (whiskers: ±2 standard errors)", ylabel=ylabel, title=title)
    return ax
