"""msbench: a benchmark suite for model-stealing defenses.

The Python API under the CLI, one call per command::

    import msbench
    frame = msbench.run_suite("suites/smoke.toml", data_root="../shared/data")
    frame = msbench.run_suite("suites/full.toml", executor="ray")  # victims and cells as Ray tasks
    frame = msbench.run_suite("suites/quick.toml", jobs=2)  # two worker processes on this machine
    plan = msbench.plan_suite(msbench.load_suite("suites/full.toml"), device="cuda")  # cells, victims, estimated time
    timing = msbench.time_suite("suites/quick.toml")  # runs/quick/timing.csv: inference cost per defense
    frame = msbench.load_results("runs/smoke")
    msbench.render_report("runs/smoke")  # reports/smoke/index.html, tables.tex, figures/
"""
from __future__ import annotations

from msbench.version import __version__
from msbench.registry import (ARCHITECTURES, ATTACKS, DATASETS, DEFENSES, register_architecture,
                              register_attack, register_dataset, register_defense)
from msbench.runner.suite import SuiteError, load_suite
from msbench.runner.run import run_suite
from msbench.runner.plan import plan_suite
from msbench.timing.stage import time_suite
from msbench.report import load_results, render_report


__all__ = ["run_suite", "plan_suite", "time_suite", "render_report", "load_results", "load_suite", "SuiteError",
           "register_defense", "register_attack", "register_dataset", "register_architecture", "DEFENSES", "ATTACKS",
           "DATASETS", "ARCHITECTURES"]
