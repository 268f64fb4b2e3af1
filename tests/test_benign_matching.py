"""Benign-accuracy matching (``VictimCache.match_benign``) on a constructed case, in milliseconds.

A wrapper that mislabels exactly the validation images whose index is below ``strength * 64``
loses ``100 * strength`` points of benign accuracy (exact in floats, 64 images), so which grid
value is picked for a tolerance is known by hand. The end-to-end run covers the same code in 13 s.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from msbench.data import ImageData
from msbench.defenses import OutputDefense
from msbench.runner.victims import VictimCache

CLASSES, N = 4, 64


def decode(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An image's index (pixel 0) and true label (pixel 1)."""
    pixels = (x.flatten(1) * 255).round().long()
    return pixels[:, 0], pixels[:, 1]


class Base(nn.Module):
    """Always right: 100% benign accuracy."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.one_hot(decode(x)[1], CLASSES).float()


class Mislabel(nn.Module):
    """Wrong on the images of index < strength * N; reads ``strength`` at inference."""

    def __init__(self, strength: float = 0.5):
        super().__init__()
        self.strength = strength

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index, label = decode(x)
        wrong = index < self.strength * N
        return F.one_hot(torch.where(wrong, (label + 1) % CLASSES, label), CLASSES).float()


class Ignores(Mislabel):
    """Declares the attribute but never reads it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return Base()(x)


class MislabelDefense(OutputDefense):
    """Grid from strong to weak: drops of 50, 25, 12.5, 3.125 and 0 points."""

    tunable = "strength"
    tunable_grid = (0.5, 0.25, 0.125, 0.03125, 0.0)

    @dataclass
    class Config:
        strength: float = 0.5


def validation() -> ImageData:
    images = torch.zeros(N, 1, 1, 2, dtype=torch.uint8)
    labels = torch.arange(N) % CLASSES
    images[:, 0, 0, 0], images[:, 0, 0, 1] = torch.arange(N), labels
    return ImageData(images, labels, "val")


def match(tolerance: float | None, grid: tuple[float, ...] | None = None, module: nn.Module | None = None) -> dict | None:
    ws = SimpleNamespace(suite=SimpleNamespace(run=SimpleNamespace(match_benign=tolerance)), device=torch.device("cpu"))
    defense = MislabelDefense()
    if grid is not None:
        defense.tunable_grid = grid  # this instance only
    return VictimCache(ws).match_benign(defense, module or Mislabel(), Base(), SimpleNamespace(val=validation()))


@pytest.mark.parametrize("tolerance, picked, val_acc", [
    (60.0, 0.5, 50.0),  # the strongest value already within
    (25.0, 0.25, 75.0),  # a drop of exactly the tolerance is within
    (24.9, 0.125, 87.5),
    (3.0, 0.0, 100.0),  # only the weakest
    (0.0, 0.0, 100.0),
])
def test_the_strongest_grid_value_within_the_tolerance_is_picked(tolerance, picked, val_acc):
    tuned = match(tolerance)
    assert tuned == {"name": "strength", "value": picked, "val_acc": val_acc, "base_val_acc": 100.0}


def test_when_no_grid_value_is_within_the_weakest_is_kept():
    """No value matches: the weakest (last) grid value is deployed, with the accuracy it costs on
    record, rather than the strongest or none."""
    tuned = match(1.0, grid=(0.5, 0.25, 0.125))
    assert tuned == {"name": "strength", "value": 0.125, "val_acc": 87.5, "base_val_acc": 100.0}


def test_no_tolerance_or_no_grid_tunes_nothing():
    assert match(None) is None
    assert match(1.0, grid=()) is None


def test_a_tunable_the_module_never_reads_is_refused():
    with pytest.raises(ValueError, match="same at strength = 0.5 and strength = 0.0"):
        match(1.0, module=Ignores())
