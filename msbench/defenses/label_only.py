"""Label only: the API answers the one-hot vector of its top-1 class and nothing else.

The same answers a hard-label attacker sees from the undefended model; as a defense it makes
every attack's soft mode a hard-label one.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from msbench.defenses.base import OutputDefense, VictimContext
from msbench.registry import register_defense


def one_hot_top1(y: torch.Tensor) -> torch.Tensor:
    return F.one_hot(y.argmax(dim=1), y.shape[1]).to(y.dtype)


class LabelOnlyVictim(nn.Module):
    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return one_hot_top1(self.base(x))


@register_defense("label_only")
class LabelOnly(OutputDefense):
    """Label only: one-hot answers of the top-1 class."""

    label = "Label only"
    cost_model = "M_f"

    @dataclass
    class Config:
        pass

    def build(self, base: nn.Module, ctx: VictimContext) -> nn.Module:
        return LabelOnlyVictim(base)
