"""What every executor shares: the job a worker rebuilds its workspace from, and one cell's record;
and, for executors with worker processes (pool, ray), the tasks a worker runs and the victim stage.

An executor only decides *where* cells run. Every record is made by ``record_of`` below from a
``Workspace`` of the same suite, data root and run directory, so a cell's result does not depend
on the executor that computed it, and the runner, the only writer of records, stays the same.
Executors with workers train every victim first, each in exactly one task (``train_victims``), so
no two workers write one checkpoint; their cell tasks only load victims (``compute_cell``).
"""
from __future__ import annotations

import os
import pickle
import sys
import traceback
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from msbench.runner.cells import Cell, digest, victim_key
from msbench.runner.checkpoints import checkpoint_matches
from msbench.runner.evaluate import run_cell
from msbench.isolation import isolated
from msbench.plugin_modules import import_plugins
from msbench.progress import progress
from msbench.runner.suite_schema import Suite
from msbench.runner.workspace import Workspace, resolve_device

Pending = list[tuple[Cell, str]]  # (cell, cell id) pairs still to compute
OnStart = Callable[[Cell], None]


@dataclass(frozen=True)
class Job:
    """Everything a process needs to compute cells of one run; paths are absolute so that workers
    started elsewhere (another working directory, another machine with the same shared paths) agree."""

    suite: Suite
    data_root: Path
    run_dir: Path
    device: str  # as asked (``requested_device``); each worker resolves it ("auto": a GPU where it has one)
    plugin_folder: Path | None = None  # the suite file's folder, absolute: where a worker finds the suite's own plugins

    def __reduce__(self) -> tuple:
        """Pickled for a worker with the suite's plugin modules named: unpickling imports them first
        (the suite's folder on ``sys.path`` only while importing), since the suite's settings are
        instances of plugin classes a worker has not imported."""
        fields = (self.suite, self.data_root, self.run_dir, self.device, self.plugin_folder)
        return _with_plugins, (self.suite.plugins, self.plugin_folder, _dumps(fields), Job)

    @property
    def key(self) -> str:
        """What identifies the job's run: its resolved suite, data root and run directory."""
        return digest({"suite": self.suite.resolved(), "data_root": str(self.data_root), "run_dir": str(self.run_dir)})


class WithPlugins:
    """An object sent to a worker together with the plugin modules its pickle refers to: unpickled
    there, it imports them first (``Job`` does the same for itself)."""

    def __init__(self, value: Any, plugins: list[str], folder: Path | None):
        self.value, self.plugins, self.folder = value, plugins, folder

    def __reduce__(self) -> tuple:
        return _with_plugins, (self.plugins, self.folder, _dumps(self.value), None)


def cloudpickler() -> Any:
    """cloudpickle (a declared dependency), else Ray's copy of it, else None: a suite's dataset loaders
    are local functions, which plain pickle cannot send to another process."""
    try:
        import cloudpickle
    except ImportError:
        try:
            from ray import cloudpickle
        except ImportError:
            return None
    return cloudpickle


def _dumps(value: Any) -> bytes:
    """Pickled by value where needed (cloudpickle); plain pickle, for what it can, without it.
    The worker unpickles with plain ``pickle.loads``, which imports the cloudpickle that wrote it."""
    pickler = cloudpickler()
    return (pickler or pickle).dumps(value)


def _with_plugins(plugins: list[str], folder: Path | None, payload: bytes, make: Callable[..., Any] | None) -> Any:
    """Import the plugins, then unpickle ``payload`` (``make(*fields)`` when given)."""
    import_plugins(plugins, folder if folder is not None and Path(folder).is_dir() else None)
    value = pickle.loads(payload)
    return make(*value) if make is not None else value


WORKSPACE_LIMIT = 2  # workspaces a process keeps: a worker serves one run at a time; the oldest is dropped
# per job and device: its loaded victims are reused by later cells
_WORKSPACES: OrderedDict[str, Workspace] = OrderedDict()


def workspace(job: Job) -> Workspace:
    """This process's workspace of ``job``, made on first use (a worker registers the suite's plugins then)."""
    key = f"{job.key}/{job.device}"
    if key in _WORKSPACES:
        _WORKSPACES.move_to_end(key)
    else:
        # a worker has not read the suite: its plugins, as the driver found them
        import_plugins(job.suite.plugins, job.plugin_folder)
        _WORKSPACES[key] = Workspace(job.suite, job.data_root, job.run_dir,
                                     resolve_device(job.device))
        while len(_WORKSPACES) > WORKSPACE_LIMIT:
            _WORKSPACES.popitem(last=False)
    return _WORKSPACES[key]


def forget_workspaces(job: Job) -> None:
    """Drop this process's workspaces of ``job``, with the victims they loaded (``run --force``)."""
    for key in [k for k in _WORKSPACES if k.startswith(f"{job.key}/")]:
        del _WORKSPACES[key]


def record_of(ws: Workspace, cell: Cell, cell_id: str) -> dict[str, Any]:
    """A cell's record; a failure is a record too (status "failed", the error and its traceback)."""
    try:
        return run_cell(ws, cell, cell_id)
    except Exception as failure:  # a failed cell is a result, not the end of the run
        return failed_record(cell, cell_id, failure)


def failed_record(cell: Cell, cell_id: str, failure: BaseException) -> dict[str, Any]:
    """The record of a cell that raised: its identity, the error in one line and the traceback."""
    return {**cell.__dict__, "cell_id": cell_id, "status": "failed", "error": f"{type(failure).__name__}: {failure}",
            "traceback": "".join(traceback.format_exception(failure))}


class Executor:
    """Computes pending cells and yields their records, in any order, as each one finishes.

    The runner stores each record as it arrives, so what an executor has yielded survives an
    interrupt. ``call`` runs a later stage (timing) where the executor runs its work.
    """

    name = "base"
    in_process = True  # False: ``call`` runs the function elsewhere, so callbacks such as ``echo`` stay behind

    def records(self, job: Job, pending: Pending, on_start: OnStart | None = None) -> Iterator[dict[str, Any]]:
        raise NotImplementedError

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return function(*args, **kwargs)

    def close(self) -> None:
        """Release what the executor started (a local Ray cluster); the runner calls it at the end."""


VictimSpec = tuple[str, str, list[str], int]  # (dataset, arch, defense chain, seed)


def victim_levels(job: Job, cells: Iterable[Cell]) -> list[dict[str, VictimSpec]]:
    """The victims the cells need, grouped so that each group depends only on earlier ones.

    Group ``i`` holds the chains of ``i + 1`` defenses: ``ini+mad`` needs InI's victim (group 0)
    before MAD's wrapper (group 1). Each victim appears once (keyed by its cache key), however many
    cells share it.
    """
    levels: list[dict[str, VictimSpec]] = []
    for cell in cells:
        chain = job.suite.chain(cell.defense)
        for length in range(1, len(chain) + 1):
            while len(levels) < length:
                levels.append({})
            prefix = chain[:length]
            key = victim_key(job.suite, cell.dataset, cell.arch, prefix, cell.seed)
            levels[length - 1].setdefault(key, (cell.dataset, cell.arch, prefix, cell.seed))
    return levels


# -- what a worker process runs: the same for every executor that runs the victim stage first ----------

def worker_setup(threads: int) -> None:
    """Set a worker's torch threads before its workspace records torch's state (so every cell starts
    from that count), and silence its progress bars, which would interleave in the driver's console."""
    import torch

    os.environ["MSBENCH_PROGRESS"] = "0"
    torch.set_num_threads(threads)


def train_victim(job: Job, dataset: str, arch: str, chain: list[str], seed: int, threads: int) -> str | None:
    """Train (or find cached) one victim; returns the error, if any, for the driver to report."""
    worker_setup(threads)
    try:
        ws = workspace(job)
        with isolated(ws.torch_state, f"victim {dataset}/{arch}/{'+'.join(chain)}/seed{seed}"):
            ws.victims.get(dataset, arch, chain, seed)
    except Exception as failure:  # its cells will meet the same error and record it
        return f"{type(failure).__name__}: {failure}"
    return None


def compute_cell(job: Job, cell: Cell, cell_id: str, threads: int) -> dict[str, Any]:
    """One cell's record; its victims are loaded, never trained here (the victim stage trained each once,
    and two workers training one victim at once would write one checkpoint twice)."""
    worker_setup(threads)
    ws = workspace(job)
    ws.victims.trains = False
    try:
        return record_of(ws, cell, cell_id)
    finally:
        ws.victims.trains = True


def call_in_worker(function: Callable[..., Any], threads: int, arguments: tuple[tuple, dict[str, Any]]) -> Any:
    """A later stage (timing) in a worker, at the workers' thread count."""
    worker_setup(threads)
    args, kwargs = arguments
    return function(*args, **kwargs)


Finished = Iterator[tuple[str, "str | None"]]  # (victim key, its error or None), as each victim task ends


def train_victims(job: Job, pending: Pending, run_level: Callable[[dict[str, VictimSpec]], Finished],
                  failures: list[str]) -> dict[str, str]:
    """The victim stage: train the victims the cells need and have no checkpoint, level by level,
    each by one task of ``run_level`` (which runs a level's victims and yields each one's outcome);
    returns the error of each victim that failed, by key, and appends a line per failure to ``failures``.

    A link over a failed victim is not tried: it inherits the error.
    """
    levels = victim_levels(job, [cell for cell, _ in pending])
    missing = [{key: spec for key, spec in level.items()
                if not checkpoint_matches(job.run_dir / "victims" / f"{key}.pt", key)}
               for level in levels]  # a corrupt or misplaced checkpoint is no trained victim: its task retrains it
    failed: dict[str, str] = {}
    with progress(total=sum(map(len, missing)), desc="victims", unit="victim") as bar:
        for level in missing:
            for key, (dataset, arch, chain, seed) in level.items():
                base = victim_key(job.suite, dataset, arch, chain[:-1], seed) if len(chain) > 1 else None
                if base in failed:
                    failed[key] = failed[base]
            for key, error in run_level({key: spec for key, spec in level.items() if key not in failed}):
                if error:
                    dataset, arch, chain, seed = level[key]
                    failed[key] = error
                    failures.append(f"victim {dataset}/{arch}/{'+'.join(chain)}/seed{seed} failed: {error}")
                    bar.write(failures[-1], file=sys.stderr)
                bar.update(1)
    return failed


def over_failed_victims(job: Job, pending: Pending, failed: dict[str, str]) -> tuple[list[dict[str, Any]], Pending]:
    """Split ``pending``: the records of cells whose victim (or a base of it) failed, each carrying that
    victim's error without running, and the cells still to compute."""
    records, rest = [], []
    for cell, cell_id in pending:
        chain = job.suite.chain(cell.defense)
        keys = [victim_key(job.suite, cell.dataset, cell.arch, chain[:n], cell.seed) for n in range(1, len(chain) + 1)]
        error = next((failed[key] for key in keys if key in failed), None)
        if error is None:
            rest.append((cell, cell_id))
        else:
            records.append({**cell.__dict__, "cell_id": cell_id, "status": "failed", "error": error,
                            "traceback": error})
    return records, rest
