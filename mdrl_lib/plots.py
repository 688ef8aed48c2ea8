"""The kit's figures, in one style: labelled axes, titles, and the domain colours used everywhere.

Introduced in notebook ``00_toy_world``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

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


def plot_domain_matrix(matrix: pd.DataFrame, title: str, colorbar_label: str, *, center: float | None = None,
                       vmin: float | None = None, vmax: float | None = None, fmt: str = ".2f",
                       note: str = "") -> plt.Axes:
    """An annotated domain x domain heatmap (route overlaps, gradient cosines); ``note`` goes under the
    x label (e.g. the chance level). Rows and columns are domain names, shown by their titles.
    Introduced in ``02_shared_routes``."""
    use_style()
    _, ax = plt.subplots(figsize=(4.8, 3.9))
    labels = [DOMAIN_TITLES.get(d, d) for d in matrix.index]
    columns = [DOMAIN_TITLES.get(d, d) for d in matrix.columns]
    cmap = "vlag" if center is not None else "rocket_r"
    sns.heatmap(matrix.astype(float).to_numpy(), annot=True, fmt=fmt, cmap=cmap, center=center, vmin=vmin,
                vmax=vmax, xticklabels=columns, yticklabels=labels, square=True, ax=ax,
                cbar_kws={"label": colorbar_label})
    ax.grid(False)  # blank (nan) cells stay blank
    ax.set(xlabel="domain" + (f"\n{note}" if note else ""), ylabel="domain", title=title)
    return ax


def plot_ablation_changes(changes: pd.DataFrame, title: str) -> plt.Axes:
    """Grouped bars: each domain's held-out score change (``change``) under each ablated channel set
    (``ablated``), with the interval ``ci_low``..``ci_high`` as whiskers when the columns are present.
    Columns: ``ablated``, ``domain``, ``change`` (and optionally ``ci_low``, ``ci_high``).
    Introduced in ``02_shared_routes``."""
    use_style()
    sets = list(dict.fromkeys(changes["ablated"]))
    domains = list(dict.fromkeys(changes["domain"]))
    _, ax = plt.subplots(figsize=(1.6 + 1.3 * len(domains), 3.4))
    width = 0.8 / len(sets)
    palette = sns.color_palette("muted", len(sets))
    for i, name in enumerate(sets):
        part = changes[changes["ablated"] == name].set_index("domain").reindex(domains)
        xs = [j + (i - (len(sets) - 1) / 2) * width for j in range(len(domains))]
        yerr = None
        if {"ci_low", "ci_high"} <= set(part.columns):
            yerr = [(part["change"] - part["ci_low"]).clip(lower=0), (part["ci_high"] - part["change"]).clip(lower=0)]
        ax.bar(xs, part["change"], width=width, yerr=yerr, capsize=3, label=name, color=palette[i])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(domains)), [DOMAIN_TITLES.get(d, d) for d in domains])
    ax.set(xlabel="domain scored (held-out items)", ylabel="score change vs unablated", title=title)
    ax.legend(title="channels ablated", fontsize="small", title_fontsize="small", loc="upper left",
              bbox_to_anchor=(1.01, 1.0))
    return ax


def plot_module_cosines(modules: pd.DataFrame, title: str, value: str = "cosine", hue: str | None = None,
                        bands: Mapping[str, float] | None = None, band_label: str = "noise band") -> plt.Axes:
    """Horizontal bars of each module's ``value`` (a per-module cosine or contribution), one bar group per
    module in the table's order, optionally split by ``hue`` (e.g. the batch replicate); negative =
    conflict, positive = cooperation. ``bands``: module -> half-width of a grey band drawn behind its
    bars (e.g. the range a cosine counts as orthogonal). Introduced in ``02_shared_routes``."""
    use_style()
    order = list(dict.fromkeys(modules["module"]))
    _, ax = plt.subplots(figsize=(6.4, 0.5 + 0.55 * len(order) * (1 if hue is None else 1.4)))
    colors = {"hue": hue, "palette": "muted"} if hue is not None else {"color": "grey"}
    sns.barplot(data=modules, y="module", x=value, order=order, orient="h", ax=ax, errorbar=None, **colors)
    for row, module in enumerate(order):
        if bands is not None and module in bands:
            ax.fill_betweenx([row - 0.45, row + 0.45], -bands[module], bands[module], color="grey", alpha=0.2,
                             zorder=0, linewidth=0, label=band_label if row == 0 else None)
    if bands is not None or hue is not None:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set(xlabel=f"{value} (< 0: the domains' gradients conflict, > 0: they cooperate)", ylabel="module",
           title=title)
    return ax
