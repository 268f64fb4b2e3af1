"""Where and with what a result was computed: the fields every record carries beside its numbers.

A number read months later (or merged from another machine's run) is only as good as what is
known about how it was made: the msbench version and the git commit of its source, the date, the
host, the device model and the thread count. Gathered here, once per field that cannot change
during a process, so ``run_cell`` adds them with one call.
"""
from __future__ import annotations

import functools
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from msbench.version import __version__

SOURCE = Path(__file__).resolve().parent.parent  # the checkout (or site-packages) holding the package
FIELDS = ["msbench", "git_commit", "date", "host", "device_model", "threads", "torch"]


@functools.cache
def git_commit(source: Path = SOURCE) -> str:
    """The commit of the msbench source checkout, ``+dirty`` when it has uncommitted changes; ``""``
    when msbench is not imported from a git checkout (an installed wheel) or git is not available.

    Only a folder that is itself the project's checkout counts (it holds ``.git`` and
    ``pyproject.toml``): a package installed into a virtual environment that happens to sit inside
    some other repository must not report that repository's commit.
    """
    if not ((source / ".git").exists() and (source / "pyproject.toml").exists()):
        return ""
    try:
        head = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return ""
        status = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    dirty = status.returncode == 0 and status.stdout.strip() != ""
    return head.stdout.strip() + ("+dirty" if dirty else "")


@functools.cache
def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo``'s ``model name`` on Linux), else what
    ``platform`` knows (``arm``, ``x86_64``...)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_model(device: torch.device | str) -> str:
    """The GPU's name on CUDA devices, else the CPU model."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def training_device(device: torch.device | str) -> str:
    """Where a model trains, as the training-cost table compares victims: the device, its model, and
    on a CPU the thread count (``cpu: AMD EPYC 7B13, 2 threads``; ``cuda:0: NVIDIA H200``)."""
    device = torch.device(device)
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    return f"{device}: {device_model(device)}{threads}"


def provenance(device: torch.device | str) -> dict[str, Any]:
    """The provenance fields of one result computed now, in this process, on ``device``."""
    return {"msbench": __version__, "git_commit": git_commit(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
            "device_model": device_model(device), "threads": torch.get_num_threads(), "torch": torch.__version__}


def version_line() -> str:
    """What ``msbench --version`` prints: the version, and the commit when run from a checkout."""
    commit = git_commit()
    return f"msbench {__version__}" + (f" (git {commit[:12]}{'+dirty' if commit.endswith('+dirty') else ''})"
                                       if commit else "")
