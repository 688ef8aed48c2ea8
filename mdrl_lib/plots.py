"""The kit's figures, in one style: labelled axes, titles, and the domain colours used everywhere.

Introduced in notebook ``00_toy_world``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from mdrl_lib.domains.base import DOMAIN_TITLES, domain_names, registry_table

DOMAIN_COLORS = registry_table(lambda: dict(zip(domain_names(), sns.color_palette("colorblind", len(domain_names())))))


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


def plot_unchanged_vs_threshold(curves: pd.DataFrame, title: str, *, paper_range: tuple[float, float] | None = None,
                                paper_thresholds: Mapping[str, float] | None = None) -> plt.Figure:
    """C1's threshold sweep: the share of entries unchanged against the threshold (log x), one panel per
    criterion (``abs``: |delta| < t; ``rel``: |delta| / |before| < t), one line per ``expert``, solid for
    ``kind == "edit"`` and dashed for the dense control of the same size. ``curves`` columns: expert,
    kind, criterion, threshold, share. ``paper_range`` shades the paper's range of shares;
    ``paper_thresholds`` (criterion -> t) marks the paper's thresholds. Introduced in ``01_sparse_edits``."""
    use_style()
    criteria = [c for c in ("abs", "rel") if c in set(curves["criterion"])]
    fig, axes = plt.subplots(1, len(criteria), figsize=(5.2 * len(criteria), 3.6), sharey=True, squeeze=False)
    labels = {"abs": "absolute threshold t (|delta| < t)", "rel": "relative threshold t (|delta| / |before| < t)"}
    experts = list(dict.fromkeys(curves["expert"]))
    palette = dict(zip(experts, sns.color_palette("colorblind", len(experts))))
    palette.update({e: DOMAIN_COLORS[e] for e in experts if e in DOMAIN_COLORS})
    for ax, criterion in zip(axes[0], criteria):
        part = curves[curves["criterion"] == criterion]
        for (expert, kind), group in part.groupby(["expert", "kind"], sort=False):
            group = group.sort_values("threshold")
            ax.plot(group["threshold"], group["share"], marker="o", markersize=3, color=palette[expert],
                    linestyle="-" if kind == "edit" else "--",
                    label=f"{DOMAIN_TITLES.get(expert, expert)}" + ("" if kind == "edit" else f" ({kind})"))
        if paper_range is not None:
            ax.axhspan(*paper_range, color="grey", alpha=0.15, label="paper's range")
        if paper_thresholds and criterion in paper_thresholds:
            ax.axvline(paper_thresholds[criterion], color="black", linewidth=0.8, linestyle=":",
                       label="paper's threshold")
        ax.set_xscale("log")
        ax.set(xlabel=labels[criterion], ylim=(-0.02, 1.02),
               title=title if len(criteria) == 1 else {"abs": "absolute change", "rel": "relative change"}[criterion])
    axes[0][0].set_ylabel("share of entries unchanged")
    axes[0][-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if len(criteria) > 1:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_unchanged_vs_rate(grid: pd.DataFrame, gains: pd.DataFrame, title: str, *,
                           paper_range: tuple[float, float] | None = None) -> plt.Figure:
    """C1 against the learning rate. Left: the unchanged share (``grid`` columns rate, weights, share:
    one line per ``weights``, e.g. the fp32 master and the bf16 checkpoint, dashed when the name says
    ``control``) against the rate (log x),
    with the paper's range shaded. Right: the held-out gain over the base (``gains`` columns rate,
    gain, ci_low, ci_high) with its interval. Introduced in ``01_sparse_edits``."""
    use_style()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 3.6))
    for i, (weights, group) in enumerate(grid.groupby("weights", sort=False)):
        group = group.sort_values("rate")
        left.plot(group["rate"], group["share"], marker="o", label=weights, color=sns.color_palette("colorblind")[i],
                  linestyle="--" if "control" in str(weights) else "-")
    if paper_range is not None:
        left.axhspan(*paper_range, color="grey", alpha=0.15, label="paper's range")
    left.set_xscale("log")
    left.set(xlabel="GRPO learning rate", ylabel="share unchanged (paper's criterion)", ylim=(-0.02, 1.02),
             title="How much stays unchanged")
    left.legend(fontsize="small", loc="best")
    gains = gains.sort_values("rate")
    yerr = [(gains["gain"] - gains["ci_low"]).clip(lower=0), (gains["ci_high"] - gains["gain"]).clip(lower=0)]
    right.errorbar(gains["rate"], gains["gain"], yerr=yerr, marker="o", capsize=4, color="black")
    right.axhline(0, color="grey", linewidth=0.8)
    right.set_xscale("log")
    right.set(xlabel="GRPO learning rate", ylabel="held-out gain (95% CI)",
              title="What RL gained with it")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_jaccard_vs_fraction(curves: pd.DataFrame, title: str) -> plt.Axes:
    """C2 against the top fraction k: the Jaccard index (``curves`` columns fraction, reference, jaccard)
    of each reference (cross-domain mean, same domain with two seeds, random sets), one line each.
    Introduced in ``01_sparse_edits``."""
    use_style()
    _, ax = plt.subplots(figsize=(6.4, 3.6))
    sns.lineplot(data=curves, x="fraction", y="jaccard", hue="reference", style="reference", markers=True,
                 dashes=False, ax=ax, errorbar=None)
    ax.set(xlabel="top fraction k of neurons by edit magnitude", ylabel="Jaccard index of top-k sets",
           ylim=(0, 1.02), title=title)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), title="pairs")
    return ax


def plot_taylor_terms(table: pd.DataFrame, title: str, x: str = "t", ax: plt.Axes | None = None,
                      xlabel: str | None = None) -> plt.Axes:
    """The measured change of A's loss against its first-order, second-order and quadratic predictions
    (columns ``x``, ``measured``, ``first_order``, ``second_order``, ``predicted`` as in
    :func:`mdrl_lib.perturbation.taylor_terms`). Introduced in ``03_perturbation_theory``."""
    use_style()
    if ax is None:
        _, ax = plt.subplots(figsize=(5.2, 3.4))
    styles = {"measured": dict(color="black", marker="o", lw=2), "first_order": dict(ls="--", marker="^"),
              "second_order": dict(ls="--", marker="v"), "predicted": dict(ls=":", marker="s")}
    labels = {"measured": "measured", "first_order": "first order  g·δ", "second_order": "second order  ½ δᵀHδ",
              "predicted": "first + second"}
    for column, style in styles.items():
        if column in table.columns:
            ax.plot(table[x], table[column], label=labels[column], markersize=4, **style)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel=xlabel or x, ylabel="change of L_A", title=title)
    ax.legend(fontsize=8)
    return ax


def plot_captured_share(table: pd.DataFrame, title: str, ax: plt.Axes | None = None) -> plt.Axes:
    """Share of the second-order damage carried by the top-``r`` eigenvectors against random ``r``-dimensional
    subspaces (mean and min-max band), from :func:`mdrl_lib.perturbation.captured_share`.
    Introduced in ``03_perturbation_theory``."""
    use_style()
    if ax is None:
        _, ax = plt.subplots(figsize=(5.2, 3.4))
    ax.plot(table["r"], table["top"], marker="o", markersize=4, label="top-r eigenvectors of H_A")
    ax.plot(table["r"], table["random_mean"], marker=".", color="grey", label="random r-dim subspaces (mean)")
    ax.fill_between(table["r"], table["random_min"], table["random_max"], color="grey", alpha=0.25,
                    label="random (min-max)")
    ax.axhline(1.0, color="black", lw=0.8, ls=":")
    ax.set(xlabel="r (subspace dimension)", ylabel="share of ½ δᵀHδ", title=title)
    ax.legend(fontsize=8)
    return ax


def plot_contraction(curves: pd.DataFrame, title: str, ax: plt.Axes | None = None,
                     ylabel: str = "||P_S(θ_t − θ_A*)||") -> plt.Axes:
    """Distances along refresh steps on a log scale: one line per ``curve`` (tidy columns ``step``,
    ``distance``, ``curve``; curves whose name contains "bound" are dashed). Introduced in
    ``03_perturbation_theory``."""
    use_style()
    if ax is None:
        _, ax = plt.subplots(figsize=(5.2, 3.4))
    for name, group in curves.groupby("curve", sort=False):
        ax.plot(group["step"], group["distance"], label=name, ls="--" if "bound" in str(name) else "-")
    ax.set_yscale("log")
    ax.set(xlabel="refresh step t", ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    return ax


def plot_budget_curves(frame: pd.DataFrame, title: str, *, x: str, y: str = "diff", curve: str = "curve",
                       band: tuple[str, str] | None = ("ci_low", "ci_high"), ax: plt.Axes | None = None,
                       xlabel: str | None = None, ylabel: str = "change on the same items", logx: bool = False,
                       zero_line: bool = True, colors: Mapping[str, object] | None = None) -> plt.Axes:
    """One line per ``curve`` of ``y`` against a budget ``x`` (refresh steps, rollback fraction), with its
    interval as a band (columns ``band``; None: no band) and a line at 0. Tidy ``frame``.
    Introduced in ``05_refresh_vs_rollback``."""
    use_style()
    if ax is None:
        _, ax = plt.subplots(figsize=(5.6, 3.6))
    for name, group in frame.groupby(curve, sort=False):
        group = group.sort_values(x)
        color = (colors or {}).get(name)
        line, = ax.plot(group[x], group[y], marker="o", markersize=4, label=str(name), color=color)
        if band is not None and group[list(band)].notna().all().all():
            ax.fill_between(group[x], group[band[0]], group[band[1]], color=line.get_color(), alpha=0.15)
    if zero_line:
        ax.axhline(0, color="black", lw=0.8)
    if logx:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel or x, ylabel=ylabel, title=title)
    ax.legend(fontsize=8)


# ---- notebook 04: the chain --------------------------------------------------------------------------

def plot_stage_heatmap(matrix: pd.DataFrame, title: str, colorbar_label: str, *, center: float | None = None,
                       fmt: str = ".2f", ylabel: str = "checkpoint (after stage)") -> plt.Axes:
    """An annotated stage x domain heatmap: rows are checkpoints along a chain (``base``, then each
    stage's domain), columns the domains scored. ``center`` (e.g. 0 for changes) switches to a diverging
    palette. Introduced in ``04_sequential_rl``."""
    use_style()
    _, ax = plt.subplots(figsize=(5.2, 0.9 + 0.55 * len(matrix)))
    rows = [DOMAIN_TITLES.get(r, r) for r in matrix.index]
    columns = [DOMAIN_TITLES.get(c, c) for c in matrix.columns]
    cmap = "vlag_r" if center is not None else "rocket_r"
    sns.heatmap(matrix.astype(float).to_numpy(), annot=True, fmt=fmt, cmap=cmap, center=center, xticklabels=columns,
                yticklabels=rows, ax=ax, cbar_kws={"label": colorbar_label})
    ax.grid(False)
    ax.set(xlabel="domain scored (held-out items)", ylabel=ylabel, title=title)
    return ax


def plot_chain_curves(curves: pd.DataFrame, title: str, domain: str,
                      paper: Mapping[str, float] | None = None, paper_label: str = "") -> plt.Figure:
    """``domain``'s held-out score after each checkpoint of the chain, one line per run (``curves``
    columns ``stage``, ``run``, ``score``, stages in chain order); on the right, the paper's reported
    figures (``paper``: checkpoint -> value, in the paper's own unit, named by ``paper_label``), on their
    own axis since the paper's model, data and unit differ. Introduced in ``04_sequential_rl``."""
    use_style()
    stages = list(dict.fromkeys(curves["stage"]))
    panels = 2 if paper else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.6 + 3.2 * (panels - 1), 3.5), squeeze=False,
                             gridspec_kw={"width_ratios": [5, 2.6][:panels]})
    left = axes[0][0]
    for run, group in curves.groupby("run", sort=False):
        group = group.set_index("stage").reindex(stages)
        left.plot(range(len(stages)), group["score"], marker="o", label=str(run))
    left.set_xticks(range(len(stages)), [f"after {DOMAIN_TITLES.get(s, s)}" if s != "base" else "base" for s in stages],
                    rotation=20)
    left.set(xlabel="checkpoint along the chain", ylabel=f"{DOMAIN_TITLES.get(domain, domain)} held-out score",
             title="this run")
    left.legend(fontsize="small", title="run", title_fontsize="small")
    if paper:
        right = axes[0][1]
        right.bar(list(paper), list(paper.values()), color="grey")
        for i, value in enumerate(paper.values()):
            right.annotate(f"{value:.2f}", (i, value), ha="center", va="bottom", fontsize="small")
        right.set(xlabel="checkpoint (paper)", ylabel=paper_label, title="the paper's reported figures")
        right.tick_params(axis="x", labelrotation=20)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig


def plot_control_changes(table: pd.DataFrame, title: str, domain: str) -> plt.Axes:
    """``domain``'s change under each control with its paired interval (``table``: columns ``control``,
    ``change``, ``ci_low``, ``ci_high``, as :func:`mdrl_lib.interference.control_table` gives it), one
    horizontal bar each. Introduced in ``04_sequential_rl``."""
    use_style()
    _, ax = plt.subplots(figsize=(6.4, 0.8 + 0.55 * len(table)))
    ys = range(len(table))
    xerr = [(table["change"] - table["ci_low"]).clip(lower=0), (table["ci_high"] - table["change"]).clip(lower=0)]
    ax.barh(list(ys), table["change"], xerr=xerr, capsize=4, color=sns.color_palette("muted", len(table)))
    ax.set_yticks(list(ys), table["control"])
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.8)
    name = DOMAIN_TITLES.get(domain, domain)
    ax.set(xlabel=f"{name} score change from right after its stage (95% paired CI)", ylabel="run from that checkpoint",
           title=title)
    return ax


def plot_breakdown(table: pd.DataFrame, domain: str, title: str) -> plt.Axes:
    """Stacked shares of each kind of answer of ``domain`` at each checkpoint (``table``: the
    :func:`mdrl_lib.interference.stage_breakdown` table, rows in chain order). Introduced in
    ``04_sequential_rl``."""
    from mdrl_lib.interference import CATEGORIES

    use_style()
    part = table[table["domain"] == domain].set_index("stage")[list(CATEGORIES)]
    _, ax = plt.subplots(figsize=(6.4, 3.4))
    bottom = pd.Series(0.0, index=part.index)
    colors = sns.color_palette("colorblind", len(CATEGORIES))
    labels = [s if s == "base" else f"after {DOMAIN_TITLES.get(s, s)}" for s in part.index]
    for color, category in zip(colors, CATEGORIES):
        ax.bar(labels, part[category], bottom=bottom, label=category, color=color)
        bottom = bottom + part[category]
    ax.set(ylim=(0, 1.0), xlabel="checkpoint along the chain", ylabel="share of held-out items",
           title=title)
    ax.tick_params(axis="x", labelrotation=20)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), title="answer")
    return ax


# ----------------------------------------------------------------------------- notebook 05's figures

def plot_refresh_curves(curves: pd.DataFrame, domain: str, drop: float, linear: str) -> None:
    """Two panels: ``domain``'s change over each refresh curve against the budget, with the drop to recover
    (``drop`` < 0, dashed), and the other domains' changes over the curve named ``linear``. ``curves``: one
    row per (curve, domain, steps) with ``diff``, ``ci_low``, ``ci_high`` (budget 0 included)."""
    from mdrl_lib.domains.base import DOMAIN_NAMES, DOMAIN_TITLES

    title = DOMAIN_TITLES[domain]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    plot_budget_curves(curves[curves["domain"] == domain], f"{title}: change over the refresh", x="steps", ax=axes[0],
                       xlabel=f"refresh budget (GRPO steps on {title})",
                       ylabel=f"{title} score change (95% paired interval)")
    axes[0].axhline(-drop, color="grey", ls="--", lw=1, label=f"the drop to recover ({-drop:.3f})")
    axes[0].legend(fontsize=8)
    along = curves[curves["curve"] == linear]
    others = along[along["domain"] != domain].assign(curve=lambda t: t["domain"].map(DOMAIN_TITLES))
    plot_budget_curves(others, "The other domains over the (linear) refresh", x="steps", ax=axes[1],
                       xlabel=f"refresh budget (GRPO steps on {title})", ylabel="score change (95% paired interval)",
                       colors={DOMAIN_TITLES[d]: DOMAIN_COLORS[d] for d in DOMAIN_NAMES})
    plt.tight_layout()
    plt.show()


DISTANCE_PANELS = {"overall": "‖θ − θ_A*‖ (all weights)", "routes": "‖θ − θ_A*‖ on the shared-route coordinates",
                   "subspace": "‖P_S(θ − θ_A*)‖ on the conflict subspace S"}


def plot_distances(distance: pd.DataFrame) -> None:
    """One panel per distance of :data:`DISTANCE_PANELS` against the refresh budget, one line per curve.
    ``distance``: columns ``curve``, ``steps``, ``overall``, ``routes``, ``subspace``."""

    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for ax, (column, label) in zip(axes, DISTANCE_PANELS.items()):
        plot_budget_curves(distance, label, x="steps", y=column, band=None, ax=ax, zero_line=False,
                           xlabel="refresh budget (GRPO steps)", ylabel="distance to θ_A*")
    plt.tight_layout()
    plt.show()


def plot_rollback_curves(curves: pd.DataFrame, drops: Mapping[str, pd.DataFrame],
                         pairs: Sequence[tuple[str, str]]) -> None:
    """One row of panels per pair (A, B): A's change over the rollback budget by rule (with A's drop since
    before B's stage, dashed), then each other domain's (collateral). ``curves``: rows of (pair, rule,
    fraction, domain) with ``diff``, ``ci_low``, ``ci_high`` against the chain's end (``revert_stage``
    left out); ``drops``: per pair ``"A,B"``, the :func:`mdrl_lib.recovery.paired_changes` from before B's stage to the end."""
    from mdrl_lib.domains.base import DOMAIN_NAMES, DOMAIN_TITLES

    from mdrl_lib import recovery

    rule_colors = dict(zip(recovery.SWEEP_RULES, plt.get_cmap("tab10").colors))
    fig, axes = plt.subplots(len(pairs), 4, figsize=(18, 4 * len(pairs)), squeeze=False)
    for r, (a, b) in enumerate(pairs):
        pair = f"{a},{b}"
        frame = curves[(curves["pair"] == pair) & (curves["rule"] != "revert_stage")]
        for c, domain in enumerate([a] + [d for d in DOMAIN_NAMES if d != a]):
            part = frame[frame["domain"] == domain].rename(columns={"rule": "curve"})
            what = "recovery" if domain == a else "collateral"
            plot_budget_curves(part, f"{pair}: {DOMAIN_TITLES[domain]} ({what})", x="fraction", ax=axes[r, c],
                               logx=True, band=("ci_low", "ci_high"),
                               xlabel="rollback budget k (fraction of all parameters)",
                               ylabel=f"{DOMAIN_TITLES[domain]} change vs chain end", colors=rule_colors)
            if domain == a:
                axes[r, c].axhline(-drops[pair].set_index("domain").loc[a, "diff"], color="grey", ls="--", lw=1)
    plt.tight_layout()
    plt.show()


def plot_costs(costs: pd.DataFrame, domain: str, fraction: float) -> None:
    """A's change against each method's cost (log scale): refreshes by schedule, rollbacks with a gradient
    at budget ``fraction``, and the weight-only rollbacks (cost 0) as dotted lines. ``costs``: indexed by
    method (``refresh ...``, ``rollback ...``) with columns ``cost`` and ``A change``."""
    from mdrl_lib.domains.base import DOMAIN_TITLES

    title = DOMAIN_TITLES[domain]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for schedule, marker in (("linear", "o"), ("constant", "x")):
        points = costs[costs.index.str.startswith("refresh") & costs.index.str.contains(schedule)]
        ax.plot(points["cost"], points["A change"], marker=marker, ls="", label=f"refreshes ({schedule} rate)")
    roll_points = costs[costs.index.str.startswith("rollback") & (costs["cost"] > 0)]
    ax.plot(roll_points["cost"], roll_points["A change"], marker="s", ls="",
            label=f"rollbacks with a gradient (k = {fraction:g})")
    for name, point in costs[costs["cost"] > 0].iterrows():
        short = name.replace("rollback ", "").replace(", the first-order rollback's cost", ", equal cost")
        short = short.split(" (k")[0]
        ax.annotate(short, (point["cost"], point["A change"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    for name, point in costs[costs["cost"] == 0].iterrows():
        ax.axhline(point["A change"], ls=":", lw=1, color="grey")
        ax.annotate(name.replace("rollback ", "") + ", cost 0", (costs["cost"].max(), point["A change"]), ha="right",
                    fontsize=7, color="grey", xytext=(0, 2), textcoords="offset points")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set(xlabel="cost (sequence passes, log scale)", ylabel=f"{title} change vs the chain's end",
           title=f"{title} recovered against cost (dotted: weight-only rollbacks)")
    ax.legend(fontsize=8)
    plt.show()


C7_CURVES = {"equal count": {"first_order": "first-order rule", "random": "random (mean of the draws)",
                             "magnitude": "magnitude"},
             "equal size of change": {"first_order": "first-order rule", "random_size": "random (mean of the draws)",
                                      "magnitude_size": "magnitude"}}


def plot_c7_k_curves(curves: pd.DataFrame, pair: str, domain: str, k_range: Sequence[float]) -> None:
    """C7's figure for one pair ``"A,B"``: A's change against the rollback budget k (log scale) under the rule and
    its controls, at equal count (left) and at equal size of change (right; the controls take coordinates until
    they move the weights as far as the rule), with 95% paired bands and the k range C7 averages over shaded.
    ``curves``: rows of (pair, rule, fraction, domain) with ``diff``, ``ci_low``, ``ci_high`` against the chain's
    end, the rules named as in :data:`C7_CURVES`. Introduced in ``05_refresh_vs_rollback``."""
    from mdrl_lib.domains.base import DOMAIN_TITLES

    use_style()
    title = DOMAIN_TITLES[domain]
    colors = {"first-order rule": "C0", "random (mean of the draws)": "C7", "magnitude": "C1"}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, (matching, names) in zip(axes, C7_CURVES.items()):
        part = curves[(curves["pair"] == pair) & (curves["domain"] == domain) & curves["rule"].isin(list(names))]
        part = part.assign(curve=part["rule"].map(names))
        part = part.set_index("curve").loc[[n for n in names.values() if n in set(part["curve"])]].reset_index()
        plot_budget_curves(part, f"{pair}: {title} over k, controls at {matching}", x="fraction", ax=ax, logx=True,
                           xlabel="rollback budget k (fraction of all parameters)",
                           ylabel=f"{title} change vs chain end (95% paired band)", colors=colors)
        ax.axvspan(k_range[0], k_range[1], color="grey", alpha=0.08, label="k range C7 averages over")
        ax.legend(fontsize=8)
    plt.tight_layout()
    plt.show()


def plot_objective_tracking(rollback: pd.DataFrame, refresh: pd.DataFrame, domain: str, pair: str) -> None:
    """Does L_A track A's score? Left: A's score change against L_A's measured change, one series per rollback
    rule of ``rollback`` (columns ``rule``, ``fraction``, ``loss_change``, ``score_change``) and the refresh's
    budgets (``refresh``: ``steps``, ``loss_change``, ``score_change``); a valid proxy puts its points in the
    upper-left and lower-right quadrants. Right: L_A's measured change against the first-order prediction
    (``predicted_change``) for the gradient rules, with the line y = x where the prediction would hold.
    Introduced in ``05_refresh_vs_rollback``."""
    from mdrl_lib.domains.base import DOMAIN_TITLES

    use_style()
    title = DOMAIN_TITLES[domain]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    ax = axes[0]
    for rule, group in rollback.groupby("rule", sort=False):
        ax.plot(group["loss_change"], group["score_change"], marker="o", ls="-", lw=0.8, label=f"rollback: {rule}")
    ax.plot(refresh["loss_change"], refresh["score_change"], marker="s", ls="--", lw=0.8, color="black",
            label="linear refresh (0 = chain end)")
    for _, row in refresh.iterrows():
        ax.annotate(f"{int(row['steps'])}", (row["loss_change"], row["score_change"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.axhline(0, color="black", lw=0.8)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set(xlabel="L_A change from the chain's end (nats, measured; symlog)",
           ylabel=f"{title} score change vs chain end", title=f"{pair}: does L_A track {title}'s score?")
    ax.legend(fontsize=7)
    ax = axes[1]
    predicted = rollback[rollback["predicted_change"].notna()]
    for rule, group in predicted.groupby("rule", sort=False):
        ax.plot(group["predicted_change"], group["loss_change"], marker="o", ls="-", lw=0.8, label=rule)
    low = float(min(predicted["predicted_change"].min(), predicted["loss_change"].min(), 0))
    high = float(max(predicted["predicted_change"].max(), predicted["loss_change"].max(), 0))
    ax.plot([low, high], [low, high], color="grey", ls=":", lw=1, label="measured = predicted")
    ax.axhline(0, color="black", lw=0.8)
    ax.set(xlabel="first-order prediction g_A · change (nats)", ylabel="L_A change, measured (nats)",
           title="Is the first-order prediction local? (one point per k)")
    ax.legend(fontsize=7)
    plt.tight_layout()
    plt.show()


# ----------------------------------------------------------------------------- notebook 01's widget


def show_overlap(magnitudes: dict, pairs: dict, fraction: float, *, seed: int) -> None:
    """Draw C2's heatmap at ``fraction`` (fp32 magnitudes by name) and print the mean of each reference."""
    from mdrl_lib.edits import overlap

    matrix, table = overlap(magnitudes, pairs, fraction)
    means = table.groupby("reference", sort=False)["jaccard"].mean()
    chance = table["random_expectation"].iloc[0]
    plot_domain_matrix(matrix, vmin=0, vmax=1, fmt=".3f", colorbar_label="Jaccard index of top neurons",
                       title=f"Top-{fraction:.0%} neuron overlap of the experts (seed {seed})",
                       note=f"diagonal: same domain, two RL seeds; random sets: {chance:.3f}")
    plt.show()
    print(f"top {fraction:.0%} = {table['k'].iloc[0]} of {table['neurons'].iloc[0]} neurons; mean Jaccard: "
          + ", ".join(f"{ref} {value:.3f}" for ref, value in means.items()) + f"; random sets {chance:.3f}")


def overlap_drawer(magnitudes: dict, pairs: dict, *, seed: int):
    """:func:`show_overlap` of these magnitudes and pairs as a function of the fraction alone (the widget's)."""

    def draw(fraction: float) -> None:
        show_overlap(magnitudes, pairs, fraction, seed=seed)

    return draw


# ----------------------------------------------------------------------------- notebook 04's GRPO diagnostics


def plot_grpo_diagnostics(diagnostics: pd.DataFrame, title: str):
    """One panel per GRPO diagnostic (zero-advantage share, mean |advantage|, loss, entropy) and, when the table
    holds it, the mean verifier reward of each run's own completions (``own_reward``), each a line per run against
    the step counted over the run's stages (a :func:`mdrl_lib.interference.run_diagnostics` table; runs whose
    stages were not recorded are left out and named in the title). Introduced in ``04_sequential_rl``."""
    from mdrl_lib.training import DIAGNOSTICS

    labels = {"zero_advantage_share": "share of zero-advantage groups", "mean_abs_advantage": "mean |advantage|",
              "loss": "GRPO loss", "entropy": "mean token entropy",
              "own_reward": "verifier reward of own completions"}
    recorded = diagnostics.groupby("run", sort=False)["recorded"].all()
    shown = diagnostics[diagnostics["run"].isin(recorded[recorded].index)]
    names = list(DIAGNOSTICS) + (["own_reward"] if "own_reward" in shown and shown["own_reward"].notna().any() else [])
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4))
    for ax, name in zip(axes, names):
        if shown.empty:
            ax.set(title=labels[name])
            continue
        plot_budget_curves(shown, labels[name], x="step", y=name, curve="run", band=None, ax=ax,
                           xlabel="optimizer step over the later stages", ylabel=labels[name],
                           zero_line=name == "loss")
    missing = list(recorded[~recorded].index)
    fig.suptitle(title + (f" (not recorded: {', '.join(missing)})" if missing else ""))
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------ notebook 05's recovery methods side by side

FAMILY_MARKERS = {"refresh": "o", "rollback": "s", "merge": "D", "stage_merge": "P", "alternating": "^",
                  "expert": "*"}


def plot_recovery_front(table: pd.DataFrame, damaged: str, *, title: str | None = None,
                        ax: plt.Axes | None = None) -> plt.Axes:
    """Recovery methods side by side: the damaged domain's score change against the mean change of the other
    domains, both against the chain's end, paired over items on the report half (a
    :func:`mdrl_lib.comparison.recovery_comparison` table: columns method, family, cost, damaged_change,
    others_mean, and on_front when present, else :func:`mdrl_lib.comparison.pareto_front` is taken). Each point is
    labelled: a point on the front or a reference (no cost) with its method and cost, any other with a number named
    in a key beside the axes (method and cost); marker area grows with the cost in sequence passes (hollow: no cost
    applies); colour and marker by family (legend); the Pareto front is a dashed line through its points, ringed;
    the chain's end is the origin. Introduced for notebook ``06_recovery_methods`` (recovery methods side by
    side)."""
    import numpy as np

    from mdrl_lib.comparison import FAMILIES, pareto_front

    use_style()
    if ax is None:
        _, ax = plt.subplots(figsize=(11, 5.5), layout="constrained")
    name = DOMAIN_TITLES.get(damaged, damaged)
    others = [DOMAIN_TITLES.get(d, d) for d in table.attrs.get("domains", []) if d != damaged]
    costs = table["cost"].astype(float)
    top = costs.max() if costs.notna().any() and costs.max() > 0 else 1.0
    sizes = 40 + 360 * np.sqrt(costs.fillna(0).clip(lower=0) / top)
    palette = dict(zip(FAMILIES, sns.color_palette("colorblind", len(FAMILIES))))
    for family in dict.fromkeys(table["family"]):
        part = table["family"] == family
        filled = part & costs.notna()
        hollow = part & costs.isna()
        color = palette.get(family, "grey")
        marker = FAMILY_MARKERS.get(family, "o")
        if filled.any():
            ax.scatter(table.loc[filled, "others_mean"], table.loc[filled, "damaged_change"], s=sizes[filled],
                       color=color, marker=marker, alpha=0.8, label=family, zorder=3)
        if hollow.any():
            ax.scatter(table.loc[hollow, "others_mean"], table.loc[hollow, "damaged_change"], s=sizes[hollow],
                       facecolors="none", edgecolors=color, marker=marker, linewidths=1.5,
                       label=family if not filled.any() else None, zorder=3)
    front = table[table["on_front"].astype(bool)] if "on_front" in table.columns else pareto_front(table)
    front = front.sort_values("others_mean")
    ax.plot(front["others_mean"], front["damaged_change"], ls="--", color="black", lw=1, zorder=2,
            label="Pareto front (change, change, cost)")
    ax.scatter(front["others_mean"], front["damaged_change"], s=sizes[front.index] + 120, facecolors="none",
               edgecolors="black", linewidths=0.8, zorder=2)
    on_front = set(front["method"])
    key = []  # points off the front carry a number, named in a key beside the axes, so that labels do not pile up
    for i, row in table.iterrows():
        cost = "no cost: a reference" if pd.isna(row["cost"]) else f"{row['cost']:,.0f} passes"
        if row["method"] in on_front or pd.isna(row["cost"]):
            text = f"{row['method']}\n({cost})"
        else:
            key.append(f"{len(key) + 1}: {row['method']} ({cost})")
            text = str(len(key))
        ax.annotate(text, (row["others_mean"], row["damaged_change"]), fontsize=7, xytext=(5, 4),
                    textcoords="offset points")
    if key:
        ax.text(1.02, 1.0, "off the front:\n" + "\n".join(key), transform=ax.transAxes, fontsize=7, va="top")
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(0, color="grey", lw=0.8)
    ax.annotate("chain end", (0, 0), fontsize=7, color="grey", xytext=(-4, -10), textcoords="offset points",
                ha="right")
    mean_of = f"the other {len(others)} ({', '.join(others)})" if others else "the other domains"
    ax.set(xlabel=f"mean score change of {mean_of} vs the chain's end\n(paired over items, report half)",
           ylabel=f"{name} score change vs the chain's end\n(paired over items, report half)",
           title=title or f"Recovery methods: {name} against the other domains\n(marker area: cost in sequence passes)")
    legend = ax.legend(title="family (hollow: no cost applies)", fontsize=8, loc="best")
    for handle in legend.legend_handles:
        if hasattr(handle, "set_sizes"):
            handle.set_sizes([50])  # the legend names families; marker area is for cost in the plot only
    return ax


# ------------------------------------------------------------------------------- notebook 03's ladder of regimes


def plot_ladder(table: pd.DataFrame, *, tolerance: float | None = None) -> plt.Figure:
    """The ladder's rungs side by side (a :func:`mdrl_lib.ladder.ladder_table`): left, each rung's first- and
    second-order terms and their sum as a share of the measured damage of L_A at t = 1 (1 = the quadratic model is
    exact; ``tolerance``, when given, shades the band the locality premise accepts); right, the plain-GD refresh's
    measured ratio ``||P_S(theta_T - theta_A*)|| / ||P_S delta_B||`` beside the theorem's bound ``|1 - alpha mu|^T``
    (log scale: below the bound, the theorem held). Each rung's label carries its premises held. Introduced in
    ``03_perturbation_theory``."""
    import numpy as np

    use_style()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4), layout="constrained")
    labels = [f"{r}\n(premises {p})" for r, p in zip(table["regime"], table["premises held"])]
    x = np.arange(len(table))
    measured = table["measured damage"].astype(float).replace(0.0, np.nan)
    parts = {"first order": table["first order"], "second order": table["second order"],
             "first + second": table["first order"] + table["second order"]}
    width = 0.26
    for i, (name, values) in enumerate(parts.items()):
        left.bar(x + (i - 1) * width, values.astype(float) / measured, width, label=name)
    left.axhline(1.0, color="black", lw=1, label="measured damage")
    if tolerance is not None:
        left.axhspan(1 - tolerance, 1 + tolerance, color="grey", alpha=0.2, label=f"locality premise (±{tolerance:g})")
    left.set_xticks(x, labels, fontsize=8)
    left.set(ylabel="term / measured change of $L_A$ (t = 1)",
             title="Taylor terms as shares of the measured change\n(first + second = 1: the quadratic model is exact)")
    left.legend(fontsize=8)
    ratio, bound = table["GD ratio"].astype(float), table["bound"].astype(float)
    right.bar(x - 0.2, ratio, 0.4, label="measured ratio")
    right.bar(x + 0.2, bound, 0.4, label="theorem's bound $|1-\\alpha\\mu|^T$", color="grey")
    right.set_yscale("log")
    right.set_xticks(x, labels, fontsize=8)
    right.set(ylabel="$\\|P_S(\\theta_T-\\theta_A^*)\\| \\,/\\, \\|P_S\\delta_B\\|$",
              title="Plain-GD refresh on $L_A$: contraction on S against the bound")
    right.legend(fontsize=8)
    return fig


VERDICT_COLORS = {"supported": "tab:green", "supported (outcome only)": "tab:olive", "not supported": "tab:red",
                  "not testable here": "tab:gray", "not measured": "lightgray"}


def plot_reference(reference: Mapping, placed: pd.DataFrame, *, columns: int = 3) -> plt.Figure | None:
    """One panel per check of ``placed`` (a :func:`mdrl_lib.reference.place_run` table): the reference seeds'
    effects (dots coloured by each seed's verdict), the threshold the claim reads it against (a dashed line when
    every seed has the same one, grey ticks per seed otherwise), and this run's effect (a black star). A log scale
    when the effects are positive and span more than a factor 100. ``None`` when no check has an effect.
    Introduced in notebook ``01_sparse_edits``; every notebook's claim section uses it."""
    import numpy as np

    rows = [row for row in placed.to_dict("records") if row["effect"] != "-"]
    if not rows:
        return None
    use_style()
    columns = max(1, min(columns, len(rows)))
    lines = -(-len(rows) // columns)
    fig, axes = plt.subplots(lines, columns, figsize=(4.2 * columns, 3.3 * lines), layout="constrained",
                             squeeze=False)
    for ax in axes.flat[len(rows):]:
        ax.set_visible(False)
    jitter = np.random.default_rng(0)  # only the dots' horizontal spread
    for ax, row in zip(axes.flat, rows):
        check = reference["checks"][row["check"]]
        seeds = [s for s in check["seeds"] if s["effect"] is not None]
        x = jitter.uniform(-0.15, 0.15, len(seeds))
        for verdict in VERDICT_COLORS:
            chosen = [i for i, s in enumerate(seeds) if s["verdict"] == verdict]
            if chosen:
                ax.scatter(x[chosen], [seeds[i]["effect"] for i in chosen], color=VERDICT_COLORS[verdict],
                           label=f"seed: {verdict}", s=28, zorder=3)
        thresholds = {s["threshold"] for s in seeds if s["threshold"] is not None}
        if len(thresholds) == 1:
            ax.axhline(thresholds.pop(), color="black", ls="--", lw=1,
                       label=f"threshold (claim: {check['effect']['side']})")
        elif thresholds:
            ax.scatter(x, [s["threshold"] for s in seeds], marker="_", color="grey", s=120,
                       label=f"each seed's threshold (claim: {check['effect']['side']})")
        values = [s["effect"] for s in seeds] + ([row["this run's effect"]] if row["this run's effect"] is not None
                                                 else [])
        if row["this run's effect"] is not None:
            ax.scatter([0.35], [row["this run's effect"]], marker="*", s=160, color="black", zorder=4,
                       label=f"this run ({row['this run']})")
        if values and min(values) > 0 and max(values) / min(values) > 100:
            ax.set_yscale("log")
        ax.set_xlim(-0.5, 0.6)
        ax.set_xticks([])
        ax.set(ylabel=check["effect"]["figure"], xlabel=f"{len(seeds)} reference seeds | this run",
               title=f"{row['check']}\nreference: {check['verdict']}")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7, loc="best")
    return fig
