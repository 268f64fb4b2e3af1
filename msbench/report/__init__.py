"""Reports rendered from a run's tables only (never from live objects): LaTeX, HTML and figures.

    from msbench.report import render_report
    render_report(["runs/mnist", "runs/cifar10"], out="reports/paper")
"""
from __future__ import annotations

from msbench.report.data import load_runs
from msbench.report.figures import defense_palette, plot_inference_time
from msbench.report.render import FORMATS, render_report

__all__ = ["render_report", "plot_inference_time", "load_runs", "defense_palette", "FORMATS"]
