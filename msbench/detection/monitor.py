"""The detection contract: a deployed victim that answers like its base and makes one
``Monitor`` per account.

Why a wrapper module and not a new kind of victim: a detector changes no answer, so everything
the benchmark already does with an output defense (caching the trained parts in the victim's
checkpoint, fingerprinting them after every cell, the contract tests on its answers) applies
unchanged; what is new is only the per-account state, which ``Monitored.new_monitor`` makes.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn



class Monitor:
    """One account's detector state. ``screen`` sees a batch of the account's queries in order
    (float images in [0, 1] and the victim's top-1 class of each) and returns the index of the
    first query at which the account is flagged, or None; queries from that index on are refused."""

    def screen(self, x: torch.Tensor, labels: torch.Tensor) -> int | None:
        raise NotImplementedError


class Monitored(nn.Module):
    """A detection defense's deployed victim: answers exactly as ``base`` does. Subclasses hold the
    detector's trained or calibrated parts as submodules and buffers (so the victim cache stores
    and fingerprints them) and make a fresh ``Monitor`` for every account."""

    def __init__(self, base: nn.Module, config: Any):
        super().__init__()
        self.base = base
        self.benign_users, self.benign_queries = int(config.benign_users), int(config.benign_queries)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x)

    def new_monitor(self) -> Monitor:
        raise NotImplementedError


def find_monitored(victim: nn.Module) -> Monitored | None:
    """The detection wrapper inside a deployed victim (the chain's detection link), or None."""
    return next((m for m in victim.modules() if isinstance(m, Monitored)), None)
