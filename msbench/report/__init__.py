"""Reports rendered from a run's tables only (never from live objects): LaTeX, HTML and figures.

    from msbench.report import render_report
    render_report(["runs/mnist", "runs/cifar10"], out="reports/paper")

Reading runs: ``load`` (into ``runs.RunTables``); how plugins are shown: ``labels``; the numbers:
``stats`` and ``verdict``; tables: ``tables`` (``table_entry``, ``context``), rendered by ``latex`` and
``html``; figures: the ``figures`` package; the whole report: ``render``.
"""
from __future__ import annotations

from msbench.report.figures import defense_palette, plot_inference_time
from msbench.report.load import load_results, load_runs
from msbench.report.render import FORMATS, render_report

__all__ = ["render_report", "plot_inference_time", "load_runs", "load_results", "defense_palette", "FORMATS"]
