"""How the arithmetic runs: numeric precision and memory layout, settings of a suite's ``[run]``.

``precision = "bf16"`` runs every training step under ``torch.autocast`` in bfloat16 (on a GPU the
matrix units run several times faster; CPUs with bf16 support gain a little); ``"fp32"``, the
default, is no autocast at all, so results stay bit-identical to a run without this setting.
``channels_last = true`` stores convolutional models' weights in NHWC order (faster convolutions on
GPUs and on recent CPUs); values are the same up to float rounding. ``resident`` puts a training
set where the steps read it (on the GPU once, when it fits). Both change what a victim or
clone computes, so they enter the cache keys, but only where they differ from the default: an fp32,
channels-first run keeps every existing key. ``training.train_loop`` reads the settings of the cell
being computed (``using``), so every trainer gets them without passing them along.
"""
from __future__ import annotations

import contextvars
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, ContextManager, Iterator, Literal

import torch
from torch import nn

Precision = Literal["fp32", "bf16"]


@dataclass(frozen=True)
class Compute:
    precision: Precision = "fp32"
    channels_last: bool = False
    device_type: str = "cpu"

    def non_default(self) -> dict[str, Any]:
        """The settings that differ from the default: what enters cache keys (nothing for a default run)."""
        out: dict[str, Any] = {}
        if self.precision != "fp32":
            out["precision"] = self.precision
        if self.channels_last:
            out["channels_last"] = True
        return out

    def autocast(self) -> ContextManager:
        if self.precision == "fp32":
            return nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=torch.bfloat16)

    def layout(self, model: nn.Module) -> nn.Module:
        """``model`` in the configured memory format (convolution weights NHWC with channels_last)."""
        return model.to(memory_format=torch.channels_last) if self.channels_last else model


def full_precision(tensor: torch.Tensor) -> ContextManager:
    """No autocast on ``tensor``'s device while the block runs: a backward pass and an optimiser step,
    the victim's answers (the defender's deployed model, not the attacker's training), and forward
    differences that vanish in bf16."""
    return torch.autocast(tensor.device.type, enabled=False)


_CURRENT: contextvars.ContextVar[Compute] = contextvars.ContextVar("msbench_compute", default=Compute())


def current() -> Compute:
    return _CURRENT.get()


@contextmanager
def using(compute: Compute) -> Iterator[None]:
    """Compute with ``compute`` while the block runs (a cell: its victims and its attack)."""
    token = _CURRENT.set(compute)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def precision_problem(precision: str, device: torch.device) -> str | None:
    """Why ``precision`` cannot run on ``device`` (a GPU without bfloat16), or None."""
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return f"bf16 is not supported by {torch.cuda.get_device_name(device)}; use precision = \"fp32\""
    return None


RESIDENT_SHARE = 0.25
"""A training set moves to the GPU once when it takes at most this share of the GPU's free memory."""


def resident(data: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``data`` where the steps will read it: on a GPU, moved there once when it fits (every split
    msbench ships does: MNIST's 60,000 images are 47 MB), so a step indexes device memory instead of
    copying a batch from the host; else left on the host (each batch copied). On the CPU: ``data`` itself."""
    device = torch.device(device)
    if device.type != "cuda" or data.device.type == "cuda":
        return data
    free, _ = torch.cuda.mem_get_info(device)
    if data.element_size() * data.numel() <= RESIDENT_SHARE * free:
        return data.to(device)
    return data
