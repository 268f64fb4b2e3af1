"""Reverse sigmoid (Lee et al., "Defending against NN model stealing attacks using deceptive
perturbations", arXiv 1806.00054): a passive perturbation that keeps small probabilities' order
but makes the answers' logits useless for fitting.

    r = beta * (sigmoid(gamma * logit(y)) - 1/2),   logit(y) = log(y / (1 - y))
    answer = normalise(clip(y - r, 0, 1))

``y`` is clamped to [CLAMP, 1 - CLAMP] inside the logit so a saturated softmax stays finite; the
arithmetic is in float64, so the clamp acts only at that scale.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from msbench.defenses.base import OutputDefense, VictimContext, renormalise
from msbench.registry import register_defense

CLAMP = 1e-12  # y is kept in [CLAMP, 1 - CLAMP] inside logit(y)


def reverse_sigmoid_perturbation(y: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """r = beta (sigmoid(gamma logit(y)) - 1/2), computed in float64."""
    y64 = y.double().clamp(CLAMP, 1 - CLAMP)
    return beta * (torch.sigmoid(gamma * torch.log(y64 / (1 - y64))) - 0.5)


def reverse_sigmoid(y: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """normalise(clip(y - r, 0, 1)) in y's dtype."""
    r = reverse_sigmoid_perturbation(y, beta, gamma)
    return renormalise((y.double() - r).clamp(0.0, 1.0)).to(y.dtype)


class ReverseSigmoidVictim(nn.Module):
    def __init__(self, base: nn.Module, beta: float, gamma: float):
        super().__init__()
        self.base, self.beta, self.gamma = base, beta, gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reverse_sigmoid(self.base(x), self.beta, self.gamma)


def check_beta_gamma(beta: float, gamma: float) -> tuple[str, str] | None:
    if not (math.isfinite(beta) and beta >= 0):
        return "beta", f"expected a non-negative perturbation size, got {beta}"
    if not (math.isfinite(gamma) and gamma > 0):
        return "gamma", f"expected a positive sigmoid slope, got {gamma}"
    return None


@register_defense("reverse_sigmoid")
class ReverseSigmoid(OutputDefense):
    """Reverse sigmoid (Lee et al. 2018): answers y - beta (sigmoid(gamma logit y) - 1/2), renormalised."""

    label = "Reverse sigmoid"
    tunable = "beta"
    # not L1_GRID: beta scales the reverse sigmoid, not an L1 budget, and needs finer steps near 0
    tunable_grid = (1.0, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01, 0.008, 0.005, 0.002, 0.0)  # strong to weak
    cost_model = "M_f + O(K)"

    @dataclass
    class Config:
        beta: float = 0.008  # perturbation size (ModelGuard's setting); benign matching tunes it
        gamma: float = 0.2  # sigmoid slope (ModelGuard's setting)

    @staticmethod
    def check_config(config: "ReverseSigmoid.Config") -> tuple[str, str] | None:
        return check_beta_gamma(config.beta, config.gamma)

    def build(self, base: nn.Module, ctx: VictimContext) -> nn.Module:
        return ReverseSigmoidVictim(base, self.config.beta, self.config.gamma)
