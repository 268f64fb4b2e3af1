"""The pool executor: a run's victims, then its cells, in worker processes of this machine (``--jobs N``).

One process computes one cell at a time on ``torch.get_num_threads()`` threads, and a small model
keeps few threads busy: N processes of one thread each keep N cores busy instead. The work is
staged as on a Ray cluster (``msbench.executors.base``): victims first, level by level, each
trained by exactly one worker task, then every cell a task that only loads its victims; the
driver alone writes records and tables, as each cell finishes, so an interrupted run keeps its
finished cells and resumes with any executor.

Workers are started with "spawn" (torch's threads and a forked process do not mix), so they
import msbench afresh and unpickle each job with the suite's plugin modules (``Job``).
"""
from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Iterator

from msbench.executors.base import (Executor, Finished, Job, OnStart, Pending, VictimSpec, cloudpickler, compute_cell,
                                    failed_record, over_failed_victims, train_victim, train_victims)
from msbench.registry import register_executor

Task = tuple[Any, Callable[..., Any], tuple]  # (tag, function, arguments): what ``_run`` hands a worker


class WorkerDied(RuntimeError):
    """A worker process ended while running a task (killed for memory, ``os._exit`` in a plugin)."""


def cores() -> int:
    """The CPU cores ``os.cpu_count()`` reports: the most worker processes a run may start."""
    return os.cpu_count() or 1


def check_jobs(jobs: int, name: str = "jobs") -> int:
    """``jobs`` when it is a number of processes this machine can run side by side; else ValueError,
    one line naming ``name`` (``--jobs`` on the command line) and the core count. More processes than
    cores would only take turns on them, each slower, so it is refused rather than quietly clamped."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"{name}: expected a positive number of worker processes, got {jobs}")
    if jobs > cores():
        raise ValueError(f"{name} {jobs}: more worker processes than this machine's {cores()} CPU cores "
                         f"(os.cpu_count()); use at most {cores()}")
    return jobs


def _ignore_interrupts() -> None:
    """A worker's start: Ctrl-C reaches the whole process group, but the driver alone decides (it
    stops the workers), so workers print no tracebacks of their own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@register_executor("pool")
class PoolExecutor(Executor):
    """Victims and cells as tasks of ``jobs`` worker processes on this machine.

    ``jobs``: worker processes (default: one per CPU core); at most the core count. ``threads``:
    torch threads per worker (default: the cores shared out, ``max(1, cores // jobs)``, so one
    each when ``jobs`` is the core count). The timing stage runs in the driver, as with the
    local executor: the workers are on the same machine.
    """

    name = "pool"
    in_process = True  # the device is this machine's; ``call`` (the timing stage) runs in the driver

    def __init__(self, jobs: int | None = None, threads: int | None = None):
        self.jobs = check_jobs(cores() if jobs is None else jobs)
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads: expected a positive integer, got {threads}")
        self.threads = threads or max(1, cores() // self.jobs)
        if cloudpickler() is None:
            raise ImportError("the pool executor needs cloudpickle, to send a suite's dataset loaders to its "
                              "workers: pip install cloudpickle")
        self.victim_failures: list[str] = []  # "victim ... failed: <error>", one per failed victim task
        self._pool: ProcessPoolExecutor | None = None

    def records(self, job: Job, pending: Pending, on_start: OnStart | None = None) -> Iterator[dict[str, Any]]:
        finished = False
        try:
            failed = train_victims(job, pending, lambda level: self._run_level(job, level), self.victim_failures)
            skipped, pending = over_failed_victims(job, pending, failed)
            yield from skipped  # their victim failed: the victim task's error is the cell's
            tasks = (((cell, cell_id), compute_cell, (job, cell, cell_id, self.threads)) for cell, cell_id in pending)
            started = (lambda tag: on_start(tag[0])) if on_start else None
            for (cell, cell_id), outcome in self._run(tasks, started):
                yield failed_record(cell, cell_id, outcome) if isinstance(outcome, BaseException) else outcome
            finished = True
        finally:
            self._stop(kill=not finished)  # interrupted: running tasks are stopped, queued ones dropped

    def _run_level(self, job: Job, level: dict[str, VictimSpec]) -> Finished:
        """One level of the victim stage: a task per victim, each one's error (or None) as it ends."""
        tasks = ((key, train_victim, (job, *spec, self.threads)) for key, spec in level.items())
        for key, outcome in self._run(tasks):
            yield key, f"{type(outcome).__name__}: {outcome}" if isinstance(outcome, BaseException) else outcome

    def _run(self, tasks: Iterable[Task], started: Callable[[Any], None] | None = None) -> Iterator[tuple[Any, Any]]:
        """Run ``tasks`` on the workers, at most ``jobs`` at a time, and yield ``(tag, result)`` as each
        ends, in any order; a task that raised yields its exception.

        A worker that dies breaks the whole pool, failing every task in flight, and only one of them
        may have killed it: so the tasks in flight then are run again, one at a time in a new pool,
        and the one that dies alone is the one recorded as ``WorkerDied``.
        """
        queue: deque[Task] = deque(tasks)
        suspects: deque[Task] = deque()  # in flight when the pool broke: each run again, alone
        running: dict[Future, tuple[Task, bool]] = {}  # future: (task, run alone)
        broken_with = 0  # tasks in flight when the pool broke (0: it is not broken)
        while queue or suspects or running:
            if not running:
                if broken_with:
                    self._stop(kill=True)
                    broken_with = 0
                if suspects:
                    task = suspects.popleft()
                    running[self._submit(task)] = (task, True)
            alone = any(solo for _, solo in running.values())
            while queue and not suspects and not alone and not broken_with and len(running) < self.jobs:
                task = queue.popleft()
                running[self._submit(task)] = (task, False)
                if started:
                    started(task[0])
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                task, _ = running.pop(future)
                try:
                    yield task[0], future.result()
                except BrokenProcessPool as died:
                    broken_with = broken_with or len(running) + 1
                    if broken_with == 1:  # it ran alone: it is what killed its worker
                        yield task[0], WorkerDied(f"its worker process died ({died})")
                    else:
                        suspects.append(task)
                except Exception as failure:  # it could not be sent or its result not returned: its failure
                    yield task[0], failure
        if broken_with:  # the last task killed its worker: the next stage starts a new pool
            self._stop(kill=True)

    def _submit(self, task: Task) -> Future:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_ignore_interrupts)
        _, function, arguments = task
        return self._pool.submit(function, *arguments)

    def _stop(self, kill: bool) -> None:
        """Shut the workers down; ``kill``: stop them in their task (an interrupted run, a broken pool),
        so none goes on writing into a run directory whose lock the driver is about to release."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if kill:
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                if process.is_alive():
                    process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        self._stop(kill=True)
