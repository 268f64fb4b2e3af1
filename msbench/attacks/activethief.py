"""ActiveThief (Pal et al., AAAI 2020): pool-based active learning over the surrogate set.

The attacker holds an unlabelled pool (the surrogate dataset) and spends its budget in rounds:

1. Query a random ``initial_fraction`` of the budget from the pool; train the clone on the answers.
2. For each of ``rounds`` rounds: score every unlabelled pool image with the current clone, query
   the ``per round`` best (the budget left after step 1, split evenly; the last round takes the
   remainder), and train the clone afresh on every answer so far.

Selection strategies (``strategy``):

- ``"entropy"`` (uncertainty): the images whose clone prediction has the highest entropy
  H(p) = -sum_k p_k log p_k, p = softmax(clone(x)).
- ``"kcenter"`` (greedy core-set): in the space of the clone's probability vectors, repeatedly take
  the pool image farthest (Euclidean) from everything labelled or picked so far.
- ``"random"``: uniform at random (the paper's baseline; KnockoffNets spread over rounds).

The clone is retrained from scratch each round with the suite's clone recipe (as the paper's
iterations do), and each round's clone is reported for the budget curve. Choices the paper leaves
to its setup: no validation split or early stopping (the paper holds out 20% of the budget as a
validation set; msbench reports the last epoch, as for every attack); ``pool_size`` optionally
draws a random subset of the pool to score, so a large surrogate set keeps rounds cheap; the
paper's DFAL strategy and its DFAL + k-center combination are not implemented. Hard labels:
the clone trains on the top-1 answers; selection does not need the victim's probabilities.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from msbench.attacks.base import Attack, AttackContext, oracle_targets, training_targets
from msbench.oracle import Oracle
from msbench.registry import register_attack
from msbench.training import fit

Strategy = Literal["entropy", "kcenter", "random"]  # the module docstring describes each


@torch.no_grad()
def clone_probabilities(clone: nn.Module, images: torch.Tensor, device: torch.device,
                        batch_size: int = 1024) -> torch.Tensor:
    clone.eval()
    return torch.cat([torch.softmax(clone(images[s:s + batch_size].to(device).float().div(255.0)), dim=1).cpu()
                      for s in range(0, len(images), batch_size)])


def entropy_selection(probabilities: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the ``count`` rows of highest entropy (ties: lower index first)."""
    entropy = -(probabilities * probabilities.clamp_min(1e-12).log()).sum(dim=1)
    return torch.sort(entropy, descending=True, stable=True).indices[:count]


def kcenter_selection(candidates: torch.Tensor, centres: torch.Tensor, count: int, chunk: int = 4096) -> torch.Tensor:
    """Greedy k-center: ``count`` candidate rows, each the farthest from the centres and earlier picks."""
    nearest = torch.full((len(candidates),), float("inf"))
    for start in range(0, len(centres), chunk):
        nearest = torch.minimum(nearest, torch.cdist(candidates, centres[start:start + chunk]).min(dim=1).values)
    picks = []
    for _ in range(min(count, len(candidates))):
        pick = int(torch.argmax(nearest))
        picks.append(pick)
        nearest = torch.minimum(nearest, (candidates - candidates[pick]).norm(dim=1))
        nearest[pick] = -1.0  # never picked twice, even among duplicates
    return torch.tensor(picks, dtype=torch.long)


def round_sizes(budget: int, initial_fraction: float, rounds: int) -> list[int]:
    """Queries of the initial random set, then of each round; they sum to ``budget``."""
    initial = max(1, min(budget, round(initial_fraction * budget)))
    rest = budget - initial
    sizes = [rest // rounds] * rounds
    if rounds:
        sizes[-1] += rest - sum(sizes)
    return [initial] + sizes


@register_attack("activethief")
class ActiveThief(Attack):
    """ActiveThief: pool-based active learning, entropy or k-center selection over rounds."""

    label = "ActiveThief"
    roles = ("surrogate",)
    contract_settings = {"rounds": 3}  # test size: the clone is retrained every round

    @dataclass
    class Config:
        budget: int = 20000
        strategy: Strategy = "kcenter"
        rounds: int = 10  # selection rounds after the initial random set
        initial_fraction: float = 0.1  # share of the budget queried at random first
        pool_size: int | None = None  # pool images scored each round (a fixed random subset); None: all

    @staticmethod
    def check_config(config: "ActiveThief.Config") -> tuple[str, str] | None:
        if config.budget < 1 or config.rounds < 0:
            return "budget", "expected a positive budget and a non-negative number of rounds"
        if not 0 < config.initial_fraction <= 1:
            return "initial_fraction", f"expected a share in (0, 1], got {config.initial_fraction}"
        if config.pool_size is not None and config.pool_size < 1:
            return "pool_size", f"expected a positive integer, got {config.pool_size}"
        return None

    def run(self, oracle: Oracle, ctx: AttackContext) -> nn.Module:
        config = self.config
        pool = ctx.query_data()
        order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(ctx.seed_for("activethief.pool")))
        if config.pool_size is not None:
            order = order[:config.pool_size]
        images = pool.images[order]
        budget = min(config.budget, len(images), oracle.remaining)
        if budget < config.budget:
            ctx.notes["budget_capped"] = (f"pool of {len(images)} images or {oracle.remaining} queries left; "
                                          f"used {budget}")
        sizes = round_sizes(budget, config.initial_fraction, config.rounds)
        picker = torch.Generator().manual_seed(ctx.seed_for("activethief.picks"))  # the random strategy's draws
        labelled = torch.arange(sizes[0])  # the pool is already shuffled: its first images are a random set
        unlabelled = torch.ones(len(images), dtype=torch.bool)
        unlabelled[labelled] = False
        answers = oracle_targets(oracle, images[labelled], ctx.device)
        clone = self.train(images[labelled], answers, oracle, ctx, 0)
        for round_, size in enumerate(sizes[1:], start=1):
            if size == 0:
                continue
            candidates = unlabelled.nonzero()[:, 0]
            if config.strategy == "random":
                chosen = candidates[torch.randperm(len(candidates), generator=picker)[:size]]
            else:
                probabilities = clone_probabilities(clone, images[candidates], ctx.device)
                if config.strategy == "entropy":
                    chosen = candidates[entropy_selection(probabilities, size)]
                else:
                    centres = clone_probabilities(clone, images[labelled], ctx.device)
                    chosen = candidates[kcenter_selection(probabilities, centres, size)]
            unlabelled[chosen] = False
            labelled = torch.cat([labelled, chosen])
            answers = torch.cat([answers, oracle_targets(oracle, images[chosen], ctx.device)])
            clone = self.train(images[labelled], answers, oracle, ctx, round_)
        ctx.notes["rounds_run"] = len(sizes) - 1
        ctx.notes["strategy"] = config.strategy
        return clone

    def train(self, images: torch.Tensor, answers: torch.Tensor, oracle: Oracle, ctx: AttackContext,
              round_: int) -> nn.Module:
        """A fresh clone on every answer so far, reported for the budget curve. Every round's clone
        starts from the same initialisation and shuffle stream (as KnockoffNets' budget-curve
        clones do), so rounds differ only in the queries they were trained on."""
        clone = fit(ctx.new_clone(), images, training_targets(answers, oracle.label_mode), ctx.recipe,
                    device=ctx.device,
                    seed=ctx.seed_for("activethief.train"), desc=f"activethief round {round_} ({len(images)} queries)")
        ctx.report(oracle.queries, clone)
        return clone
