"""Clone accuracy against queries for every attack that reported budget points (mean and 95% CI
band over seeds; dashed for a collapsed victim)."""
from __future__ import annotations

import math

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from msbench.report.figures.style import (FADED, collapsed_note, defense_handles, figure_width, legend, legend_columns,
                                          mean_ci,
                                          paper_style, uninformative_note)
from msbench.report.labels import attack_label, dataset_label, in_order, order_attacks, order_defenses
from msbench.report.table_entry import UNINFORMATIVE_MARK


def _log_ticks(ax, low: float, high: float, most: int = 3) -> None:
    """Log x axis with at most ``most`` plain labels (300, 1k, 3k): matplotlib's default labels every minor
    tick of a short range (2x10^2 3x10^2 4x10^2 ...), which overlap in a narrow panel."""
    for subs in ((1.0, 2.0, 5.0), (1.0, 3.0), (1.0,)):
        ticks = [m * 10 ** e for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1) for m in subs]
        if len([t for t in ticks if low <= t <= high]) <= most:
            break
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs, numticks=12))
    ax.xaxis.set_minor_locator(LogLocator(base=10, subs="auto", numticks=12))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_formatter(FuncFormatter(_compact_count))


def _compact_count(value: float, _pos=None) -> str:
    """1500 -> 1.5k, 20000 -> 20k, 1e6 -> 1M."""
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"


def curves(curve_table: pd.DataFrame, palette: dict[str, str], collapsed: set = frozenset(),
           tolerance: float = 1.0, uninformative: set = frozenset()) -> Figure | None:
    """Clone accuracy against queries for every attack that reported points (mean and 95% CI band over seeds);
    one row per (attack, label mode, arch), one column per dataset. None unless some curve has two points."""
    if curve_table.empty:
        return None
    keys = ["dataset", "arch", "defense", "attack", "label_mode", "seed"]
    if curve_table.groupby(keys)["queries"].nunique().max() < 2:
        return None
    attacks = order_attacks(curve_table["attack"])
    panels = sorted(in_order(zip(curve_table["attack"], curve_table["label_mode"], curve_table["arch"])),
                    key=lambda p: attacks.index(p[0]))
    datasets = in_order(curve_table["dataset"])
    defenses = order_defenses(curve_table["defense"])
    width = figure_width(len(datasets))
    with sns.axes_style("whitegrid", paper_style()), matplotlib.rc_context(paper_style()):
        fig = Figure(figsize=(width, 1.45 * len(panels) + 0.5), layout="constrained")
        axes = fig.subplots(len(panels), len(datasets), squeeze=False)
        for i, (attack, mode, arch) in enumerate(panels):
            for j, dataset in enumerate(datasets):
                ax = axes[i][j]
                frame = curve_table[(curve_table["attack"] == attack) & (curve_table["label_mode"] == mode)
                                    & (curve_table["arch"] == arch) & (curve_table["dataset"] == dataset)]
                if frame.empty:
                    ax.set_axis_off()
                    continue
                alpha = FADED if (dataset, arch, attack, mode) in uninformative else 1.0
                for defense in [d for d in defenses if d in set(frame["defense"])]:
                    points = frame[frame["defense"] == defense].groupby("queries")["clone_acc"]
                    queries = np.array(sorted(points.groups), dtype=float)
                    stats = [mean_ci(points.get_group(q)) for q in queries]
                    mean = np.array([s[0] for s in stats])
                    ci = np.array([s[1] for s in stats])
                    style = "--" if (dataset, arch, defense) in collapsed else "-"
                    ax.plot(queries, mean, style, color=palette[defense], marker="o", markersize=2.2, linewidth=1.0,
                            alpha=alpha)
                    if np.isfinite(ci).any():
                        low, high = np.clip(mean - np.nan_to_num(ci), 0, 100), np.clip(mean + np.nan_to_num(ci), 0, 100)
                        ax.fill_between(queries, low, high, color=palette[defense], alpha=0.15 * alpha, linewidth=0)
                if alpha < 1:
                    ax.text(0.02, 0.96, f"{UNINFORMATIVE_MARK} uninformative", transform=ax.transAxes, ha="left",
                            va="top",
                            fontsize=6, color="#555555")
                low, high = float(frame["queries"].min()), float(frame["queries"].max())
                if high >= 20 * max(1.0, low):
                    ax.set_xscale("log")
                    _log_ticks(ax, max(1.0, low), high)
                else:
                    ax.xaxis.set_major_formatter(FuncFormatter(_compact_count))
                    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
                ax.set_title(dataset_label(dataset) if i == 0 else "")
                # an accuracy: a wide two-seed band stays in range
                ax.set_ylim(max(0.0, ax.get_ylim()[0]), min(100.0, ax.get_ylim()[1]))
                ax.set_xlabel("queries" if i == len(panels) - 1 else "")
                ax.set_ylabel(f"{attack_label(attack)} {mode}\n{arch} · clone acc. (%)" if j == 0 else "",
                              fontsize=6.5)
        handles = defense_handles(defenses, palette)
        shown = collapsed & {(d, a, f) for d, a,
                             f in zip(curve_table["dataset"], curve_table["arch"], curve_table["defense"])}
        if shown:
            handles.append(Line2D([], [], linestyle="--", color="#333333", label=collapsed_note(shown, tolerance)))
        if uninformative & set(zip(curve_table["dataset"], curve_table["arch"], curve_table["attack"],
                                   curve_table["label_mode"])):
            handles.append(Line2D([], [], color="#999999", alpha=FADED, label=uninformative_note()))
        legend(fig, handles, legend_columns(width))
    return fig
