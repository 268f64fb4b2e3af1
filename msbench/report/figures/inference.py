"""The paper's Figure 4: total inference seconds and slowdown per defense, from a timing table."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from msbench.report.figures.style import defense_palette, figure_width, paper_style, save
from msbench.report.labels import dataset_label, defense_label, in_order, order_defenses
from msbench.report.table_entry import fmt_seconds


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
    width = figure_width(len(sizes))
    with sns.axes_style("whitegrid", paper_style()), matplotlib.rc_context(paper_style()):
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
                bars = ax.barh(range(len(present)), seconds, color=[palette[d] for d in present], edgecolor="#333333",
                               linewidth=0.4)
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
