"""The report's figures, drawn from the run tables with matplotlib's object API (no pyplot state).

Every figure is laid out for a paper: a column (3.3 in) when it has one or two dataset panels
across, the text width (6.9 in) otherwise, with 6.5 to 8 pt text, so it reads at that size.
Each defense keeps one colour in every figure: its plugin's ``color`` (the paper's defenses use
the Okabe-Ito colour-blind-safe palette), else the next free colour of a safe list. A victim whose
benign accuracy collapsed (more than the tolerance below Vanilla's) is marked in every figure:
hatched bars, ``†`` in the heat map, hollow points in a shaded band, dashed curves.
Error bars and bands are 95% confidence intervals of the mean over seeds (Student t).
PDFs embed TrueType (Type 42) fonts, as camera-ready checks require.
Each function returns None when its table is absent or empty, and the figure is skipped.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from msbench.defenses import OutputDefense
from msbench.report.data import (DEFENSES, RunTables, _plugin, attack_label, ci95, collapsed_victims, dataset_label,
                                 defense_label, in_order, mode_label, order_attacks, order_defenses, split_variant,
                                 summarise)
from msbench.report.tables import COLLAPSED_MARK, fmt_seconds

COLUMN_WIDTH = 3.3  # inches: one column of a two-column paper
TEXT_WIDTH = 6.9  # inches: both columns
SPARE_COLOURS = ["#F0E442", "#000000", "#882255", "#44AA99", "#117733", "#332288", "#DDCC77", "#AA4499", "#88CCEE",
                 "#661100", "#6699CC", "#999933"]
"""Colours for defenses whose plugin declares none (Tol's colour-blind-safe 'muted' and 'bright' sets)."""
MARKERS = ["o", "^", "D", "v", "P", "X", "*", "h"]
"""One shape per attack in the trade-off figure (never the square, which the legend keeps for nothing)."""
SAVE_RC = {"pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none"}
"""TrueType (Type 42) fonts in PDF/PS, not Type 3: camera-ready checks reject Type 3."""


def _declared_colour(defense: str) -> str | None:
    """A single defense's ``color``; a stack (``ini+mad``) takes its outer link's ``color_over_base``."""
    parts = split_variant(defense)[0].split("+")
    if len(parts) == 1:
        plugin = _plugin(DEFENSES, parts[0])
        return plugin.color if plugin else None
    outer = _plugin(DEFENSES, parts[-1])
    return outer.color_over_base if outer is not None and issubclass(outer, OutputDefense) else None


def defense_palette(defenses) -> dict[str, str]:
    """Fixed colours: each defense its plugin's colour (the paper's always the same); others, and a second
    run's copy of a defense kept apart, take free colours of a safe list in report order."""
    ordered = order_defenses(defenses)
    palette: dict[str, str] = {}
    for defense in ordered:
        if not split_variant(defense)[1]:
            colour = _declared_colour(defense)
            if colour and colour not in palette.values():
                palette[defense] = colour
    spare = [c for c in SPARE_COLOURS if c not in palette.values()]
    for i, defense in enumerate(d for d in ordered if d not in palette):
        palette[defense] = spare[i % len(spare)] if spare else SPARE_COLOURS[i % len(SPARE_COLOURS)]
    return palette


def _style() -> dict:
    return {"axes.spines.top": False, "axes.spines.right": False, "font.size": 7.5, "axes.titlesize": 8,
            "axes.labelsize": 7.5, "legend.fontsize": 7, "xtick.labelsize": 7, "ytick.labelsize": 7,
            "axes.linewidth": 0.6, "grid.linewidth": 0.5, "lines.linewidth": 1.2, "xtick.major.size": 2.5,
            "ytick.major.size": 2.5, "legend.handlelength": 1.4, "legend.columnspacing": 1.0}


def _width(panels_across: int) -> float:
    return COLUMN_WIDTH if panels_across <= 2 else TEXT_WIDTH


def _row_major(handles: list, ncol: int) -> list:
    """Matplotlib fills a legend column by column; reorder so it reads left to right, row by row."""
    nrows = math.ceil(len(handles) / ncol)
    grid = [handles[r * ncol:(r + 1) * ncol] for r in range(nrows)]
    return [grid[r][c] for c in range(ncol) for r in range(nrows) if c < len(grid[r])]


def _legend(fig: Figure, handles: list, ncol: int, loc: str = "outside upper center") -> None:
    ncol = max(1, min(ncol, len(handles)))
    fig.legend(handles=_row_major(handles, ncol), loc=loc, ncol=ncol, frameon=False, handletextpad=0.4,
               borderaxespad=0.2)


def _defense_handles(defenses: list[str], palette: dict[str, str]) -> list:
    return [Patch(facecolor=palette[d], edgecolor="#333333", linewidth=0.4, label=defense_label(d)) for d in defenses]


def _ncol(width: float) -> int:
    return 4 if width <= COLUMN_WIDTH else 7


def _ok(results: pd.DataFrame) -> pd.DataFrame:
    return results[results["status"] == "ok"] if not results.empty else results


def _mean_ci(values) -> tuple[float, float]:
    values = pd.Series(values, dtype=float).dropna()
    return (float(values.mean()) if len(values) else float("nan")), ci95(values)


def _collapsed_note(collapsed: set, tolerance: float) -> str:
    """The legend entry of the collapse mark (the report's captions say what it means in full)."""
    return f"collapsed {COLLAPSED_MARK}" if collapsed else ""


def clone_accuracy(results: pd.DataFrame, palette: dict[str, str], collapsed: set = frozenset(),
                   tolerance: float = 1.0) -> Figure | None:
    """Bars of clone accuracy per defense (95% CI over seeds), grouped by label mode; one panel per
    (attack, arch) x dataset. A collapsed victim's bar is hatched."""
    ok = _ok(results)
    if ok.empty:
        return None
    datasets = in_order(ok["dataset"])
    attacks = order_attacks(ok["attack"])
    panels = sorted(in_order(zip(ok["attack"], ok["arch"])), key=lambda p: attacks.index(p[0]))
    defenses = order_defenses(ok["defense"])
    width = _width(len(datasets))
    with sns.axes_style("whitegrid", _style()), matplotlib.rc_context(_style()):
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
                    stats = [_mean_ci(frame[(frame["defense"] == defense) & (frame["label_mode"] == m)]["clone_acc"]) for m in modes]
                    xs = np.arange(len(modes)) - 0.4 + bar * (k + 0.5)
                    means = np.array([s[0] for s in stats])
                    errs = np.array([s[1] if np.isfinite(s[1]) else 0.0 for s in stats])
                    hatch = "////" if (dataset, arch, defense) in collapsed else None
                    ax.bar(xs, means, bar, color=palette[defense], edgecolor="#333333", linewidth=0.3, hatch=hatch)
                    if errs.any():
                        ax.errorbar(xs, means, yerr=errs, fmt="none", ecolor="#222222", elinewidth=0.6, capsize=1.2)
                ax.set_xticks(range(len(modes)), modes)
                ax.set_title(dataset_label(dataset) if i == 0 else "")
                ax.set_ylabel(f"{attack_label(attack)} · {arch}\nclone acc. (%)" if j == 0 else "")
                ax.set_ylim(0, 100)
                ax.grid(axis="x", visible=False)
        handles = _defense_handles(defenses, palette)
        if collapsed & {(d, a, f) for d, a, f in zip(ok["dataset"], ok["arch"], ok["defense"])}:
            handles.append(Patch(facecolor="white", edgecolor="#333333", hatch="////", linewidth=0.4,
                                 label=_collapsed_note(collapsed, tolerance)))
        _legend(fig, handles, _ncol(width))
    return fig


def relative_heatmap(results: pd.DataFrame, collapsed: set = frozenset(), tolerance: float = 1.0) -> Figure | None:
    """Relative performance (clone / benign accuracy): one panel per (dataset, arch), rows attack x label
    mode, columns defenses, one colour scale. ``†`` marks a collapsed victim's cells."""
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
    with sns.axes_style("white", _style()), matplotlib.rc_context(_style()):
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
            ax.set_yticks(range(len(rows)), [f"{attack_label(a)} {m}" for a, m in rows], fontsize=6.5)
            ax.set_xticks(range(len(defenses)), [defense_label(d) for d in defenses], rotation=40, ha="right",
                          rotation_mode="anchor", fontsize=6.5)
            ax.set_xticks(np.arange(len(defenses) + 1) - 0.5, minor=True)
            ax.set_yticks(np.arange(len(rows) + 1) - 0.5, minor=True)
            ax.grid(which="minor", color="white", linewidth=0.8)
            ax.tick_params(which="both", length=0)
            for side in ("top", "right", "left", "bottom"):
                ax.spines[side].set_visible(False)
            ax.set_title(dataset_label(dataset) + (f" · {arch}" if len(archs) > 1 else ""), fontsize=7.5)
        bar = fig.colorbar(image, ax=list(axes), orientation="horizontal", location="bottom", shrink=0.7, aspect=35, pad=0.02)
        shown = collapsed & set(zip(summary["dataset"], summary["arch"], summary["defense"]))
        bar.set_label("relative performance (clone / benign accuracy; lower is better)"
                      + (f"\n{COLLAPSED_MARK} collapsed: benign acc. > {tolerance:g} points below Vanilla's" if shown else ""),
                      fontsize=6.5)
        bar.ax.tick_params(labelsize=6)
    return fig


def inference_time(timing: pd.DataFrame, palette: dict[str, str] | None = None) -> Figure | None:
    """The paper's Figure 4: total inference seconds per defense, each bar labelled ``seconds (slowdown x)``;
    one panel per batch size (columns) and per (dataset, arch, input) (rows)."""
    if timing is None or timing.empty or timing["total_seconds"].notna().sum() == 0:
        return None
    timing = timing[timing["total_seconds"].notna()]
    palette = palette or defense_palette(timing["defense"])
    sizes = sorted(int(b) for b in in_order(timing["batch_size"]))
    panels = in_order(zip(timing["dataset"], timing["arch"], timing["input"]))
    defenses = order_defenses(timing["defense"])
    width = _width(len(sizes))
    with sns.axes_style("whitegrid", _style()), matplotlib.rc_context(_style()):
        fig = Figure(figsize=(width, 2.0 * len(panels) + 0.3), layout="constrained")
        axes = fig.subplots(len(panels), len(sizes), squeeze=False)
        for i, (dataset, arch, inputs) in enumerate(panels):
            for j, size in enumerate(sizes):
                ax = axes[i][j]
                frame = timing[(timing["dataset"] == dataset) & (timing["arch"] == arch) & (timing["input"] == inputs)
                               & (timing["batch_size"] == size)]
                frame = frame.groupby("defense", sort=False)[["total_seconds", "slowdown"]].mean()
                present = [d for d in defenses if d in frame.index]
                if not present:
                    ax.set_axis_off()
                    continue
                seconds = frame.loc[present, "total_seconds"].to_numpy(float)
                bars = ax.barh(range(len(present)), seconds, color=[palette[d] for d in present], edgecolor="#333333", linewidth=0.4)
                labels = [f"{fmt_seconds(s)} ({r:.2f}×)" if pd.notna(r) else fmt_seconds(s)
                          for s, r in zip(seconds, frame.loc[present, "slowdown"])]
                ax.bar_label(bars, labels, fontsize=6, padding=1.5)
                ax.set_yticks(range(len(present)), [defense_label(d) for d in present] if j == 0 else [])
                ax.invert_yaxis()
                ax.set_xlim(0, seconds.max() * 1.65)
                ax.grid(axis="y", visible=False)
                ax.set_ylabel(f"{dataset_label(dataset)} · {arch} · {inputs}" if j == 0 else "")
                ax.set_title(("single query" if size == 1 else f"batch size {size}") if i == 0 else "")
        repeats = ", ".join(str(int(r)) for r in in_order(timing["repeats"].dropna()))
        fig.supxlabel(f"total seconds ({repeats} repeats); labels: seconds (slowdown vs Vanilla)", fontsize=7)
    return fig


def plot_inference_time(timing: pd.DataFrame, path_stem: Path, palette: dict[str, str] | None = None) -> list[Path]:
    """Draw Figure 4 from a timing table to ``path_stem.png`` and ``path_stem.pdf``; [] if the table is empty."""
    fig = inference_time(timing, palette)
    return save(fig, Path(path_stem), ("png", "pdf")) if fig is not None else []


def tradeoff(results: pd.DataFrame, palette: dict[str, str], collapsed: set = frozenset(), tolerance: float = 1.0,
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
    width = _width(len(panels))
    with sns.axes_style("whitegrid", _style()), matplotlib.rc_context(_style()):
        fig = Figure(figsize=(width, 2.7 + 0.17 * math.ceil(len(defenses) / _ncol(width))), layout="constrained")
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
                ax.scatter(x, row["clone_mean"], s=22, marker=marker, linewidth=0.9, zorder=3,
                           facecolor=colour if filled else "white", edgecolor="#333333" if filled else colour)
            if not off.empty:
                n = off["defense"].nunique()
                ax.annotate(f"◀ {n} at {off['benign_mean'].min():.1f}–{off['benign_mean'].max():.1f}%" if n > 1 or off['benign_mean'].nunique() > 1
                            else f"◀ at {off['benign_mean'].iloc[0]:.1f}%",
                            (edge, off["clone_mean"].max()), xytext=(4, 5), textcoords="offset points", fontsize=6,
                            color="#333333", va="bottom")
            ax.set_xlim(x_lo, x_hi)
            ax.set_ylim(y_lo, y_hi)
            ax.set_title(dataset_label(dataset) + (f" · {arch}" if len({a for _, a in panels}) > 1 else ""))
            ax.set_xlabel("benign accuracy (%)")
            ax.set_ylabel("clone accuracy (%)" if ax is axes[0] else "")
        handles = _defense_handles(defenses, palette)
        shapes = [Line2D([], [], marker=markers[a], linestyle="", markersize=4.5, markerfacecolor="#666666",
                         markeredgecolor="#333333", label=attack_label(a)) for a in attacks]
        if len(modes) > 1:
            shapes += [Line2D([], [], marker="o", linestyle="", markersize=4.5, markerfacecolor="#666666" if m == modes[0] else "white",
                              markeredgecolor="#333333", label=m) for m in modes]
        extra = []
        if reference:
            extra.append(Patch(facecolor="#DDDDDD", label=f"collapsed ({COLLAPSED_MARK})"))
        ncol = _ncol(width)
        _legend(fig, handles, ncol)
        rest = shapes[len(attacks):] + extra  # label modes and the band: their own row
        across = min(3 if width <= COLUMN_WIDTH else 8, max(len(attacks), len(rest)))
        blank = Line2D([], [], linestyle="", label=" ")
        shapes = shapes[:len(attacks)]
        shapes += [blank] * (-len(shapes) % across)
        _legend(fig, shapes + rest, across, loc="outside lower center")
    return fig


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
    width = _width(2 * len(datasets))
    with sns.axes_style("whitegrid", _style()), matplotlib.rc_context(_style()):
        fig = Figure(figsize=(width, 1.9 * len(kinds) + 0.6), layout="constrained")
        axes = fig.subplots(len(kinds), 2 * len(datasets), squeeze=False)
        for i, (attack, mode) in enumerate(kinds):
            for j, dataset in enumerate(datasets):
                frame = points[(points["dataset"] == dataset) & (points["attack"] == attack) & (points["label_mode"] == mode)]
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
        _legend(fig, _defense_handles(defenses, palette), _ncol(width))
    return fig


def curves(curve_table: pd.DataFrame, palette: dict[str, str], collapsed: set = frozenset(),
           tolerance: float = 1.0) -> Figure | None:
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
    width = _width(len(datasets))
    with sns.axes_style("whitegrid", _style()), matplotlib.rc_context(_style()):
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
                for defense in [d for d in defenses if d in set(frame["defense"])]:
                    points = frame[frame["defense"] == defense].groupby("queries")["clone_acc"]
                    queries = np.array(sorted(points.groups), dtype=float)
                    stats = [_mean_ci(points.get_group(q)) for q in queries]
                    mean = np.array([s[0] for s in stats])
                    ci = np.array([s[1] for s in stats])
                    style = "--" if (dataset, arch, defense) in collapsed else "-"
                    ax.plot(queries, mean, style, color=palette[defense], marker="o", markersize=2.2, linewidth=1.0)
                    if np.isfinite(ci).any():
                        ax.fill_between(queries, mean - np.nan_to_num(ci), mean + np.nan_to_num(ci), color=palette[defense],
                                        alpha=0.15, linewidth=0)
                low, high = float(frame["queries"].min()), float(frame["queries"].max())
                if high >= 20 * max(1.0, low):
                    ax.set_xscale("log")
                    _log_ticks(ax, max(1.0, low), high)
                else:
                    ax.xaxis.set_major_formatter(FuncFormatter(_compact_count))
                    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
                ax.set_title(dataset_label(dataset) if i == 0 else "")
                ax.set_xlabel("queries" if i == len(panels) - 1 else "")
                ax.set_ylabel(f"{attack_label(attack)} {mode}\n{arch} · clone acc. (%)" if j == 0 else "", fontsize=6.5)
        handles = _defense_handles(defenses, palette)
        shown = collapsed & {(d, a, f) for d, a, f in zip(curve_table["dataset"], curve_table["arch"], curve_table["defense"])}
        if shown:
            handles.append(Line2D([], [], linestyle="--", color="#333333", label=_collapsed_note(shown, tolerance)))
        _legend(fig, handles, _ncol(width))
    return fig


def save(fig: Figure, path_stem: Path, formats) -> list[Path]:
    """Each format rendered in memory, then written atomically (msbench.io.write_atomic); PDF and PS
    embed TrueType fonts (``SAVE_RC``)."""
    from msbench.io import write_atomic

    written = []
    with matplotlib.rc_context(SAVE_RC):
        for fmt in formats:
            path = path_stem.with_suffix(f".{fmt}")
            buffer = io.BytesIO()
            fig.savefig(buffer, format=fmt, dpi=200 if fmt == "png" else None, bbox_inches="tight", pad_inches=0.02)
            write_atomic(path, buffer.getvalue())
            written.append(path)
    return written


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=150, bbox_inches="tight", pad_inches=0.02)
    return buffer.getvalue()


def _marks(tables: RunTables) -> dict:
    """What every figure marks: the collapsed victims and the tolerance behind them."""
    return {"collapsed": collapsed_victims(tables.results, tables.tolerance), "tolerance": tables.tolerance}


def _references(tables: RunTables) -> dict:
    from msbench.report.data import benign_check
    check = benign_check(tables.results, tables.tolerance)
    return {(r.dataset, r.arch): r.benign_mean for r in check.itertuples() if r.reference and split_variant(r.defense)[1] == ""
            and pd.notna(r.benign_mean)}


FIGURES = {
    "clone_accuracy": ("Clone accuracy per defense (95% CI over seeds where there are several)",
                       lambda t, p: clone_accuracy(t.results, p, **_marks(t))),
    "relative_performance": ("Relative performance (clone / benign accuracy)",
                             lambda t, p: relative_heatmap(t.results, **_marks(t))),
    "inference_time": ("Inference time and slowdown (the paper's Figure 4)", lambda t, p: inference_time(t.timing, p)),
    "tradeoff": ("Benign vs clone accuracy: lower and further right is better",
                 lambda t, p: tradeoff(t.results, p, reference=_references(t), **_marks(t))),
    "curves": ("Clone accuracy against queries, every attack that reported budget points (95% CI band over seeds)",
               lambda t, p: curves(t.curves, p, **_marks(t))),
    "sweep_tradeoff": ("Trade-off sweep: clone accuracy against benign accuracy and distortion, along each defense's setting",
                       lambda t, p: sweep_tradeoff(t.sweep, p)),
}
"""Figure name -> (title, builder over RunTables and the defense palette)."""
