"""DCP (Khaled et al., "Efficient defense against model stealing attacks on convolutional neural
networks", ICMLA 2023): reverse sigmoid applied only to unconfident answers.

    alpha = 1 / (1 + exp(nu (max_k y_k - beta)))
    r = beta * (sigmoid(gamma * logit(y)) - 1/2)
    answer = normalise(y - alpha r)

As in the authors' code one setting ``beta`` is both the confidence threshold of the gate and the
size of the perturbation; nu = 1000 and gamma = 0.1 are the code's values. The authors' code does
not clip; msbench clips at 0 before normalising, which changes nothing for beta <= 1 (then
y - alpha r >= 0 already) and keeps every answer a probability vector for larger beta.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from msbench.defenses.base import OutputDefense, VictimContext, renormalise
from msbench.defenses.reverse_sigmoid import check_beta_gamma, reverse_sigmoid_perturbation
from msbench.registry import register_defense


def confidence_gate(y: torch.Tensor, beta: float, nu: float) -> torch.Tensor:
    """alpha (N, 1) = 1 / (1 + exp(nu (max y - beta))): 1 for unconfident answers, 0 for confident ones."""
    return torch.sigmoid(-nu * (y.double().amax(dim=1, keepdim=True) - beta))


def dcp(y: torch.Tensor, beta: float, gamma: float, nu: float) -> torch.Tensor:
    alpha = confidence_gate(y, beta, nu)
    return renormalise(y.double() - alpha * reverse_sigmoid_perturbation(y, beta, gamma)).to(y.dtype)


class DCPVictim(nn.Module):
    def __init__(self, base: nn.Module, beta: float, gamma: float, nu: float):
        super().__init__()
        self.base, self.beta, self.gamma, self.nu = base, beta, gamma, nu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dcp(self.base(x), self.beta, self.gamma, self.nu)


@register_defense("dcp")
class DCP(OutputDefense):
    """DCP (Khaled et al. 2023): reverse sigmoid gated by the answer's confidence."""

    label = "DCP"
    tunable = "beta"
    tunable_grid = (1.0, 0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0)  # strong to weak
    cost_model = "M_f + O(K)"

    @dataclass
    class Config:
        beta: float = 0.9  # confidence threshold and perturbation size; benign matching tunes it
        gamma: float = 0.1  # sigmoid slope (the authors' code)
        nu: float = 1000.0  # gate sharpness (the authors' code)

    @staticmethod
    def check_config(config: "DCP.Config") -> tuple[str, str] | None:
        problem = check_beta_gamma(config.beta, config.gamma)
        if problem:
            return problem
        if not (math.isfinite(config.nu) and config.nu > 0):
            return "nu", f"expected a positive gate sharpness, got {config.nu}"
        return None

    def build(self, base: nn.Module, ctx: VictimContext) -> nn.Module:
        c = self.config
        return DCPVictim(base, c.beta, c.gamma, c.nu)
