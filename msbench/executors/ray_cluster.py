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
import os
import sys
from typing import Any, Callable, Iterator

from msbench.cells import victim_key
from msbench.checkpoints import checkpoint_matches
from msbench.executors.base import (Executor, Job, OnStart, Pending, WithPlugins, failed_record, record_of, victim_levels,
                                    workspace)
from msbench.isolation import isolated
from msbench.progress import progress
from msbench.registry import register_executor


def _worker_setup(threads: int) -> None:
    import torch

    os.environ["MSBENCH_PROGRESS"] = "0"  # a worker's bars would interleave in the driver's console
    torch.set_num_threads(threads)


def _train_victim(job: Job, dataset: str, arch: str, chain: list[str], seed: int, threads: int) -> str | None:
    """Train (or find cached) one victim; returns the error, if any, for the driver to report."""
    _worker_setup(threads)
    try:
        ws = workspace(job)
        with isolated(ws.torch_state, f"victim {dataset}/{arch}/{'+'.join(chain)}/seed{seed}"):
            ws.victims.get(dataset, arch, chain, seed)
    except Exception as failure:  # its cells will meet the same error and record it
        return f"{type(failure).__name__}: {failure}"
    return None


def _compute_cell(job: Job, cell: Any, cell_id: str, threads: int) -> dict[str, Any]:
    """One cell's record; its victims are loaded, never trained here (the victim stage trained each once)."""
    _worker_setup(threads)
    ws = workspace(job)
    ws.victims.trains = False
    try:
        return record_of(ws, cell, cell_id)
    finally:
        ws.victims.trains = True


def _call(function: Callable[..., Any], threads: int, arguments: tuple[tuple, dict[str, Any]]) -> Any:
    _worker_setup(threads)
    args, kwargs = arguments
    return function(*args, **kwargs)


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
            failed = self._train_victims(ray, ray.remote(_train_victim).options(**options), shared, job, pending)
            compute_cell = ray.remote(_compute_cell).options(**options)
            cells = {}
            for cell, cell_id in pending:
                chain = job.suite.chain(cell.defense)
                keys = [victim_key(job.suite, cell.dataset, cell.arch, chain[:n], cell.seed) for n in range(1, len(chain) + 1)]
                error = next((failed[key] for key in keys if key in failed), None)
                if error is not None:  # its victim failed: the victim task's error is the cell's
                    yield {**cell.__dict__, "cell_id": cell_id, "status": "failed", "error": error, "traceback": error}
                else:
                    cells[compute_cell.remote(shared, cell, cell_id, self.cpus_per_task)] = (cell, cell_id)
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

    def _train_victims(self, ray: Any, train_victim: Any, shared: Any, job: Job, pending: Pending) -> dict[str, str]:
        """Train the victims the cells need and have no checkpoint, level by level, one task each;
        returns the error of each victim that failed, by key (also in ``victim_failures``)."""
        levels = victim_levels(job, [cell for cell, _ in pending])
        missing = [{key: spec for key, spec in level.items() if not checkpoint_matches(job.run_dir / "victims" / f"{key}.pt", key)}
                   for level in levels]  # a corrupt or misplaced checkpoint is no trained victim: its task retrains it
        failed: dict[str, str] = {}
        with progress(total=sum(map(len, missing)), desc="victims", unit="victim") as bar:
            for level in missing:
                for key, (dataset, arch, chain, seed) in level.items():  # a link over a failed base fails with it, untried
                    base = victim_key(job.suite, dataset, arch, chain[:-1], seed) if len(chain) > 1 else None
                    if base in failed:
                        failed[key] = failed[base]
                tasks = {train_victim.remote(shared, *spec, self.cpus_per_task): key for key, spec in level.items() if key not in failed}
                remaining = list(tasks)
                while remaining:
                    done, remaining = ray.wait(remaining, num_returns=1)
                    try:
                        error = ray.get(done[0])
                    except ray.exceptions.RayError as lost:
                        error = f"{type(lost).__name__}: {lost}"
                    if error:
                        key = tasks[done[0]]
                        dataset, arch, chain, seed = level[key]
                        failed[key] = error
                        self.victim_failures.append(f"victim {dataset}/{arch}/{'+'.join(chain)}/seed{seed} failed: {error}")
                        bar.write(self.victim_failures[-1], file=sys.stderr)
                    bar.update(1)
        return failed

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        ray = self._ray()
        packed = WithPlugins((args, kwargs), *self._plugins)  # a worker imports the suite's plugins, then unpickles them
        return ray.get(ray.remote(_call).options(**self._resources(ray)).remote(function, self.cpus_per_task, packed))

    def close(self) -> None:
        if self._started:
            import ray
            ray.shutdown()
            self._started = False
