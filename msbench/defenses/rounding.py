"""Rounding (the passive baseline of ART's ``Rounded`` postprocessor): answers rounded to a number
of decimals. ART stops there, so its answers need not sum to 1; msbench renormalises the rounded
vector (an API answers probability vectors). A row rounded to all zeros (``decimals = 0`` and no
class above 0.5) has no information left and becomes uniform.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from msbench.defenses.base import OutputDefense, VictimContext, renormalise
from msbench.registry import register_defense


def rounded(y: torch.Tensor, decimals: int) -> torch.Tensor:
    """normalise(round(y, decimals)), rounding half to even as torch.round does."""
    return renormalise(torch.round(y.double(), decimals=int(decimals))).to(y.dtype)


class RoundingVictim(nn.Module):
    def __init__(self, base: nn.Module, decimals: int):
        super().__init__()
        self.base, self.decimals = base, decimals

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rounded(self.base(x), self.decimals)


@register_defense("rounding")
class Rounding(OutputDefense):
    """Rounding: answers rounded to a number of decimals, then renormalised."""

    label = "Rounding"
    tunable = "decimals"
    # not L1_GRID: an integer count of decimals, not an L1 budget
    tunable_grid = (0, 1, 2, 3, 4, 5)  # strong to weak
    cost_model = "M_f + O(K)"

    @dataclass
    class Config:
        decimals: int = 3  # ART's default

    @staticmethod
    def check_config(config: "Rounding.Config") -> tuple[str, str] | None:
        if isinstance(config.decimals, bool) or not isinstance(config.decimals, int) or config.decimals < 0:
            return "decimals", f"expected a non-negative integer, got {config.decimals!r}"
        return None

    def build(self, base: nn.Module, ctx: VictimContext) -> nn.Module:
        return RoundingVictim(base, self.config.decimals)
