"""Everything msbench writes goes through here: atomic file writes and the run-directory lock.

``write_atomic`` writes a unique temporary file in the target's folder, fsyncs it and renames it
over the target, so a reader sees the old file or the new one, never a half-written one; on any
failure (disk full, read-only filesystem, Ctrl-C) the temporary file is removed. Files get the
user's umask, like any file a program creates. Failures become a ``DiskError`` naming the path,
which the CLI prints as one line.

``RunLock`` is an exclusive ``flock`` on ``<run dir>/.lock`` (holding pid, host and start time) so
that two runs never write one run directory at once; the kernel releases it when the holder exits,
crashed or not.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import secrets
import socket
import time
from pathlib import Path

from msbench.config import InputError

log = logging.getLogger("msbench")


class DiskError(InputError):
    """A file or folder msbench must write cannot be written: ``path: what went wrong``."""

    def __init__(self, path: str | Path, message: str):
        super().__init__(str(path), "", message)


def _why(failure: OSError) -> str:
    reasons = {errno.ENOSPC: "no space left on the device", errno.EROFS: "read-only filesystem",
               errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
               errno.ENOTDIR: "a file stands where a folder is needed", errno.EISDIR: "is a folder, expected a file",
               errno.EEXIST: "a file stands where a folder is needed", errno.EDQUOT: "disk quota exceeded"}
    return reasons.get(failure.errno, failure.strerror or type(failure).__name__)


def make_dirs(path: Path) -> None:
    """``mkdir -p`` whose failures are a DiskError naming the folder."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as failure:
        raise DiskError(path, f"cannot create this folder ({_why(failure)})") from None
    if not path.is_dir():
        raise DiskError(path, "a file stands where a folder is needed")


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` atomically: unique temp file in the same folder, fsync, rename.

    No temporary file is left behind on any failure; an OSError becomes a DiskError naming ``path``.
    """
    path = Path(path)
    make_dirs(path.parent)
    payload = data.encode() if isinstance(data, str) else data
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 & ~umask, like open()
    except OSError as failure:
        raise DiskError(path, f"cannot write ({_why(failure)})") from None
    try:
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as failure:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(failure, OSError):
            raise DiskError(path, f"cannot write ({_why(failure)})") from None
        raise


class RunLocked(InputError):
    """Another run holds the run directory."""

    def __init__(self, run_dir: Path, holder: str):
        super().__init__(str(run_dir), "",
                         f"in use by another run ({holder}); wait for it to finish or use another --out")


class RunLock:
    """An exclusive lock on a run directory for the life of a run; a context manager.

    ``flock`` on ``<run dir>/.lock``: released by the kernel when the process ends, however it ends,
    so a crashed run never leaves a stale lock. The file says who holds it (pid, host, start).
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / ".lock"
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        make_dirs(self.run_dir)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as failure:
            raise DiskError(self.path, f"cannot create the run lock ({_why(failure)})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "unknown holder"
            os.close(fd)
            raise RunLocked(self.run_dir, holder) from None
        stamp = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, stamp.encode(), 0)
        except OSError as failure:
            os.close(fd)
            raise DiskError(self.path, f"cannot write the run lock ({_why(failure)})") from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                pass
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
