"""Distortion: how far a defense moves the answers, the mean L1 distance between the defended
victim's probability vectors and its undefended base's on the same inputs.

The base is the chain's training-defense victim (``mad``: Vanilla's; ``ini+mad``: InI's), so a
stack of output defenses is measured as a whole. A chain without an output defense has no
undefended answers of its own and gets no distortion (blank in the tables). Distortion is taken on
the probability vectors the defense answers, also in hard-label cells (where the attacker sees
only their top-1), so soft and hard cells of one victim measure the same map.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def l1_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.double() - b.double()).abs().sum(dim=1)


class DistortionMeter:
    """Accumulates the L1 distance of each answered query to the base victim's answer."""

    def __init__(self, base: Callable[[torch.Tensor], torch.Tensor]):
        self.base = base
        self.total = 0.0
        self.count = 0

    @torch.no_grad()
    def observe(self, queries: torch.Tensor, answers: torch.Tensor) -> None:
        self.total += l1_rows(answers, self.base(queries)).sum().item()
        self.count += len(queries)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")


@torch.no_grad()
def mean_distortion(defended: nn.Module, base: nn.Module, images: torch.Tensor, device: torch.device | str = "cpu",
                    batch_size: int = 512) -> float:
    """Mean L1 distance between the two models' answers over uint8 images."""
    total = 0.0
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device).float().div_(255.0)
        total += l1_rows(defended(x), base(x)).sum().item()
    return total / len(images) if len(images) else float("nan")


def restart_randomness(victim: nn.Module) -> None:
    """Put every randomised defense of a victim back to its seed (``restart_randomness()`` of a module)."""
    for module in victim.modules():
        restart = getattr(module, "restart_randomness", None)
        if callable(restart):
            restart()
