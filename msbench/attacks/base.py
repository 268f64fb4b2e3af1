"""The attack plugin API: one small base class and a uniform call, like torchattacks.

An attack receives an Oracle (the only access to the victim), its query data, a clone factory
and a training recipe in an AttackContext, and returns the trained clone (a model returning
logits). It may report intermediate clones for query-budget curves through ``ctx.report``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from msbench.data import ImageData
from msbench.oracle import Oracle
from msbench.training import Recipe


@dataclass
class AttackContext:
    """What an attack may use. ``query_data`` is the surrogate set (KnockoffNets), ``seed_data``
    a sample of the victim's training set (JBDA's seeds); neither carries the victim's labels
    for the attacker to use: labels come from the oracle."""

    query_data: Callable[[], ImageData]
    seed_data: Callable[[], ImageData]
    make_clone: Callable[[], nn.Module]
    recipe: Recipe
    device: torch.device
    seed: int
    num_classes: int
    report: Callable[[int, nn.Module], None] = lambda queries, clone: None
    notes: dict[str, Any] = field(default_factory=dict)  # free-form facts for the record ("stopped early")
    # The defense chain the attacker faces ("ini+mad") and each link's public settings, as deployed
    # (benign matching's chosen value included): what a defense-aware attacker (``recovery``) is
    # told. Never the victim's weights, seeds or training data.
    defense: str = ""
    input_shape: tuple[int, int, int] | None = None  # (C, H, W) of the victim's queries (DFME's generator)
    defense_config: dict[str, dict[str, Any]] = field(default_factory=dict)


class Attack:
    """Base of every attack. ``Config`` is a dataclass of suite-settable settings; every attack
    has a query ``budget``."""

    registered_name: ClassVar[str] = ""
    label: ClassVar[str] = ""  # the name reports print
    roles: ClassVar[tuple[str, ...]] = ()  # role datasets it queries with: "surrogate"

    @dataclass
    class Config:
        budget: int = 50000

    def __init__(self, config: Any | None = None):
        self.config = config if config is not None else self.Config()

    def run(self, oracle: Oracle, ctx: AttackContext) -> nn.Module:
        raise NotImplementedError


def oracle_targets(oracle: Oracle, images: torch.Tensor, device: torch.device, batch_size: int = 512) -> torch.Tensor:
    """Query the oracle over uint8 or float images in batches; returns its answers on the CPU.

    Soft mode gives probability vectors; hard mode one-hots, which callers turn into labels.
    """
    answers = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device)
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x
        answers.append(oracle(x).cpu())
    return torch.cat(answers)


def training_targets(answers: torch.Tensor, label_mode: str) -> torch.Tensor:
    """Soft labels train on the probabilities, hard labels on the top-1 class."""
    return answers if label_mode == "soft" else answers.argmax(dim=1)
