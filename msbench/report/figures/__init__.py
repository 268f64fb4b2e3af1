"""The report's figures, drawn from the run tables with matplotlib's object API (no pyplot state).

One module per figure family (``accuracy``, ``inference``, ``tradeoff``, ``curves``) over the
shared ``style``. A victim whose benign accuracy collapsed (more than the tolerance below
Vanilla's) is marked in every figure: hatched bars, ``†`` in the heat map, hollow points in a
shaded band, dashed curves. An uninformative attack setting (``informative``; judged by the runs'
plain Vanilla) is greyed: faded bars and points, a veiled heat-map row, faded curves, marked ``°``
on the axis or in the legend. Error bars and bands are 95% confidence intervals of the mean over
seeds (Student t). Each figure function returns None when its table is absent or empty, and the
figure is skipped.
"""
from __future__ import annotations

import pandas as pd

from msbench.report.figures.accuracy import clone_accuracy, relative_heatmap
from msbench.report.figures.curves import curves
from msbench.report.figures.inference import inference_time, plot_inference_time
from msbench.report.figures.style import COLUMN_WIDTH, SPARE_COLOURS, TEXT_WIDTH, defense_palette, png_bytes, save
from msbench.report.figures.tradeoff import sweep_tradeoff, tradeoff
from msbench.report.labels import split_variant
from msbench.report.runs import RunTables
from msbench.report.informative import uninformative_settings
from msbench.report.stats import benign_check, collapsed_victims, summarise


def _marks(tables: RunTables) -> dict:
    """What every figure marks: the collapsed victims and the tolerance behind them, and the attack
    settings (dataset, arch, attack, label mode) that are uninformative (greyed)."""
    flags = uninformative_settings(summarise(tables.results), tables.uninformative_below)
    return {"collapsed": collapsed_victims(tables.results, tables.tolerance), "tolerance": tables.tolerance,
            "uninformative": {key[:4] for key in flags if split_variant(key[4])[1] == ""}}


def _references(tables: RunTables) -> dict:
    check = benign_check(tables.results, tables.tolerance)
    return {(r.dataset,
             r.arch): r.benign_mean for r in check.itertuples() if r.reference and split_variant(r.defense)[1] == ""
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
    "sweep_tradeoff": ("Trade-off sweep: clone accuracy against benign accuracy and distortion, along each defense's "
                       "setting",
                       lambda t, p: sweep_tradeoff(t.sweep, p)),
}
"""Figure name -> (title, builder over RunTables and the defense palette)."""


__all__ = ["FIGURES", "clone_accuracy", "relative_heatmap", "inference_time", "plot_inference_time", "tradeoff",
           "sweep_tradeoff", "curves", "defense_palette", "save", "png_bytes", "COLUMN_WIDTH", "TEXT_WIDTH",
           "SPARE_COLOURS"]
