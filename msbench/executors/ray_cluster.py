"""The Ray executor: a suite's victims, then its cells, as Ray tasks with CPU and GPU resources.

Victims go first, level by level (a defense's own victim before the output defenses that wrap
it), each trained by exactly one task, so no two workers write the same artifact; then every
pending cell is one task. Workers read the data root and write victims into the run directory
given as absolute paths: on a cluster of several machines both must be on a shared file system,
and plugin modules must be importable on every node. The driver alone writes records and tables,
as each cell finishes, so an interrupted run keeps every finished cell and resumes with either
executor.
"""
from __future__ import annotations

import importlib.util
import logging
from typing import Any, Callable, Iterator

from msbench.executors.base import (Executor, Finished, Job, OnStart, Pending, VictimSpec, WithPlugins, call_in_worker,
                                    compute_cell, failed_record, over_failed_victims, train_victim, train_victims)
from msbench.registry import register_executor


@register_executor("ray")
class RayExecutor(Executor):
    """Victims and cells as Ray tasks.

    ``address``: the cluster to join (None: ``RAY_ADDRESS`` if set, else a local one started here).
    ``cpus_per_task``: CPUs each task reserves, also its torch thread count. ``gpus_per_task``:
    GPUs each task reserves (None: 1 where the cluster has GPUs, else 0). ``init``: further
    ``ray.init`` arguments.
    """

    name = "ray"
    in_process = False

    def __init__(self, address: str | None = None, cpus_per_task: int = 1, gpus_per_task: float | None = None,
                 init: dict[str, Any] | None = None):
        if importlib.util.find_spec("ray") is None:
            raise ImportError("the ray executor needs Ray: pip install 'msbench[ray]'")
        if cpus_per_task < 1:
            raise ValueError(f"cpus_per_task: expected a positive integer, got {cpus_per_task}")
        if gpus_per_task is not None and gpus_per_task < 0:
            raise ValueError(f"gpus_per_task: expected a non-negative number, got {gpus_per_task}")
        self.address = address
        self.cpus_per_task = cpus_per_task
        self.gpus_per_task = gpus_per_task
        self.init = init or {}
        self._started = False
        self.victim_failures: list[str] = []  # "victim ... failed: <error>", one per failed victim task
        self._plugins: tuple[list[str], Any] = ([], None)

    def _ray(self) -> Any:
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, logging_level=logging.WARNING, **self.init)
            self._started = True
        return ray

    def _resources(self, ray: Any) -> dict[str, Any]:
        gpus = self.gpus_per_task
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
        return {"num_cpus": self.cpus_per_task, "num_gpus": gpus, "max_retries": 0}

    def records(self, job: Job, pending: Pending, on_start: OnStart | None = None) -> Iterator[dict[str, Any]]:
        ray = self._ray()
        self._plugins = (job.suite.plugins, job.plugin_folder)  # for the later stages' ``call``
        options = self._resources(ray)
        shared = ray.put(job)
        remaining: list[Any] = []
        try:
            victim_task = ray.remote(train_victim).options(**options)
            failed = train_victims(job, pending, lambda level: self._run_level(ray, victim_task, shared, level),
                                   self.victim_failures)
            skipped, pending = over_failed_victims(job, pending, failed)
            yield from skipped  # their victim failed: the victim task's error is the cell's
            compute = ray.remote(compute_cell).options(**options)
            cells = {compute.remote(shared, cell, cell_id, self.cpus_per_task): (cell, cell_id)
                     for cell, cell_id in pending}
            remaining = list(cells)
            while remaining:
                done, remaining = ray.wait(remaining, num_returns=1)
                if on_start and remaining:
                    on_start(cells[remaining[0]][0])
                try:
                    yield ray.get(done[0])
                except ray.exceptions.RayError as lost:  # the worker died (out of memory, a lost node): record it
                    cell, cell_id = cells[done[0]]
                    yield failed_record(cell, cell_id, lost)
        finally:
            for ref in remaining:  # interrupted: what is still queued or running is dropped
                ray.cancel(ref, force=True)

    def _run_level(self, ray: Any, victim_task: Any, shared: Any, level: dict[str, VictimSpec]) -> Finished:
        """One level of the victim stage: a task per victim, each one's error (or None) as it ends."""
        tasks = {victim_task.remote(shared, *spec, self.cpus_per_task): key for key, spec in level.items()}
        remaining = list(tasks)
        while remaining:
            done, remaining = ray.wait(remaining, num_returns=1)
            try:
                error = ray.get(done[0])
            except ray.exceptions.RayError as lost:
                error = f"{type(lost).__name__}: {lost}"
            yield tasks[done[0]], error

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        ray = self._ray()
        packed = WithPlugins((args, kwargs), *self._plugins)  # a worker imports the suite's plugins, then unpickles
        task = ray.remote(call_in_worker).options(**self._resources(ray))
        return ray.get(task.remote(function, self.cpus_per_task, packed))

    def close(self) -> None:
        if self._started:
            import ray
            ray.shutdown()
            self._started = False
