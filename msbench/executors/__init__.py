"""Executors: where the cells of a run are computed (``run_suite(..., executor=...)``, ``--executor``).

``local`` runs them in this process; ``ray`` spreads victims and cells over a Ray cluster. Both
yield records made by the same code, and the runner alone writes them, so a run's tables do not
depend on the executor, and a run started with one can be resumed with the other.
"""
from __future__ import annotations

from typing import Any

from msbench.executors.base import Executor, Job, record_of, victim_levels, workspace
from msbench.executors.local import LocalExecutor

EXECUTORS = ("local", "ray")


def make_executor(executor: "str | Executor" = "local", **options: Any) -> Executor:
    """An executor by name (``options`` go to its constructor), or the instance given."""
    if isinstance(executor, Executor):
        return executor
    if executor == "local":
        return LocalExecutor(**options)
    if executor == "ray":
        from msbench.executors.ray_cluster import RayExecutor
        return RayExecutor(**options)
    raise ValueError(f"unknown executor '{executor}': expected one of {', '.join(EXECUTORS)}")


__all__ = ["Executor", "Job", "LocalExecutor", "EXECUTORS", "make_executor", "record_of", "victim_levels", "workspace"]
