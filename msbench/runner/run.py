"""Running a suite: suite -> cells -> executor -> records -> tables -> report; the only writer of records.

``run_suite`` checks every input before any work, locks the run directory, and hands the cells not
yet done to an executor; each record is stored atomically as it arrives, so Ctrl-C or a kill loses
at most the cells in progress, and a re-run computes only what is missing. What one cell computes
is ``msbench.runner.evaluate.run_cell``; where, the executor's business (``msbench.executors``).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from msbench.runner.cells import Cell, cell_key, expand, victim_key
from msbench.data import default_data_root
from msbench.executors import Executor, Job, make_executor
from msbench.executors.base import forget_workspaces
from msbench.io import DiskError, RunLock, make_dirs, write_atomic
from msbench.compute import precision_problem
from msbench.logs import CellLines, duration, failure_summary, heartbeats, start_line, teller
from msbench.runner.plan import WARN_SECONDS, plan_suite
from msbench.progress import progress
from msbench.report import render_report
from msbench.runner.results import RecordStore, results_frame, write_tables
from msbench.runner.suite import Suite, SuiteError, check_data, load_suite
from msbench.timing.stage import time_suite
from msbench.runner.presentation import presentation
from msbench.runner.workspace import check_device, requested_device, resolve_device

Echo = Callable[[str], Any]


@dataclass(frozen=True)
class RunRequest:
    """What the caller asked of one run beyond the suite and where it runs: which cells to
    (re)compute and what to do after them. ``run_suite``'s keyword arguments, grouped."""

    retry_failed: bool = False  # run again the cells recorded as failed
    force: bool = False  # recompute every cell and retrain every victim, done or not
    report: bool = True  # render the report at the end
    # default: reports/<run directory's name> (runs/<suite name> -> reports/<suite name>)
    report_dir: Path | None = None
    echo: Echo | None = None  # also send the run's messages here


def check_run_dir(run_dir: Path, suite: str | None = None) -> None:
    """A run directory msbench can write: its folders are folders, its files are not folders, and it
    holds no other suite's run (whose rows the tables would drop)."""
    recorded = run_dir / "suite.json"
    if suite is not None and recorded.is_file():
        try:
            other = json.loads(recorded.read_text()).get("name")
        except (OSError, ValueError):
            other = None
        if other and other != suite:
            raise DiskError(run_dir, f"holds a run of suite '{other}'; refusing to run suite '{suite}' into it "
                                     f"(its tables would lose that run's rows): choose another --out, or "
                                     f"--share-run-dir to build on its cells")
    for name in ("records", "victims"):
        if (run_dir / name).exists() and not (run_dir / name).is_dir():
            raise DiskError(run_dir / name, "a file stands where a folder is needed; move it away")
    for name in ("suite.json", "results.csv", "curves.csv"):
        if (run_dir / name).is_dir():
            raise DiskError(run_dir / name, "is a folder, expected a file; move it away")
    make_dirs(run_dir / "records")


KEPT_TABLES = ("suite.json", "results.csv", "curves.csv", "timing.csv")  # what makes a run directory reportable


def keep_other_tables(run_dir: Path, suite: str) -> Path | None:
    """Copy the tables of another suite's run in ``run_dir`` to ``run_dir/suites/<its name>/``, before
    this suite's run rewrites them, so a shared run directory never drops that run's rows; the copy is
    a run directory `msbench report` reads. None when ``run_dir`` holds no other suite's run."""
    try:
        other = json.loads((run_dir / "suite.json").read_text()).get("name")
    except (OSError, ValueError, AttributeError):
        return None
    if not other or other == suite:
        return None
    target = run_dir / "suites" / other
    make_dirs(target)
    for name in KEPT_TABLES:
        if (run_dir / name).is_file():
            write_atomic(target / name, (run_dir / name).read_bytes())
    return target


def run_suite(suite: str | Path | Suite, data_root: str | Path | None = None, out: str | Path | None = None,
              device: str | None = None, retry_failed: bool = False, echo: Echo | None = None,
              report: bool = True, report_dir: str | Path | None = None, executor: str | Executor = "local",
              force: bool = False, share_run_dir: bool = False, jobs: int | None = None) -> pd.DataFrame:
    """Run every cell of a suite not already done; returns the results table (also in results.csv).

    A cell that fails (an exception while training its victim, attacking or evaluating) does not
    stop the run and does not raise: it is a row with ``status == "failed"`` and its ``error`` (the
    record file keeps the traceback), it is not done, and a later run leaves it alone unless
    ``retry_failed``. ``frame.attrs["cells"]`` counts the suite's cells (``planned``, ``done``,
    ``failed``, ``pending``); ``msbench run`` exits 1 when ``failed`` is not 0. ``force``
    recomputes every cell and retrains every victim of the suite, done or not. A run directory
    holding another suite's run is refused unless ``share_run_dir`` (a suite built on another's
    cells, zoo on quick's, reuses its victims and records; the tables then list this suite's cells, the
    other suite's tables are kept in ``<run dir>/suites/<its name>/`` and its records stay for its next
    run, and the report goes to ``reports/<suite name>`` unless ``report_dir``).

    Messages (a start line, one line per finished cell with its clone accuracy, seconds and the
    ETA, failures, a summary of them) go to the ``msbench`` logger, are appended with UTC
    timestamps to ``<run dir>/run.log``, and go to ``echo`` when given; with neither ``echo`` nor
    a logging configuration, to stdout (see ``msbench.logs``).

    ``executor``: ``"local"`` (this process), ``"ray"`` (a Ray cluster: ``RAY_ADDRESS``, else a local
    one), or an ``Executor`` such as ``RayExecutor(address=..., gpus_per_task=1)``. ``jobs``: worker
    processes on this machine (``--jobs``): 1 is the local executor, more the ``"pool"`` executor
    (``PoolExecutor(jobs=N)``), at most ``os.cpu_count()``, each worker on ``cores // jobs`` torch
    threads; victims are trained first, each by one worker, then the cells. With ``report``
    (default), renders the report from the run's tables into ``report_dir`` (default
    ``reports/<run directory's name>``, so two run folders of one suite keep two reports); a failed
    rendering only warns, the results stay in the run dir.

    Every input is checked before any work (suite values, data files, the device, the run
    directory); a second run on the same run directory stops at once (``RunLock``).
    """
    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    root = Path(data_root) if data_root else default_data_root()
    check_data(suite, root)
    executor = make_executor(executor, jobs=jobs)
    device, asked_by = requested_device(device, suite)
    if executor.in_process:  # a worker elsewhere resolves the name on its machine
        check_device(device, asked_by)
        problem = precision_problem(suite.run.precision, resolve_device(device))
        if problem:
            raise SuiteError(str(suite.path), "run.precision", problem)
    run_dir = Path(out) if out else Path("runs") / suite.name
    request = RunRequest(retry_failed, force, report, Path(report_dir) if report_dir else None, echo)
    try:
        plan = plan_suite(suite, out=run_dir, device=device, retry_failed=retry_failed, force=force)
    except Exception:  # an estimate must never stop a run
        plan = None
    if plan is not None and plan.seconds > WARN_SECONDS:  # a GPU suite started on a CPU, say: said before hours go by
        teller(None, echo)(f"warning: {plan.lines()[0]} (over {duration(WARN_SECONDS)}; `msbench plan {suite.path}` "
                           f"for the basis)", logging.WARNING)
    with RunLock(run_dir):  # a second run on this directory stops here, naming the holder
        check_run_dir(run_dir, None if share_run_dir else suite.name)
        kept = keep_other_tables(run_dir, suite.name) if share_run_dir else None
        if kept is not None:
            teller(run_dir, echo)(f"the tables of suite '{kept.name}' in {run_dir} are kept in {kept} "
                                  f"(`msbench report {kept}` renders them)")
            request = replace(request, report_dir=request.report_dir or Path("reports") / suite.name)
        folder = Path(suite.path).resolve().parent if suite.path else None
        job = Job(suite, root.resolve(), run_dir.resolve(), device, folder)
        return _run_locked(job, run_dir, request, executor)


def _run_locked(job: Job, run_dir: Path, request: RunRequest, executor: Executor) -> pd.DataFrame:
    """The run itself, in a checked and locked run directory (``run_dir`` as the caller named it, for messages)."""
    suite = job.suite
    recorded = {**suite.resolved(), "presentation": presentation(suite)}  # what the report reads of the suite
    write_atomic(run_dir / "suite.json", json.dumps(recorded, indent=1, default=str))
    store = RecordStore(run_dir)
    tell = teller(run_dir, request.echo)
    cells = [(cell, cell_key(suite, cell)) for cell in expand(suite)]
    by_id = {cell_id: cell for cell, cell_id in cells}
    done = {cell_id: record for cell_id, cell in by_id.items()  # read once, each checked against its cell; kept current
            if (record := store.get(cell_id, cell.__dict__, suite.attacks[cell.attack].config.budget)) is not None}
    todo = [(cell, cell_id) for cell, cell_id in cells
            if request.force or cell_id not in done or (request.retry_failed and done[cell_id].get("status") != "ok")]
    where = resolve_device(job.device) if executor.in_process else f"the {executor.name} executor"
    tell(start_line(suite.name, len(cells), {} if request.force else done, len(todo), where, run_dir))
    if request.force:
        forget_victims(job, [cell for cell, _ in todo])
    try:
        if todo:
            _compute(job, run_dir, todo, executor, store, done, by_id, tell)
        records = [done[cell_id] for cell_id in by_id if cell_id in done]
        write_tables(run_dir, records)
        # inference cost (timing.csv), skipped when up to date
        if "timing" in suite.raw and suite.extra["timing"].with_run:
            try:
                executor.call(time_suite, suite, job.data_root, job.run_dir, job.device, reuse=True,
                              **({"echo": tell} if executor.in_process else {}))
            except Exception as failure:  # the attack results are already safe; `msbench time` can retry
                tell(f"warning: timing stage failed ({type(failure).__name__}: {failure}); results are in {run_dir}",
                     logging.WARNING)
    finally:
        executor.close()
        forget_workspaces(job)  # this run's victims and data splits leave memory with it
    if request.report:
        _report(suite, run_dir, request.report_dir, tell)
    failed = [(by_id[r["cell_id"]].label(), r.get("error", "")) for r in records if r.get("status") != "ok"]
    for line in failure_summary(failed, len(cells), run_dir):
        tell(line, logging.WARNING)
    frame = results_frame(records)
    frame.attrs["cells"] = {"planned": len(cells), "done": len(records) - len(failed), "failed": len(failed),
                            "pending": len(cells) - len(records)}
    return frame


def _compute(job: Job, run_dir: Path, todo: list[tuple[Cell, str]], executor: Executor, store: RecordStore,
             done: dict[str, dict], by_id: dict[str, Cell], tell: Echo) -> None:
    """Hand ``todo`` to the executor; store each record as it arrives, and rewrite the tables."""
    with progress(total=len(todo), desc="cells", unit="cell", leave=True) as bar:
        stream = executor.records(job, todo, on_start=lambda cell: bar.set_description(cell.label()))
        lines = CellLines(len(todo), tell)
        try:
            with heartbeats(tell):
                for record in stream:
                    store.put(record)
                    done[record["cell_id"]] = record
                    write_tables(run_dir, [done[cell_id] for cell_id in by_id if cell_id in done])
                    lines.finished(by_id[record["cell_id"]].label(), record)
                    bar.update(1)
        except KeyboardInterrupt:
            tell(f"interrupted; finished cells are saved in {run_dir}", logging.WARNING)
            raise
        finally:
            if hasattr(stream, "close"):  # a generator: lets the executor cancel work still queued
                stream.close()


def _report(suite: Suite, run_dir: Path, report_dir: Path | None, tell: Echo) -> None:
    """Render the run's report; a failure only warns: the results are safe on disk, `msbench report` can retry."""
    try:
        target = render_report(run_dir, out=report_dir or Path("reports") / Path(run_dir).resolve().name)
        tell(f"report: {target / 'index.html'}")
    except Exception as failure:
        tell(f"warning: report not rendered ({type(failure).__name__}: {failure}); results are in {run_dir}",
             logging.WARNING)


def forget_victims(job: Job, cells: list[Cell]) -> None:
    """Delete the cached victims of ``cells`` (every link of their chains) from the run directory
    and from this process's memory, so that they are trained again."""
    for cell in cells:
        chain = job.suite.chain(cell.defense)
        for length in range(1, len(chain) + 1):
            key = victim_key(job.suite, cell.dataset, cell.arch, chain[:length], cell.seed)
            (job.run_dir / "victims" / f"{key}.pt").unlink(missing_ok=True)
    forget_workspaces(job)


def summary(frame: pd.DataFrame) -> str:
    """The console table printed at the end of a run."""
    if frame.empty:
        return "(no results)"
    shown = frame[["dataset", "arch", "defense", "attack", "label_mode", "seed", "queries", "benign_acc", "clone_acc",
                   "relative_perf", "fidelity", "status"]].copy()
    return shown.to_string(index=False, float_format=lambda v: f"{v:.2f}")
