"""The local executor: every cell in this process, one after another."""
from __future__ import annotations

from typing import Any, Iterator

from msbench.executors.base import Executor, Job, OnStart, Pending, record_of, workspace
from msbench.registry import register_executor


@register_executor("local")
class LocalExecutor(Executor):
    """One process, cells in matrix order; victims are trained the first time a cell needs them."""

    name = "local"

    def records(self, job: Job, pending: Pending, on_start: OnStart | None = None) -> Iterator[dict[str, Any]]:
        ws = workspace(job)
        for cell, cell_id in pending:
            if on_start:
                on_start(cell)
            yield record_of(ws, cell, cell_id)
