"""Executors: where the cells of a run are computed (``run_suite(..., executor=...)``, ``--executor``).

``local`` runs them in this process; ``pool`` in worker processes of this machine (``--jobs N``);
``ray`` spreads victims and cells over a Ray cluster. All yield records made by the same code, and
the runner alone writes them, so a run's tables do not depend on the executor (at the same torch
thread count), and a run started with one can be resumed with another. Executors are plugins of
the ``EXECUTORS`` registry (``@register_executor("name")``, or an entry point in the group
``msbench.executors``), so the ``--executor`` choices are the registered names.
"""
from __future__ import annotations

from typing import Any

from msbench.executors import ray_cluster  # noqa: F401  (registers "ray"; Ray itself is imported only when used)
from msbench.executors.base import Executor, Job, record_of, victim_levels, workspace
from msbench.executors.local import LocalExecutor
from msbench.executors.pool import PoolExecutor, check_jobs
from msbench.registry import EXECUTORS, UnknownPluginError


def make_executor(executor: "str | Executor" = "local", jobs: int | None = None, **options: Any) -> Executor:
    """An executor by registered name (``options`` go to its constructor), or the instance given.

    ``jobs`` (``--jobs``): worker processes on this machine; 1 is the local executor, in this
    process, and more the pool executor. It applies to ``local`` and ``pool`` only: a Ray task's
    share of a machine is its ``cpus_per_task``. A bad count is a ValueError, before any work.
    """
    if jobs is not None:
        check_jobs(jobs)
        if isinstance(executor, Executor) or executor not in ("local", "pool"):
            name = executor.name if isinstance(executor, Executor) else executor
            raise ValueError(f"jobs applies to the local executor (worker processes on this machine), not to '{name}'")
        if jobs == 1 and executor == "local":
            return LocalExecutor()
        return PoolExecutor(jobs=jobs, **options)
    if isinstance(executor, Executor):
        return executor
    try:
        cls = EXECUTORS.get(executor)
    except UnknownPluginError:
        raise ValueError(f"unknown executor '{executor}': expected one of {', '.join(EXECUTORS.names())}") from None
    return cls(**options)


__all__ = ["Executor", "Job", "LocalExecutor", "PoolExecutor", "EXECUTORS", "make_executor", "record_of",
           "victim_levels", "workspace"]
