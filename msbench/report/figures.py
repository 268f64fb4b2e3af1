"""The report's figures, drawn from the run tables with matplotlib's object API (no pyplot state).

Every figure gives each defense one fixed colour (the Okabe-Ito colour-blind-safe palette for the
paper's defenses, further safe colours for others), so a defense reads the same across figures.
Each function returns None when its table is absent or empty, and the figure is skipped.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from msbench.report.data import (attack_label, dataset_label, defense_label, in_order, mode_label, order_defenses,
                                 summarise)
from msbench.report.tables import fmt_seconds

PAPER_COLOURS = {"vanilla": "#999999", "mad": "#E69F00", "am": "#56B4E9", "edm": "#009E73", "ini": "#D55E00",
                 "ini+mad": "#0072B2", "ini+am": "#CC79A7"}
OTHER_COLOURS = ["#F0E442", "#000000", "#882255", "#44AA99", "#117733", "#332288", "#DDCC77", "#AA4499", "#88CCEE"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def defense_palette(defenses) -> dict[str, str]:
    """Fixed colours: the paper's defenses always the same; others in report order from a safe list."""
    ordered = order_defenses(defenses)
    palette, spare = {}, iter(OTHER_COLOURS * (1 + len(ordered) // len(OTHER_COLOURS)))
    for defense in ordered:
        palette[defense] = PAPER_COLOURS.get(defense) or next(spare)
    return palette


def _style() -> dict:
    return {"axes.spines.top": False, "axes.spines.right": False, "font.size": 9, "axes.titlesize": 9,
            "axes.labelsize": 9, "legend.fontsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8}


def _legend(fig: Figure, defenses: list[str], palette: dict[str, str], extra: list | None = None) -> None:
    handles = [Line2D([], [], marker="s", linestyle="", markersize=9, color=palette[d], label=defense_label(d)) for d in defenses]
    fig.legend(handles=handles + (extra or []), loc="upper center", ncol=min(8, len(handles) + len(extra or [])),
               frameon=False, bbox_to_anchor=(0.5, 1.0))


def clone_accuracy(results: pd.DataFrame, palette: dict[str, str]) -> Figure | None:
    """Bars of clone accuracy per defense, grouped by label mode; one panel per (attack, arch) x dataset."""
    ok = results[results["status"] == "ok"] if not results.empty else results
    if ok.empty:
        return None
    datasets = in_order(ok["dataset"])
    panels = in_order(zip(ok["attack"], ok["arch"]))
    defenses = order_defenses(ok["defense"])
    with sns.axes_style("whitegrid", _style()):
        fig = Figure(figsize=(max(4.0, 3.2 * len(datasets)), 2.8 * len(panels) + 0.6), layout="constrained")
        axes = fig.subplots(len(panels), len(datasets), squeeze=False, sharey=True)
        for i, (attack, arch) in enumerate(panels):
            for j, dataset in enumerate(datasets):
                ax = axes[i][j]
                frame = ok[(ok["attack"] == attack) & (ok["arch"] == arch) & (ok["dataset"] == dataset)]
                if frame.empty:
                    ax.set_axis_off()
                    continue
                present = [d for d in defenses if d in set(frame["defense"])]
                sns.barplot(frame, x="label_mode", y="clone_acc", hue="defense", hue_order=present,
                            order=in_order(frame["label_mode"]), palette=palette, errorbar="sd", ax=ax,
                            legend=False, err_kws={"linewidth": 1}, capsize=0.1, saturation=1)
                ax.set_xticks(ax.get_xticks(), [mode_label(t.get_text()) for t in ax.get_xticklabels()])
                ax.set_title(dataset_label(dataset) if i == 0 else "")
                ax.set_xlabel("")
                ax.set_ylabel(f"{attack_label(attack)} · {arch}\nclone accuracy (%)" if j == 0 else "")
                ax.set_ylim(0, 100)
        _legend(fig, defenses, palette)
        fig.get_layout_engine().set(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))
    return fig


def relative_heatmap(results: pd.DataFrame) -> Figure | None:
    """Relative performance (clone / benign accuracy) per defense x (dataset, attack, label mode)."""
    summary = summarise(results)
    summary = summary[summary["n_ok"] > 0]
    if summary.empty:
        return None
    archs = in_order(summary["arch"])
    columns = in_order(zip(summary["dataset"], summary["arch"], summary["attack"], summary["label_mode"]))
    columns = sorted(columns, key=lambda c: in_order(summary["dataset"]).index(c[0]))
    defenses = order_defenses(summary["defense"])
    grid = pd.DataFrame(np.nan, index=defenses, columns=range(len(columns)))
    for _, row in summary.iterrows():
        key = (row["dataset"], row["arch"], row["attack"], row["label_mode"])
        grid.loc[row["defense"], columns.index(key)] = row["rel_mean"]
    labels = [f"{dataset_label(d)}\n{attack_label(a)}\n{mode_label(m)}" + (f"\n{arch}" if len(archs) > 1 else "")
              for d, arch, a, m in columns]
    with sns.axes_style("white", _style()):
        fig = Figure(figsize=(max(4.0, 1.1 * len(columns) + 2.0), 0.45 * len(defenses) + 1.8), layout="constrained")
        ax = fig.subplots()
        annot = np.array([["" if np.isnan(v) else f"{v:.2f}×" for v in row] for row in grid.to_numpy(float)])
        sns.heatmap(grid.astype(float), ax=ax, annot=annot, fmt="", cmap="cividis", vmin=0,
                    vmax=max(1.0, float(np.nanmax(grid.values))), linewidths=0.5, linecolor="white",
                    cbar_kws={"label": "relative performance (lower is better)"}, annot_kws={"fontsize": 8})
        ax.set_xticks(np.arange(len(columns)) + 0.5, labels, rotation=0)
        ax.set_yticks(np.arange(len(defenses)) + 0.5, [defense_label(d) for d in defenses], rotation=0)
        ax.set_xlabel("")
        ax.set_ylabel("")
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
    with sns.axes_style("whitegrid", _style()):
        fig = Figure(figsize=(max(4.5, 0.9 * len(defenses) + 1.5) * len(sizes), 3.0 * len(panels) + 0.6), layout="constrained")
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
                bars = ax.bar(range(len(present)), seconds, color=[palette[d] for d in present], edgecolor="#333333", linewidth=0.5)
                labels = [f"{fmt_seconds(s)} ({r:.2f}×)" if pd.notna(r) else fmt_seconds(s)
                          for s, r in zip(seconds, frame.loc[present, "slowdown"])]
                ax.bar_label(bars, labels, fontsize=7, padding=2)
                ax.set_xticks(range(len(present)), [defense_label(d) for d in present], rotation=30, ha="right")
                ax.set_ylim(0, seconds.max() * 1.2)
                repeats = ", ".join(str(int(r)) for r in in_order(timing["repeats"].dropna()))
                ax.set_ylabel(f"total seconds ({repeats} repeats)" if j == 0 else "")
                where = "single query" if size == 1 else f"batch size {size}"
                ax.set_title(f"{dataset_label(dataset)} · {arch} · {inputs} inputs · {where}")
    return fig


def plot_inference_time(timing: pd.DataFrame, path_stem: Path, palette: dict[str, str] | None = None) -> list[Path]:
    """Draw Figure 4 from a timing table to ``path_stem.png`` and ``path_stem.pdf``; [] if the table is empty."""
    fig = inference_time(timing, palette)
    return save(fig, Path(path_stem), ("png", "pdf")) if fig is not None else []


def tradeoff(results: pd.DataFrame, palette: dict[str, str]) -> Figure | None:
    """Benign accuracy (x) against clone accuracy (y): down and right is a better defense; one panel per dataset."""
    summary = summarise(results)
    summary = summary[(summary["n_ok"] > 0) & summary["benign_mean"].notna()]
    if summary.empty:
        return None
    datasets = in_order(summary["dataset"])
    kinds = in_order(zip(summary["attack"], summary["label_mode"]))
    markers = {kind: MARKERS[i % len(MARKERS)] for i, kind in enumerate(kinds)}
    defenses = order_defenses(summary["defense"])
    with sns.axes_style("whitegrid", _style()):
        fig = Figure(figsize=(max(4.5, 3.6 * len(datasets)), 3.6), layout="constrained")
        axes = fig.subplots(1, len(datasets), squeeze=False)[0]
        for ax, dataset in zip(axes, datasets):
            frame = summary[summary["dataset"] == dataset]
            for _, row in frame.iterrows():
                ax.scatter(row["benign_mean"], row["clone_mean"], color=palette[row["defense"]], s=42,
                           marker=markers[(row["attack"], row["label_mode"])], edgecolor="#333333", linewidth=0.5, zorder=3)
            low = min(frame["clone_mean"].min(), frame["benign_mean"].min())
            high = max(frame["clone_mean"].max(), frame["benign_mean"].max())
            pad = max(1.0, 0.05 * (high - low))
            ax.plot([low - pad, high + pad], [low - pad, high + pad], linestyle="--", color="#777777", linewidth=0.8, zorder=1)
            ax.set_title(dataset_label(dataset))
            ax.set_xlabel("benign accuracy (%)")
            ax.set_ylabel("clone accuracy (%)")
        shapes = [Line2D([], [], marker=markers[k], linestyle="", color="#555555", label=f"{attack_label(k[0])} {mode_label(k[1])}")
                  for k in kinds]
        _legend(fig, defenses, palette, shapes)
        fig.get_layout_engine().set(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    return fig


def curves(curve_table: pd.DataFrame, palette: dict[str, str]) -> Figure | None:
    """Clone accuracy against queries (mean ± std over seeds); None unless some curve has two points or more."""
    if curve_table.empty:
        return None
    keys = ["dataset", "arch", "defense", "attack", "label_mode", "seed"]
    if curve_table.groupby(keys)["queries"].nunique().max() < 2:
        return None
    panels = in_order(zip(curve_table["attack"], curve_table["label_mode"], curve_table["arch"]))
    datasets = in_order(curve_table["dataset"])
    defenses = order_defenses(curve_table["defense"])
    with sns.axes_style("whitegrid", _style()):
        fig = Figure(figsize=(max(4.5, 3.4 * len(datasets)), 2.7 * len(panels) + 0.6), layout="constrained")
        axes = fig.subplots(len(panels), len(datasets), squeeze=False)
        for i, (attack, mode, arch) in enumerate(panels):
            for j, dataset in enumerate(datasets):
                ax = axes[i][j]
                frame = curve_table[(curve_table["attack"] == attack) & (curve_table["label_mode"] == mode)
                                    & (curve_table["arch"] == arch) & (curve_table["dataset"] == dataset)]
                if frame.empty:
                    ax.set_axis_off()
                    continue
                present = [d for d in defenses if d in set(frame["defense"])]
                sns.lineplot(frame, x="queries", y="clone_acc", hue="defense", hue_order=present, palette=palette,
                             errorbar="sd", err_kws={"alpha": 0.12}, marker="o", markersize=4, ax=ax, legend=False)
                if frame["queries"].max() >= 20 * max(1, frame["queries"].min()):
                    ax.set_xscale("log")
                ax.set_title(dataset_label(dataset) if i == 0 else "")
                ax.set_xlabel("queries")
                ax.set_ylabel(f"{attack_label(attack)} {mode_label(mode)} · {arch}\nclone accuracy (%)" if j == 0 else "")
        _legend(fig, defenses, palette)
        fig.get_layout_engine().set(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))
    return fig


def save(fig: Figure, path_stem: Path, formats) -> list[Path]:
    """Each format rendered in memory, then written atomically (msbench.io.write_atomic)."""
    from msbench.io import write_atomic

    written = []
    for fmt in formats:
        path = path_stem.with_suffix(f".{fmt}")
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=150 if fmt == "png" else None, bbox_inches="tight")
        write_atomic(path, buffer.getvalue())
        written.append(path)
    return written


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


FIGURES = {
    "clone_accuracy": ("Clone accuracy per defense", lambda t, p: clone_accuracy(t.results, p)),
    "relative_performance": ("Relative performance (clone / benign accuracy)", lambda t, p: relative_heatmap(t.results)),
    "inference_time": ("Inference time and slowdown (the paper's Figure 4)", lambda t, p: inference_time(t.timing, p)),
    "tradeoff": ("Benign vs clone accuracy: lower and further right is better", lambda t, p: tradeoff(t.results, p)),
    "curves": ("Clone accuracy against queries", lambda t, p: curves(t.curves, p)),
}
"""Figure name -> (title, builder over RunTables and the defense palette)."""
