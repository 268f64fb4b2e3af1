"""An out-of-package attack: query uniform noise, train the clone on the answers.

A suite loads it with ``plugins = ["random_noise_attack"]`` (this folder on ``sys.path``).
"""
from dataclasses import dataclass

import torch
from torch import nn

from msbench.attacks import Attack, AttackContext, oracle_targets, training_targets
from msbench.oracle import Oracle
from msbench.registry import register_attack
from msbench.training import fit


@register_attack("uniform-noise")
class UniformNoise(Attack):
    """Queries images of uniform noise: a data-free floor for clone accuracy."""

    @dataclass
    class Config:
        budget: int = 1000

    def run(self, oracle: Oracle, ctx: AttackContext) -> nn.Module:
        count = min(self.config.budget, oracle.remaining)
        shape = ctx.seed_data().shape  # the victim's input shape; its images are not used
        queries = torch.rand((count, *shape), generator=torch.Generator().manual_seed(ctx.seed_for("noise.queries")))
        targets = training_targets(oracle_targets(oracle, queries, ctx.device), oracle.label_mode)
        clone = fit(ctx.new_clone(), queries, targets, ctx.recipe, device=ctx.device, seed=ctx.seed_for("noise.train"),
                    desc="noise clone")
        ctx.report(count, clone)
        ctx.notes["queries_from"] = "uniform noise"
        return clone
