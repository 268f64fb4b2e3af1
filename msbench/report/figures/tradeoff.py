"""Trade-off figures: benign against clone accuracy per defense and attack setting (the collapse band
shaded), and the sweep of each defense's setting against benign accuracy and distortion."""
from __future__ import annotations

import math

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from msbench.report.figures.style import (COLUMN_WIDTH, FADED, defense_handles, figure_width, legend, legend_columns,
                                          paper_style, uninformative_note)
from msbench.report.labels import attack_label, dataset_label, in_order, order_attacks, order_defenses
from msbench.report.stats import summarise
from msbench.report.table_entry import COLLAPSED_MARK

MARKERS = ["o", "^", "D", "v", "P", "X", "*", "h"]
"""One shape per attack in the trade-off figure (never the square, which the legend keeps for nothing)."""


def tradeoff(results: pd.DataFrame, palette: dict[str, str], collapsed: set = frozenset(), tolerance: float = 1.0,
             uninformative: set = frozenset(),
             reference: dict | None = None) -> Figure | None:
    """Benign accuracy (x) against clone accuracy (y), one point per defense and attack setting; one panel per
    dataset (and arch). Down and right is a better defense. Colour: defense; shape: attack; filled: soft
    labels, hollow: hard labels. The grey band left of Vanilla's benign accuracy (dotted) minus the
    tolerance holds the collapsed victims; those far to the left sit on the axis edge as left-pointing
    triangles, with their benign accuracy written beside them, so the rest keep a readable scale."""
    summary = summarise(results)
    summary = summary[(summary["n_ok"] > 0) & summary["benign_mean"].notna()]
    if summary.empty:
        return None
    panels = in_order(zip(summary["dataset"], summary["arch"]))
    attacks = order_attacks(summary["attack"])
    markers = {a: MARKERS[i % len(MARKERS)] for i, a in enumerate(attacks)}
    modes = in_order(summary["label_mode"])
    defenses = order_defenses(summary["defense"])
    reference = reference or {}
    width = figure_width(len(panels))
    with sns.axes_style("whitegrid", paper_style()), matplotlib.rc_context(paper_style()):
        fig = Figure(figsize=(width, 2.7 + 0.17 * math.ceil(len(defenses) / legend_columns(width))),
                     layout="constrained")
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (dataset, arch) in zip(axes, panels):
            frame = summary[(summary["dataset"] == dataset) & (summary["arch"] == arch)]
            ref = reference.get((dataset, arch))
            benign = frame["benign_mean"].to_numpy(float)
            low_clip = (ref - max(3.0, 3 * tolerance)) if ref is not None else -np.inf
            x_lo, x_hi = max(np.nanmin(benign), low_clip), np.nanmax(benign)
            if ref is not None:  # show the collapse band, narrow
                x_lo, x_hi = min(x_lo, ref - 2 * tolerance), max(x_hi, ref + 0.5 * tolerance)
            pad = 0.06 * (x_hi - x_lo) + 0.1
            x_lo, x_hi = x_lo - pad, x_hi + pad
            y_lo, y_hi = frame["clone_mean"].min(), frame["clone_mean"].max()
            y_pad = 0.08 * (y_hi - y_lo) + 1.0
            y_lo, y_hi = max(0.0, y_lo - y_pad), min(100.0, y_hi + y_pad)
            if ref is not None:
                ax.axvspan(x_lo, ref - tolerance, color="#DDDDDD", alpha=0.6, linewidth=0, zorder=0)
                ax.axvline(ref, color="#999999", linewidth=0.6, linestyle=":", zorder=1)
            edge = x_lo + pad * 0.5
            off = frame[frame["benign_mean"] < edge]
            for _, row in frame.iterrows():
                colour = palette[row["defense"]]
                x, marker = row["benign_mean"], markers[row["attack"]]
                if x < edge:  # far off to the left: pinned to the edge as a left-pointing triangle
                    x, marker = edge, "<"
                filled = len(modes) == 1 or row["label_mode"] == modes[0]
                faded = (dataset, row["arch"], row["attack"], row["label_mode"]) in uninformative
                ax.scatter(x, row["clone_mean"], s=22, marker=marker, linewidth=0.9, zorder=3,
                           alpha=FADED if faded else 1.0,
                           facecolor=colour if filled else "white", edgecolor="#333333" if filled else colour)
            if not off.empty:
                n = off["defense"].nunique()
                ax.annotate(f"◀ {n} at {off['benign_mean'].min():.1f}–{off['benign_mean'].max():.1f}%"
                            if n > 1 or off['benign_mean'].nunique() > 1
                            else f"◀ at {off['benign_mean'].iloc[0]:.1f}%",
                            (edge, off["clone_mean"].max()), xytext=(4, 5), textcoords="offset points", fontsize=6,
                            color="#333333", va="bottom")
            ax.set_xlim(x_lo, x_hi)
            ax.set_ylim(y_lo, y_hi)
            ax.set_title(dataset_label(dataset) + (f" · {arch}" if len({a for _, a in panels}) > 1 else ""))
            ax.set_xlabel("benign accuracy (%)")
            ax.set_ylabel("clone accuracy (%)" if ax is axes[0] else "")
        handles = defense_handles(defenses, palette)
        shapes = [Line2D([], [], marker=markers[a], linestyle="", markersize=4.5, markerfacecolor="#666666",
                         markeredgecolor="#333333", label=attack_label(a)) for a in attacks]
        if len(modes) > 1:
            shapes += [Line2D([], [], marker="o", linestyle="", markersize=4.5,
                              markerfacecolor="#666666" if m == modes[0] else "white",
                              markeredgecolor="#333333", label=m) for m in modes]
        extra = []
        if reference:
            extra.append(Patch(facecolor="#DDDDDD", label=f"collapsed ({COLLAPSED_MARK})"))
        if uninformative & set(zip(summary["dataset"], summary["arch"], summary["attack"], summary["label_mode"])):
            extra.append(Line2D([], [], marker="o", linestyle="", markersize=4.5, markerfacecolor="#666666",
                                alpha=FADED,
                                markeredgecolor="#333333", label=uninformative_note()))
        ncol = legend_columns(width)
        legend(fig, handles, ncol)
        rest = shapes[len(attacks):] + extra  # label modes and the band: their own row
        across = min(3 if width <= COLUMN_WIDTH else 8, max(len(attacks), len(rest)))
        blank = Line2D([], [], linestyle="", label=" ")
        shapes = shapes[:len(attacks)]
        shapes += [blank] * (-len(shapes) % across)
        legend(fig, shapes + rest, across, loc="outside lower center")
    return fig


def sweep_tradeoff(sweep: pd.DataFrame, palette: dict[str, str]) -> Figure | None:
    """The trade-off sweep: clone accuracy against benign accuracy and against query distortion, one
    curve per defense through its swept settings (mean over seeds); one row per (attack, label mode),
    two panels per dataset. Down and right (benign) or down and left (distortion) is a better defense."""
    ok = sweep[sweep["status"] == "ok"] if not sweep.empty else sweep
    if ok.empty:
        return None
    keys = ["dataset", "attack", "label_mode", "defense", "setting"]
    points = ok.groupby(keys, dropna=False)[["benign_acc", "clone_acc", "distortion_queries"]].mean().reset_index()
    datasets = in_order(points["dataset"])
    kinds = in_order(zip(points["attack"], points["label_mode"]))
    defenses = order_defenses(points["defense"])
    axes_of = (("benign_acc", "benign accuracy (%)"), ("distortion_queries", "distortion on the queries (mean L1)"))
    width = figure_width(2 * len(datasets))
    with sns.axes_style("whitegrid", paper_style()), matplotlib.rc_context(paper_style()):
        fig = Figure(figsize=(width, 1.9 * len(kinds) + 0.6), layout="constrained")
        axes = fig.subplots(len(kinds), 2 * len(datasets), squeeze=False)
        for i, (attack, mode) in enumerate(kinds):
            for j, dataset in enumerate(datasets):
                frame = points[(points["dataset"] == dataset) & (points["attack"] == attack)
                               & (points["label_mode"] == mode)]
                for k, (column, xlabel) in enumerate(axes_of):
                    ax = axes[i][2 * j + k]
                    for defense in defenses:
                        line = frame[frame["defense"] == defense].sort_values("setting")
                        if line.empty:
                            continue
                        ax.plot(line[column], line["clone_acc"], marker="o", markersize=3.5, linewidth=1.2,
                                color=palette[defense], zorder=3)
                    ax.set_title(f"{dataset_label(dataset)}, {attack_label(attack)} {mode}")
                    ax.set_xlabel(xlabel)
                    ax.set_ylabel("clone accuracy (%)")
        legend(fig, defense_handles(defenses, palette), legend_columns(width))
    return fig
