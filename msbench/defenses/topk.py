"""Top-k (ART's ``HighConfidence``-style truncation): only the k largest probabilities are answered.

The others are set to 0 and the kept ones renormalised to sum to 1 (ART does not renormalise).
The top-1 class is always kept, so the argmax is unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from msbench.defenses.base import OutputDefense, VictimContext, renormalise
from msbench.registry import register_defense


def top_k(y: torch.Tensor, k: int) -> torch.Tensor:
    """The k largest entries of each row, renormalised; the rest 0."""
    k = max(1, min(int(k), y.shape[1]))
    keep = torch.zeros_like(y, dtype=torch.bool).scatter_(1, y.topk(k, dim=1).indices, True)
    return renormalise(torch.where(keep, y, torch.zeros_like(y)))


class TopKVictim(nn.Module):
    def __init__(self, base: nn.Module, k: int):
        super().__init__()
        self.base, self.k = base, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return top_k(self.base(x), self.k)


@register_defense("topk")
class TopK(OutputDefense):
    """Top-k: only the k most probable classes, renormalised."""

    label = "Top-k"
    tunable = "k"
    tunable_grid = (1, 2, 3, 5)  # strong to weak
    cost_model = "M_f + O(K log k)"

    @dataclass
    class Config:
        k: int = 1

    @staticmethod
    def check_config(config: "TopK.Config") -> tuple[str, str] | None:
        if isinstance(config.k, bool) or not isinstance(config.k, int) or config.k < 1:
            return "k", f"expected a positive integer, got {config.k!r}"
        return None

    def build(self, base: nn.Module, ctx: VictimContext) -> nn.Module:
        return TopKVictim(base, self.config.k)
