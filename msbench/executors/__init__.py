"""Executors: where the cells of a run are computed (``run_suite(..., executor=...)``, ``--executor``).

``local`` runs them in this process; ``ray`` spreads victims and cells over a Ray cluster. Both
yield records made by the same code, and the runner alone writes them, so a run's tables do not
depend on the executor, and a run started with one can be resumed with the other. Executors are
plugins of the ``EXECUTORS`` registry (``@register_executor("name")``, or an entry point in the
group ``msbench.executors``), so the ``--executor`` choices are the registered names.
"""
from __future__ import annotations

from typing import Any

from msbench.executors import ray_cluster  # noqa: F401  (registers "ray"; Ray itself is imported only when used)
from msbench.executors.base import Executor, Job, record_of, victim_levels, workspace
from msbench.executors.local import LocalExecutor
from msbench.registry import EXECUTORS, UnknownPluginError


def make_executor(executor: "str | Executor" = "local", **options: Any) -> Executor:
    """An executor by registered name (``options`` go to its constructor), or the instance given."""
    if isinstance(executor, Executor):
        return executor
    try:
        cls = EXECUTORS.get(executor)
    except UnknownPluginError:
        raise ValueError(f"unknown executor '{executor}': expected one of {', '.join(EXECUTORS.names())}") from None
    return cls(**options)


__all__ = ["Executor", "Job", "LocalExecutor", "EXECUTORS", "make_executor", "record_of", "victim_levels", "workspace"]
