"""Cells isolated from each other in one process: torch's process-global state, reset and checked.

A plugin runs in the runner's process, and torch keeps state per process: the default dtype and
device, grad mode, the thread count, the deterministic-algorithm flags, cuDNN's flags, float32
matmul precision and TF32, anomaly detection, global module hooks and the global random generator. A
plugin that changed one (``torch.set_default_dtype(float64)``, a forgotten
``torch.set_grad_enabled(False)``) would change the numbers of every later cell in the process, or
make them fail and be blamed. So each cell starts from the state the process had when its workspace
was made (``snapshot``), and the state after the cell is compared with it: a change fails the cell
that made it (``StateLeak``, naming what changed) and is undone before the next.

What a snapshot cannot hold is said in ``docs/plugins.md``: a plugin can still reach anything the
process holds (module globals, monkeypatched functions); the victim's own code paths are checked by
``fingerprint``.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Iterator

import torch
from torch.nn.modules import module as torch_module


class StateLeak(RuntimeError):
    """A cell left torch's process-global state changed; its result is void and the state is restored."""


@dataclass(frozen=True)
class TorchState:
    """The process-global torch settings that change what a computation returns."""

    default_dtype: torch.dtype
    grad_enabled: bool
    threads: int
    deterministic: bool
    deterministic_warn_only: bool
    cudnn_benchmark: bool
    cudnn_deterministic: bool
    cudnn_enabled: bool
    anomaly_detection: bool
    default_device: str
    matmul_precision: str
    tf32: tuple[bool, bool]  # CUDA matmul, cuDNN
    global_hooks: tuple[tuple[str, tuple], ...]  # torch's global module hooks, which run in every module
    rng: bytes  # the CPU generator's state: every random draw is made under ``seeds.seeded``, which restores it

    def restore(self) -> None:
        """Put torch back in this state."""
        torch.set_default_dtype(self.default_dtype)
        torch.set_grad_enabled(self.grad_enabled)
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        torch.use_deterministic_algorithms(self.deterministic, warn_only=self.deterministic_warn_only)
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        torch.backends.cudnn.deterministic = self.cudnn_deterministic
        torch.backends.cudnn.enabled = self.cudnn_enabled
        torch.autograd.set_detect_anomaly(self.anomaly_detection)
        torch.set_default_device(None if self.default_device == "cpu" else self.default_device)
        torch.set_float32_matmul_precision(self.matmul_precision)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.tf32
        for name, items in self.global_hooks:
            table = getattr(torch_module, name)
            table.clear()
            table.update(items)
        torch.random.set_rng_state(torch.frombuffer(bytearray(self.rng), dtype=torch.uint8))

    def changes(self, other: "TorchState") -> list[str]:
        """What differs in ``other``, one phrase per setting (``default_dtype torch.float32 -> torch.float64``)."""
        told = {"rng": "the global random generator was drawn from outside msbench's seeded streams (a plugin drawing "
                       "with torch's global generator: use a torch.Generator seeded from ctx.seed_for(...))",
                "global_hooks": "a global module hook was added or removed"}
        return [told.get(f.name) or f"{f.name} {getattr(self, f.name)} -> {getattr(other, f.name)}"
                for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)]


GLOBAL_HOOKS = tuple(sorted(name for name in vars(torch_module)
                            if name.startswith("_global_") and name.endswith("hooks")))


def snapshot() -> TorchState:
    """The process's torch state now."""
    hooks = tuple((name, tuple(getattr(torch_module, name).items())) for name in GLOBAL_HOOKS)
    return TorchState(torch.get_default_dtype(), torch.is_grad_enabled(), torch.get_num_threads(),
                      torch.are_deterministic_algorithms_enabled(),
                      torch.is_deterministic_algorithms_warn_only_enabled(),
                      torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.backends.cudnn.enabled,
                      torch.is_anomaly_enabled(), str(torch.get_default_device()), torch.get_float32_matmul_precision(),
                      (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32), hooks,
                      bytes(torch.random.get_rng_state().numpy()))


@contextmanager
def isolated(baseline: TorchState, what: str) -> Iterator[None]:
    """Run ``what`` (a cell's label) from ``baseline``; raise ``StateLeak`` if it leaves the state changed.
    The baseline is restored either way, so the next cell starts clean."""
    baseline.restore()
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        changed = baseline.changes(snapshot())
        baseline.restore()
        if changed and not failed:
            raise StateLeak(f"{what} changed torch's process-global state ({'; '.join(changed)}); "
                            "its result is void and the state is restored for later cells")
