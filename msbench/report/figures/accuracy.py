"""Figures of clone accuracy per defense: bars with 95% CIs over seeds (hatched for a collapsed
victim) and the heat map of relative performance (``†`` marks a collapsed victim)."""
from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from msbench.report.figures.style import (COLUMN_WIDTH, FADED, TEXT_WIDTH, collapsed_note, defense_handles,
                                          figure_width,
                                          finished, legend, legend_columns, mean_ci, paper_style, uninformative_note)
from msbench.report.labels import attack_label, dataset_label, defense_label, in_order, order_attacks, order_defenses
from msbench.report.stats import summarise
from msbench.report.table_entry import COLLAPSED_MARK, UNINFORMATIVE_MARK


def clone_accuracy(results: pd.DataFrame, palette: dict[str, str], collapsed: set = frozenset(),
                   tolerance: float = 1.0, uninformative: set = frozenset()) -> Figure | None:
    """Bars of clone accuracy per defense (95% CI over seeds), grouped by label mode; one panel per
    (attack, arch) x dataset. A collapsed victim's bar is hatched; an uninformative setting's bars are
    faded and its label mode marked."""
    ok = finished(results)
    if ok.empty:
        return None
    datasets = in_order(ok["dataset"])
    attacks = order_attacks(ok["attack"])
    panels = sorted(in_order(zip(ok["attack"], ok["arch"])), key=lambda p: attacks.index(p[0]))
    several_archs = ok["arch"].nunique() > 1  # one architecture: the rows name the attack only
    defenses = order_defenses(ok["defense"])
    width = figure_width(len(datasets))
    with sns.axes_style("whitegrid", paper_style()), matplotlib.rc_context(paper_style()):
        fig = Figure(figsize=(width, 1.45 * len(panels) + 0.7), layout="constrained")
        axes = fig.subplots(len(panels), len(datasets), squeeze=False, sharey=True)
        for i, (attack, arch) in enumerate(panels):
            for j, dataset in enumerate(datasets):
                ax = axes[i][j]
                frame = ok[(ok["attack"] == attack) & (ok["arch"] == arch) & (ok["dataset"] == dataset)]
                if frame.empty:
                    ax.set_axis_off()
                    continue
                present = [d for d in defenses if d in set(frame["defense"])]
                modes = in_order(frame["label_mode"])
                bar = 0.8 / len(present)
                for k, defense in enumerate(present):
                    stats = [mean_ci(frame[(frame["defense"] == defense) & (frame["label_mode"] == m)]["clone_acc"])
                             for m in modes]
                    xs = np.arange(len(modes)) - 0.4 + bar * (k + 0.5)
                    means = np.array([s[0] for s in stats])
                    errs = np.array([s[1] if np.isfinite(s[1]) else 0.0 for s in stats])
                    hatch = "////" if (dataset, arch, defense) in collapsed else None
                    faded = [FADED if (dataset, arch, attack, m) in uninformative else 1.0 for m in modes]
                    for x, mean, alpha in zip(xs, means, faded):
                        ax.bar(x, mean, bar, color=palette[defense], edgecolor="#333333", linewidth=0.3, hatch=hatch,
                               alpha=alpha)
                    if errs.any():
                        ax.errorbar(xs, means, yerr=errs, fmt="none", ecolor="#222222", elinewidth=0.6, capsize=1.2)
                ax.set_xticks(range(len(modes)),
                              [f"{m} {UNINFORMATIVE_MARK}" if (dataset, arch, attack, m) in uninformative else m
                                                  for m in modes])
                ax.set_title(dataset_label(dataset) if i == 0 else "")
                ax.set_ylabel(f"{attack_label(attack)}{f' · {arch}' if several_archs else ''}\nclone acc. (%)"
                              if j == 0 else "",
                              wrap=True)
                ax.set_ylim(0, 100)
                ax.grid(axis="x", visible=False)
        handles = defense_handles(defenses, palette)
        if collapsed & {(d, a, f) for d, a, f in zip(ok["dataset"], ok["arch"], ok["defense"])}:
            handles.append(Patch(facecolor="white", edgecolor="#333333", hatch="////", linewidth=0.4,
                                 label=collapsed_note(collapsed, tolerance)))
        if uninformative & set(zip(ok["dataset"], ok["arch"], ok["attack"], ok["label_mode"])):
            handles.append(Patch(facecolor="#999999", alpha=FADED, edgecolor="none", label=uninformative_note()))
        legend(fig, handles, legend_columns(width))
    return fig


def relative_heatmap(results: pd.DataFrame, collapsed: set = frozenset(), tolerance: float = 1.0,
                     uninformative: set = frozenset()) -> Figure | None:
    """Relative performance (clone / benign accuracy): one panel per (dataset, arch), rows attack x label
    mode, columns defenses, one colour scale. ``†`` marks a collapsed victim's cells; an uninformative
    setting's row is veiled in white and its label marked."""
    summary = summarise(results)
    summary = summary[summary["n_ok"] > 0]
    if summary.empty:
        return None
    archs = in_order(summary["arch"])
    attacks = order_attacks(summary["attack"])
    panels = in_order(zip(summary["dataset"], summary["arch"]))
    rows = sorted(in_order(zip(summary["attack"], summary["label_mode"])), key=lambda c: attacks.index(c[0]))
    defenses = order_defenses(summary["defense"])
    vmax = max(1.0, float(summary["rel_mean"].max()))
    width = COLUMN_WIDTH if len(defenses) <= 8 else TEXT_WIDTH
    with sns.axes_style("white", paper_style()), matplotlib.rc_context(paper_style()):
        fig = Figure(figsize=(width, (0.19 * len(rows) + 0.3) * len(panels) + 1.1), layout="constrained")
        axes = fig.subplots(len(panels), 1, squeeze=False, sharex=True)[:, 0]
        for ax, (dataset, arch) in zip(axes, panels):
            frame = summary[(summary["dataset"] == dataset) & (summary["arch"] == arch)]
            grid = np.full((len(rows), len(defenses)), np.nan)
            annot = np.full((len(rows), len(defenses)), "", dtype=object)
            for _, row in frame.iterrows():
                i, j = rows.index((row["attack"], row["label_mode"])), defenses.index(row["defense"])
                grid[i, j] = row["rel_mean"]
                mark = COLLAPSED_MARK if (dataset, arch, row["defense"]) in collapsed else ""
                annot[i, j] = f"{row['rel_mean']:.2f}{mark}" if np.isfinite(row["rel_mean"]) else ""
            image = ax.imshow(grid, cmap="cividis", vmin=0, vmax=vmax, aspect="auto")
            for (i, j), text in np.ndenumerate(annot):
                if text:
                    ax.text(j, i, text, ha="center", va="center", fontsize=5.8,
                            color="black" if grid[i, j] > 0.55 * vmax else "white")
            useless = [i for i, (a, m) in enumerate(rows) if (dataset, arch, a, m) in uninformative]
            for i in useless:
                ax.axhspan(i - 0.5, i + 0.5, color="white", alpha=1 - FADED, linewidth=0, zorder=2)
            ax.set_yticks(range(len(rows)),
                          [f"{attack_label(a)} {m}" + (f" {UNINFORMATIVE_MARK}" if i in useless else "")
                                             for i, (a, m) in enumerate(rows)], fontsize=6.5)
            ax.set_xticks(range(len(defenses)), [defense_label(d) for d in defenses], rotation=40, ha="right",
                          rotation_mode="anchor", fontsize=6.5)
            ax.set_xticks(np.arange(len(defenses) + 1) - 0.5, minor=True)
            ax.set_yticks(np.arange(len(rows) + 1) - 0.5, minor=True)
            ax.grid(which="minor", color="white", linewidth=0.8)
            ax.tick_params(which="both", length=0)
            for side in ("top", "right", "left", "bottom"):
                ax.spines[side].set_visible(False)
            ax.set_title(dataset_label(dataset) + (f" · {arch}" if len(archs) > 1 else ""), fontsize=7.5)
        bar = fig.colorbar(image, ax=list(axes), orientation="horizontal", location="bottom", shrink=0.7, aspect=35,
                           pad=0.02)
        shown = collapsed & set(zip(summary["dataset"], summary["arch"], summary["defense"]))
        greyed = uninformative & set(zip(summary["dataset"], summary["arch"], summary["attack"], summary["label_mode"]))
        bar.set_label("relative performance (clone / benign accuracy; lower is better)"
                      + (f"\n{COLLAPSED_MARK} collapsed: benign acc. > {tolerance:g} points below Vanilla's"
                         if shown else "")
                      + (f"\n{uninformative_note()}" if greyed else ""), fontsize=6.5)
        bar.ax.tick_params(labelsize=6)
    return fig
