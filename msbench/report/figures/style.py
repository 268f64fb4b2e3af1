"""What every report figure shares: the paper layout, the fixed colour of each defense, legends, saving.

Every figure is laid out for a paper: a column (3.3 in) when it has one or two dataset panels
across, the text width (6.9 in) otherwise, with 6.5 to 8 pt text, so it reads at that size.
Each defense keeps one colour in every figure: its plugin's ``color`` (the paper's defenses use
the Okabe-Ito colour-blind-safe palette), else the next free colour of a safe list.
PDFs embed TrueType (Type 42) fonts, as camera-ready checks require.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from msbench.io import write_atomic
from msbench.report.labels import defense_colour, defense_label, order_defenses, split_variant
from msbench.report.stats import ci95
from msbench.report.table_entry import COLLAPSED_MARK, UNINFORMATIVE_MARK

COLUMN_WIDTH = 3.3  # inches: one column of a two-column paper
TEXT_WIDTH = 6.9  # inches: both columns
SPARE_COLOURS = ["#AA4499", "#999933", "#6699CC", "#117733", "#CC6677", "#009988", "#EE3377", "#4477AA", "#AA3377",
                 "#CC3311"]
"""Colours for defenses whose plugin declares none, from Tol's colour-blind-safe sets: only those that
stand out on white (contrast >= 3:1, so a hollow marker shows) and under the dark hatching of a
collapsed victim's bar (>= 2:1 against ``HATCH_COLOUR``): no yellow, no black, no pastel."""
HATCH_COLOUR = "#333333"
SAVE_RC = {"pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none"}
"""TrueType (Type 42) fonts in PDF/PS, not Type 3: camera-ready checks reject Type 3."""


def declared_colour(defense: str) -> str | None:
    """A single defense's ``color``; a stack (``ini+mad``) takes its outer link's ``color_over_base``: as
    the run recorded them (``labels.defense_colour``)."""
    return defense_colour(defense)


def defense_palette(defenses) -> dict[str, str]:
    """Fixed colours: each defense its plugin's colour (the paper's always the same); others, and a second
    run's copy of a defense kept apart, take free colours of a safe list in report order."""
    ordered = order_defenses(defenses)
    palette: dict[str, str] = {}
    for defense in ordered:
        if not split_variant(defense)[1]:
            colour = declared_colour(defense)
            if colour and colour not in palette.values():
                palette[defense] = colour
    spare = [c for c in SPARE_COLOURS if c not in palette.values()]
    for i, defense in enumerate(d for d in ordered if d not in palette):
        palette[defense] = spare[i % len(spare)] if spare else SPARE_COLOURS[i % len(SPARE_COLOURS)]
    return palette


def paper_style() -> dict:
    return {"axes.spines.top": False, "axes.spines.right": False, "font.size": 7.5, "axes.titlesize": 8,
            "axes.labelsize": 7.5, "legend.fontsize": 7, "xtick.labelsize": 7, "ytick.labelsize": 7,
            "axes.linewidth": 0.6, "grid.linewidth": 0.5, "lines.linewidth": 1.2, "xtick.major.size": 2.5,
            "ytick.major.size": 2.5, "legend.handlelength": 1.4, "legend.columnspacing": 1.0}


def figure_width(panels_across: int) -> float:
    return COLUMN_WIDTH if panels_across <= 2 else TEXT_WIDTH


def _row_major(handles: list, ncol: int) -> list:
    """Matplotlib fills a legend column by column; reorder so it reads left to right, row by row."""
    nrows = math.ceil(len(handles) / ncol)
    grid = [handles[r * ncol:(r + 1) * ncol] for r in range(nrows)]
    return [grid[r][c] for c in range(ncol) for r in range(nrows) if c < len(grid[r])]


def legend(fig: Figure, handles: list, ncol: int, loc: str = "outside upper center") -> None:
    ncol = max(1, min(ncol, len(handles)))
    fig.legend(handles=_row_major(handles, ncol), loc=loc, ncol=ncol, frameon=False, handletextpad=0.4,
               borderaxespad=0.2)


def defense_handles(defenses: list[str], palette: dict[str, str]) -> list:
    return [Patch(facecolor=palette[d], edgecolor="#333333", linewidth=0.4, label=defense_label(d)) for d in defenses]


def legend_columns(width: float) -> int:
    return 4 if width <= COLUMN_WIDTH else 7


def finished(results: pd.DataFrame) -> pd.DataFrame:
    return results[results["status"] == "ok"] if not results.empty else results


def mean_ci(values) -> tuple[float, float]:
    values = pd.Series(values, dtype=float).dropna()
    return (float(values.mean()) if len(values) else float("nan")), ci95(values)


FADED = 0.3
"""Opacity of what an uninformative attack setting draws: visible, plainly not a verdict."""


def uninformative_note() -> str:
    """The legend entry of a greyed (uninformative) attack setting."""
    return f"{UNINFORMATIVE_MARK} faded: uninformative attack (steals little even from Vanilla)"


def collapsed_note(collapsed: set, tolerance: float) -> str:
    """The legend entry of the collapse mark (the report's captions say what it means in full)."""
    return f"collapsed {COLLAPSED_MARK}" if collapsed else ""


def save(fig: Figure, path_stem: Path, formats) -> list[Path]:
    """Each format rendered in memory, then written atomically (msbench.io.write_atomic); PDF and PS
    embed TrueType fonts (``SAVE_RC``)."""
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
    fig.savefig(buffer, format="png", dpi=300, bbox_inches="tight", pad_inches=0.02)  # sharp at the page's width
    return buffer.getvalue()
