"""Measuring a deployed victim's inference time: the inputs it is called on and the timed loop.

Each victim is called on a batch of inputs ``repeats`` times after ``warmup`` calls, under
``torch.no_grad()`` and with ``torch.cuda.synchronize()`` around the timed loop on a GPU.
"""
from __future__ import annotations

import platform
import time
from typing import TYPE_CHECKING, Any, Callable

import torch

if TYPE_CHECKING:
    from msbench.runner.workspace import Workspace

RANDOM_POOL = 1024  # distinct random images cycled through by the timed calls


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so the clock reads the work done, not the work launched."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(predict: Callable[[torch.Tensor], Any], batch: Callable[[int], torch.Tensor], repeats: int, warmup: int,
               device: torch.device) -> float:
    """Seconds for ``repeats`` calls ``predict(batch(i))`` after ``warmup`` untimed calls.

    Inputs are made before the clock starts (``batch`` slices a pool already on the device), so
    only the deployed API is timed; CUDA work is awaited before reading the clock at both ends.
    """
    with torch.no_grad():
        for i in range(warmup):
            predict(batch(i))
        synchronize(device)
        started = time.perf_counter()
        for i in range(repeats):
            predict(batch(i))
        synchronize(device)
        return time.perf_counter() - started


def cycling(pool: torch.Tensor, batch_size: int) -> Callable[[int], torch.Tensor]:
    """Call ``i`` gets the ``i``-th consecutive ``batch_size`` slice of the pool, wrapping round.

    Slices are views, so no copy lands inside the timed loop; a pool smaller than one batch is
    tiled first. Distinct inputs matter for defenses whose cost depends on the input (AM's gate).
    """
    if len(pool) < batch_size:
        pool = pool.repeat((batch_size + len(pool) - 1) // len(pool), 1, 1, 1)
    count = len(pool) // batch_size
    return lambda i: pool[(i % count) * batch_size:(i % count + 1) * batch_size]


def input_pool(ws: "Workspace", dataset: str, kind: str, seed: int) -> torch.Tensor:
    """The images the timed calls cycle through, as floats in [0, 1] on the workspace's device."""
    if kind == "random":
        shape = ws.suite.spec(dataset).shape
        generator = torch.Generator().manual_seed(seed)
        return torch.rand((RANDOM_POOL, *shape), generator=generator).to(ws.device)
    data = (ws.splits(dataset).test if kind == "id"
            else ws.role_data(dataset, "ood").subset(ws.suite.subset(dataset, "test"), seed))
    return data.floats(device=ws.device)


def device_name(device: torch.device) -> str:
    """The device as a timing row records it: the GPU's model, else the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


__all__ = ["RANDOM_POOL", "synchronize", "time_calls", "cycling", "input_pool", "device_name"]
