"""A defense whose process dies when it answers: only a distributed executor can survive it."""
import os

from torch import nn

from msbench.defenses import OutputDefense
from msbench.registry import register_defense


class Crash(nn.Module):
    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base

    def forward(self, x):
        os._exit(3)  # as an out-of-memory kill would


@register_defense("crash")
class CrashDefense(OutputDefense):
    """Kills the worker process that queries it."""

    def build(self, base: nn.Module, ctx) -> nn.Module:
        return Crash(base)
