"""KnockoffNets (Orekondy et al., CVPR 2019), random strategy."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from msbench.attacks.base import Attack, AttackContext, oracle_targets, training_targets
from msbench.oracle import Oracle
from msbench.registry import register_attack
from msbench.training import fit


@register_attack("knockoff")
class KnockoffNets(Attack):
    """KnockoffNets: query `budget` random surrogate images once, train the clone on the answers.

    No augmentation of the query set (the InI attack script uses none). ``curve`` lists smaller
    budgets at which a clone is also trained on the first queries, for query-budget curves.
    """

    roles = ("surrogate",)
    label, paper_order = "KnockoffNets", 0
    spends_budget = True  # min(budget, surrogate set size) queries

    @dataclass
    class Config:
        budget: int = 50000
        curve: list[int] = field(default_factory=list)

    def run(self, oracle: Oracle, ctx: AttackContext) -> nn.Module:
        pool = ctx.query_data()
        budget = min(self.config.budget, len(pool), oracle.remaining)
        if budget < self.config.budget:
            ctx.notes["budget_capped"] = f"surrogate set has {len(pool)} images; used {budget}"
        order = torch.randperm(len(pool),
                               generator=torch.Generator().manual_seed(ctx.seed_for("knockoff.queries")))[:budget]
        queries = pool.images[order]
        targets = training_targets(oracle_targets(oracle, queries, ctx.device), oracle.label_mode)
        for size in sorted(s for s in self.config.curve if s < budget):
            clone = fit(ctx.new_clone(), queries[:size], targets[:size], ctx.recipe, device=ctx.device,
                        seed=ctx.seed_for("knockoff.train"), desc=f"knockoff clone @{size}")
            ctx.report(size, clone)
        clone = fit(ctx.new_clone(), queries, targets, ctx.recipe, device=ctx.device,
                    seed=ctx.seed_for("knockoff.train"),
                    desc=f"knockoff clone ({oracle.label_mode})")
        ctx.report(budget, clone)
        return clone
