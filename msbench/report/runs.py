"""A report's input, held: the combined tables of the runs it covers and how far those runs got."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from msbench.report.labels import order_defenses
from msbench.report_options import UNINFORMATIVE_BELOW

TIMING_COLUMNS = ["defense", "arch", "dataset", "input", "batch_size", "repeats", "total_seconds", "ms_per_query",
                  "slowdown", "cost_model", "device", "torch"]
DEFAULT_TOLERANCE = 1.0
"""Points of benign accuracy a defense may lose against Vanilla and still be called best, when no
suite sets ``run.match_benign`` (the quick and full suites set 1.0)."""
PENDING = "pending"
"""Status of a planned cell (suite.json's matrix) that no record holds yet."""
KEY = ["dataset", "arch", "defense", "attack", "label_mode"]
"""One experiment; its seeds are its repetitions."""


@dataclass
class Progress:
    """How far the runs got: cells of the suites' matrices, and how many of each status."""

    planned: int
    finished: int
    failed: int
    pending: int
    known: bool  # False when no suite.json holds a matrix (planned = what the tables hold)

    @property
    def partial(self) -> bool:
        return self.pending > 0

    def sentence(self) -> str:
        if not self.partial:
            return f"{self.planned} cells: {self.finished} finished, {self.failed} failed."
        return (f"Partial run: {self.planned} cells planned, {self.finished} finished, {self.failed} failed, "
                f"{self.pending} pending.")


@dataclass
class RunTables:
    """The combined tables of the runs a report covers; empty frames where a table is absent.

    ``results`` holds one row per planned cell: ``status`` is ``ok``, ``failed`` or ``pending``
    (planned in a suite.json matrix, no record yet).
    """

    run_dirs: list[Path]
    results: pd.DataFrame
    curves: pd.DataFrame
    timing: pd.DataFrame
    suites: list[dict[str, Any]] = field(default_factory=list)  # suite.json per run directory ({} if absent)
    kept_apart: list[str] = field(default_factory=list)  # one line per defense kept apart by run, and why
    # trade-off sweep cells (``setting`` set), kept out of ``results``
    sweep: pd.DataFrame = field(default_factory=pd.DataFrame)
    # how the runs recorded each plugin is shown ({"defenses": {name: {label, ...}}, "attacks": ...}; see
    # ``labels.recorded_presentation``): what load_runs installed for the labels
    presentation: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The suites' names joined by ``+`` (run folder names where suite.json is missing)."""
        names = [s.get("name") or d.name for s, d in zip(self.suites, self.run_dirs)]
        return "+".join(dict.fromkeys(names)) or "report"

    @property
    def ok(self) -> pd.DataFrame:
        return self.results[self.results["status"] == "ok"]

    @property
    def failed(self) -> pd.DataFrame:
        return self.results[~self.results["status"].isin(["ok", PENDING])]

    @property
    def pending(self) -> pd.DataFrame:
        return self.results[self.results["status"] == PENDING]

    @property
    def recorded(self) -> pd.DataFrame:
        """The cells some record holds (finished or failed), without the pending ones."""
        return self.results[self.results["status"] != PENDING]

    @property
    def tolerance(self) -> float:
        """Points of benign accuracy below Vanilla's within which a defense may be called best: the
        strictest ``run.match_benign`` of the suites, else ``DEFAULT_TOLERANCE``."""
        values = [float(s["run"]["match_benign"]) for s in self.suites
                  if isinstance(s.get("run"), dict) and s["run"].get("match_benign") is not None]
        return min(values) if values else DEFAULT_TOLERANCE

    @property
    def uninformative_below(self) -> float:
        """Relative performance against Vanilla below which an attack setting is uninformative: the
        highest ``report.uninformative_below`` of the suites (the most cautious), else the default."""
        values = [float(s["report"]["uninformative_below"])
                  if isinstance(s.get("report"), dict) and s["report"].get("uninformative_below") is not None
                  else UNINFORMATIVE_BELOW for s in self.suites]  # a run without [report] used the default
        return max(values) if values else UNINFORMATIVE_BELOW

    @property
    def progress(self) -> Progress:
        results = self.results
        known = any(isinstance(s.get("matrix"), dict) for s in self.suites)
        if results.empty:
            return Progress(0, 0, 0, 0, known)
        return Progress(len(results), int((results["status"] == "ok").sum()), len(self.failed), len(self.pending),
                        known)

    def defenses(self) -> list[str]:
        """Every defense of any table, in report order: the key of the fixed colour per defense."""
        swept = list(self.sweep["defense"]) if "defense" in self.sweep else []
        return order_defenses(list(self.results["defense"]) + list(self.curves["defense"])
                              + list(self.timing["defense"]) + swept)
