"""What a run says while it runs: Python logging under the ``msbench`` logger.

A run in a batch job, in CI or with its output sent to a file has no terminal, so its progress
bars are off, and printed text sits in a buffer until the process ends. Every message of a run is
therefore a log record, written out line by line as it happens:

- to ``<run dir>/run.log``, appended, each line stamped with the UTC time (every run, always);
- to the console (stdout) under ``msbench`` commands (``console()``), and under the Python API
  when the program has not configured logging itself; on a terminal that shows progress bars the
  one-line-per-cell records are left to the bar, elsewhere they are the progress;
- to the ``echo`` callable a caller of ``run_suite`` passes, if any.
"""
from __future__ import annotations

import logging
import sys
import time
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

from msbench.progress import bars_shown

LOGGER = logging.getLogger("msbench")
if LOGGER.level == logging.NOTSET:  # INFO is the run's progress: shown unless a program asks otherwise
    LOGGER.setLevel(logging.INFO)

RUN_LOG = "run.log"
_RUN_DIR = "msbench_run_dir"  # record attribute: the run directory whose run.log gets the line
_PER_CELL = "msbench_per_cell"  # record attribute: a finished cell's line (the bar shows it on a terminal)
_FALLBACK = "msbench_fallback"  # record attribute: to the console because no one else shows it

Tell = Callable[..., None]


class UTCFormatter(logging.Formatter):
    converter = time.gmtime
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"


class RunLogHandler(logging.Handler):
    """Appends each record that names a run directory to that run's ``run.log``.

    The file is opened per line (a run writes a few lines per cell), so no handler has to be
    attached and detached around a run, and an interrupted run leaves no file open."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(UTCFormatter("%(asctime)s %(levelname)-7s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        run_dir = getattr(record, _RUN_DIR, None)
        if run_dir is None:
            return
        try:
            path = Path(run_dir) / RUN_LOG
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as log:
                log.write(self.format(record) + "\n")
        except Exception:  # a log line must never cost the run
            self.handleError(record)


class ConsoleHandler(logging.Handler):
    """Messages to a stream (default: the current ``sys.stdout``), flushed line by line and written
    above any progress bar. Per-cell lines are skipped where the stream is a terminal showing bars."""

    def __init__(self, stream: TextIO | None = None, only_fallback: bool = False) -> None:
        super().__init__()
        self._stream = stream
        self.only_fallback = only_fallback
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stdout

    def emit(self, record: logging.LogRecord) -> None:
        if self.only_fallback and not getattr(record, _FALLBACK, False):
            return
        stream = self.stream
        if getattr(record, _PER_CELL, False) and _isatty(stream) and bars_shown():
            return
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=stream)  # clears and redraws an active bar
            stream.flush()
        except Exception:
            self.handleError(record)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


_RUN_LOG_HANDLER = RunLogHandler()
_FALLBACK_HANDLER = ConsoleHandler(only_fallback=True)
_OURS = (_RUN_LOG_HANDLER, _FALLBACK_HANDLER)
for _handler in _OURS:
    LOGGER.addHandler(_handler)


def _configured() -> bool:
    """Whether a handler other than msbench's own would show a record of ``LOGGER``."""
    logger: logging.Logger | None = LOGGER
    while logger is not None:
        if any(handler not in _OURS for handler in logger.handlers):
            return True
        if not logger.propagate:
            return False
        logger = logger.parent
    return False


def teller(run_dir: Path | None, echo: Callable[[str], Any] | None = None) -> Tell:
    """``tell(message, level=INFO, per_cell=False)``: one message of a run, to the ``msbench``
    logger (and through it to ``run_dir``'s ``run.log``) and to ``echo`` when given; with no
    ``echo`` and no logging configured by the program, to stdout."""

    def tell(message: str, level: int = logging.INFO, per_cell: bool = False) -> None:
        fallback = echo is None and not _configured()
        LOGGER.log(level, message, extra={_RUN_DIR: run_dir, _PER_CELL: per_cell, _FALLBACK: fallback})
        if echo is not None:
            echo(message)

    return tell


HEARTBEAT_SECONDS = 120.0
"""Off a terminal, a training loop says where it is at least this often (``MSBENCH_HEARTBEAT`` seconds
overrides), so a batch log tells a live run from a dead one while a victim trains for hours."""
_HEARTBEAT: list[Tell] = []  # the running run's tell, while run_suite computes its cells in this process


@contextmanager
def heartbeats(tell: Tell) -> Iterator[None]:
    """Route ``heartbeat`` lines to ``tell`` (a run's log, console and echo) while the block runs."""
    _HEARTBEAT.append(tell)
    try:
        yield
    finally:
        _HEARTBEAT.pop()


def heartbeat_interval() -> float:
    try:
        return float(os.environ.get("MSBENCH_HEARTBEAT", HEARTBEAT_SECONDS))
    except ValueError:
        return HEARTBEAT_SECONDS


def heartbeat(message: str) -> None:
    """One progress line of a long stage, to the run's log where a run is going and no progress bar
    shows it (a terminal's bar already does); nothing outside a run."""
    if _HEARTBEAT and not bars_shown():
        _HEARTBEAT[-1](message)


class Pulse:
    """The loop's heartbeat off a terminal: ``desc: epoch k/n, step i/m, elapsed, ETA`` once every
    ``logs.heartbeat_interval()`` seconds (a clock read per step, nothing else)."""

    def __init__(self, desc: str, epochs: int, steps: int, unit: str):
        self.desc, self.epochs, self.steps, self.unit = desc, epochs, steps, unit
        self.start = self.last = time.monotonic()
        self.every = heartbeat_interval()

    def beat(self, epoch: int, step: int) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        done = epoch * self.steps + step
        left = (now - self.start) / done * (self.epochs * self.steps - done)
        heartbeat(f"{self.desc}: {self.unit} {epoch + 1}/{self.epochs}, step {step}/{self.steps}, "
                  f"{duration(now - self.start)} elapsed, ETA {duration(left)}")


@contextmanager
def console(stream: TextIO | None = None) -> Iterator[ConsoleHandler]:
    """Show the ``msbench`` logger's records on ``stream`` (default stdout) while the block runs:
    what the ``msbench`` command does around each command."""
    handler = ConsoleHandler(stream)
    LOGGER.addHandler(handler)
    try:
        yield handler
    finally:
        LOGGER.removeHandler(handler)


def duration(seconds: float) -> str:
    """``42 s``, ``3.5 min``, ``2.1 h``: a span at a glance."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class CellLines:
    """One line per finished cell: its place, label, clone accuracy (or error), its seconds and the
    run's ETA. A cell's seconds are the time since the previous cell finished (under the local
    executor, exactly that cell's time, victim training included); the ETA is the mean of those
    times so far times the cells left."""

    def __init__(self, total: int, tell: Tell) -> None:
        self.total = total
        self.tell = tell
        self.count = 0
        self.started = self.last = time.perf_counter()

    def finished(self, label: str, record: dict[str, Any]) -> None:
        now = time.perf_counter()
        seconds, self.last = now - self.last, now
        self.count += 1
        left = self.total - self.count
        eta = f"ETA {duration((now - self.started) / self.count * left)}" if left else "last cell"
        where = f"cell {self.count}/{self.total}"
        if record.get("status") == "ok":
            self.tell(f"{where} {label}: clone {record['clone_acc']:.2f}% (benign {record['benign_acc']:.2f}%), "
                      f"{duration(seconds)}; {eta}", per_cell=True)
        else:
            self.tell(f"{where} {label} failed: {short_error(record.get('error', ''))} ({duration(seconds)}; {eta})",
                      level=logging.WARNING)


def short_error(error: str, width: int = 200) -> str:
    """An error's first line, cut to ``width`` characters."""
    text = (error or "").strip()
    line = text.splitlines()[0] if text else "unknown error"
    return line if len(line) <= width else line[:width - 3] + "..."


def start_line(name: str, total: int, recorded: dict[str, dict[str, Any]], todo: int, where: str, run_dir: Path) -> str:
    """The run's first line: cells done (status ok), failed earlier, and what this run computes.

    A failed cell is not done: it is counted apart, and named with the flag that retries it."""
    done = sum(record.get("status") == "ok" for record in recorded.values())
    failed = len(recorded) - done
    kept = failed - max(0, todo - (total - len(recorded)))  # failed cells this run does not retry
    failed_note = f", {failed} failed" if failed else ""
    not_retried = f"; {kept} failed cells are not retried (--retry-failed runs them again)" if kept else ""
    if not todo:
        head = f"all {total} cells are done" if done == total else f"{done} of {total} cells done{failed_note}"
        return f"{name}: {head}; nothing to recompute ({run_dir}){not_retried}"
    return f"{name}: {done} of {total} cells done{failed_note}; running {todo} on {where}{not_retried}"


def failure_summary(failed: list[tuple[str, str]], total: int, run_dir: Path, width: int = 3) -> list[str]:
    """Lines summing up the failed cells, ``(label, error)`` pairs: how many, one line per distinct
    error with the cells it struck, and how to run them again. Empty when none failed."""
    if not failed:
        return []
    groups: dict[str, list[str]] = {}
    for label, error in failed:
        groups.setdefault(short_error(error), []).append(label)
    lines = [f"{len(failed)} of {total} cells failed:"]
    for error, labels in sorted(groups.items(), key=lambda group: -len(group[1])):
        shown = ", ".join(labels[:width]) + (f" and {len(labels) - width} more" if len(labels) > width else "")
        lines.append(f"  {len(labels)} x {error} ({shown})")
    lines.append(f"fix the cause, then run again with --retry-failed (run_suite(..., retry_failed=True)); "
                 f"each failed record in {Path(run_dir) / 'records'} holds its traceback")
    return lines
