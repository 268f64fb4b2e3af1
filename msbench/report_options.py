"""The ``[report]`` section of a suite: how the report judges what the run measured, checked at load time.

``suite.py`` imports this module for the section; the report reads the resolved values back from
each run's ``suite.json`` (``msbench.report.runs.RunTables``), so a report of old runs uses the defaults.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from msbench.config import SuiteError

if TYPE_CHECKING:
    from msbench.runner.suite_schema import Suite

UNINFORMATIVE_BELOW = 0.5
"""Default share of Vanilla's benign accuracy that an attack's clone of Vanilla must reach for the attack
setting to say anything about defenses (relative performance against Vanilla)."""


@dataclass
class ReportOptions:
    """The ``[report]`` table."""

    uninformative_below: float = UNINFORMATIVE_BELOW  # an attack setting whose clone of Vanilla stays below
    # this relative performance is marked uninformative and bolds no defense

    def validate(self, suite: "Suite") -> None:
        value = self.uninformative_below
        if not (0 < value < 1):
            raise SuiteError(str(suite.path), "report.uninformative_below",
                             f"expected a relative performance strictly between 0 and 1, got {value}")
