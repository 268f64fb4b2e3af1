"""Random noise at an L1 budget, the random-perturbation baseline of Mazeika et al. 2022:

    answer = (1 - epsilon/2) y + (epsilon/2) e_j,   j uniform over the classes other than argmax y

so ||answer - y||_1 = epsilon (1 - y_j) <= epsilon. Any perturbation defense should beat it at the
same epsilon and benign accuracy.

Source: ``method_rand_perturbation`` in mmazeika/model-stealing-defenses
(``batch_training/defenses.py``; the ``Random`` defense of its ``get_queries.py``, copied into the
DCP code, KacemKhaled/defending-extraction ``df/defenses.py``): the same formula, j drawn per query
with numpy's global generator. ModelGuard's ``defenses/victim/randnoise.py`` is a different
method, not this one: noise in logit space (z = log(y / (1 - y)) plus a uniform or Gaussian
vector projected onto an epsilon ball, then sigmoid and renormalise), so its epsilon bounds the
logit noise, not the L1 distance of the answers; its released scripts do not run it.

msbench's departure: j is drawn from ``noise_generator``, a CPU generator seeded from the
defense's own stream ``ctx.seed_for("random_noise.answers")`` (not the cell's seed, from which
every other stream derives); ``restart_randomness()`` puts it back to that seed, which the runner
does before each attack so a cell's answers do not depend on what was asked of the victim before
(benign matching, test set).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from msbench.defenses.base import L1_GRID, OutputDefense, VictimContext
from msbench.registry import register_defense


def non_argmax_classes(y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One class per row, uniform over the K - 1 classes other than the row's argmax."""
    top1 = y.argmax(dim=1).cpu()
    draw = torch.randint(0, y.shape[1] - 1, (len(y),), generator=generator)
    return (draw + (draw >= top1).long()).to(y.device)


def noised(y: torch.Tensor, epsilon: float, j: torch.Tensor) -> torch.Tensor:
    """(1 - epsilon/2) y + (epsilon/2) e_j."""
    return (1 - epsilon / 2) * y + (epsilon / 2) * F.one_hot(j, y.shape[1]).to(y.dtype)


class RandomNoiseVictim(nn.Module):
    def __init__(self, base: nn.Module, epsilon: float, seed: int):
        super().__init__()
        self.base, self.epsilon, self.seed = base, epsilon, seed
        self.noise_generator = torch.Generator().manual_seed(seed)

    def restart_randomness(self) -> None:
        self.noise_generator.manual_seed(self.seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        return noised(y, self.epsilon, non_argmax_classes(y, self.noise_generator))


@register_defense("random_noise")
class RandomNoise(OutputDefense):
    """Random noise: epsilon/2 of the mass moved to a random non-top-1 class (L1 budget epsilon)."""

    label = "Random noise"
    tunable = "epsilon"
    tunable_grid = L1_GRID  # strong to weak
    cost_model = "M_f + O(K)"

    @dataclass
    class Config:
        epsilon: float = 0.5  # L1 budget; benign matching tunes it

    @staticmethod
    def check_config(config: "RandomNoise.Config") -> tuple[str, str] | None:
        if not (math.isfinite(config.epsilon) and 0 <= config.epsilon <= 2):
            return "epsilon", f"expected an L1 budget in [0, 2], got {config.epsilon}"
        return None

    def build(self, base: nn.Module, ctx: VictimContext) -> nn.Module:
        return RandomNoiseVictim(base, self.config.epsilon, ctx.seed_for("random_noise.answers"))
