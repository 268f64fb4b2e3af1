"""Top-k: only the k largest probabilities are answered, the others set to 0 and the kept ones
renormalised to sum to 1. The top-1 class is always kept, so the argmax is unchanged.

Sources, and how msbench differs from each:

- ``Blackbox.truncate_output`` of MAD's code (tribhuvanesh/prediction-poisoning,
  ``defenses/victim/blackbox.py``) and of ModelGuard's copy of it (Yoruko-Tang/ModelGuard, same
  path): keeps the k largest values and zeroes the rest, without renormalising (an answer then
  sums to less than 1); with ``rounding = 0`` it answers 1 at each kept class, which is how
  ModelGuard's scripts run their ``top1`` defense (``topk:1;rounding:0``, a one-hot: msbench's
  ``label_only``).
  msbench renormalises, because its oracle answers probability vectors.
- ART has no top-k postprocessor. Its ``HighConfidence`` (``art/defences/postprocessor/
  high_confidence.py``), which this module's docstring used to name, zeroes every probability
  below a threshold ``cutoff`` (0.25 by default), whatever their number, and does not renormalise
  either: a different rule (a threshold, not a count), not implemented here.
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
    # not L1_GRID: an integer count of classes, not an L1 budget
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
