"""KnockoffNets with perturb-and-average queries (multi-query "smoothing").

Each of ``budget // copies`` distinct surrogate images x is sent ``copies`` times, each copy
perturbed independently, and the clone trains on x with the mean of the answers:

    x'_j = clamp(shift_j(x) + sigma * n_j, 0, 1),  n_j ~ N(0, I),   j = 1..copies
    answer(x) = (1 / copies) * sum_j oracle(x'_j)

``shift_j`` moves the image by a random whole number of pixels in [-shift, shift] on each axis
(zero padding); ``shift = 0`` (default) is noise only. Every copy is one answered query, so the
attack labels ``budget // copies`` distinct images; a remainder of fewer than ``copies`` queries is
left unspent (the record's notes say so).

Why: a defense whose answer depends on per-query randomness, or on which side of a boundary in
input space a query lands (EDM's hash routing picks the ensemble member from the input), gives
each copy a different distortion; the mean cancels part of it. The InI code's KnockoffNets has
this mode with 5 perturbed copies averaged (the default here); ModelGuard's "smoothing" attacker
uses 3 augmented copies. The perturbation's form and size are not fixed by either: Gaussian pixel
noise of standard deviation ``sigma = 0.05`` (of the [0, 1] range) is this implementation's choice.

Hard labels: each copy answers a one-hot, so the mean is the vote share of each class and the
clone trains on its top-1 (the majority vote; ties go to the lowest class index).
The clone trains on the clean, unperturbed images, as KnockoffNets does, with the suite's recipe.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from msbench.attacks.base import Attack, AttackContext, oracle_targets, training_targets
from msbench.oracle import Oracle
from msbench.registry import register_attack
from msbench.training import fit


def perturbed_copies(images: torch.Tensor, copies: int, sigma: float, shift: int, generator: torch.Generator) -> torch.Tensor:
    """``copies`` perturbed versions of each float image, copy-major: row ``j * N + i`` is copy j of image i."""
    batch = images.repeat(copies, 1, 1, 1)
    if shift > 0:
        n, _, h, w = batch.shape
        dy, dx = torch.randint(-shift, shift + 1, (2, n), generator=generator)
        padded = torch.nn.functional.pad(batch, (shift, shift, shift, shift))
        rows = torch.arange(h).view(1, h) + shift - dy.view(n, 1)
        cols = torch.arange(w).view(1, w) + shift - dx.view(n, 1)
        batch = padded[torch.arange(n).view(n, 1, 1, 1), torch.arange(batch.shape[1]).view(1, -1, 1, 1),
                       rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]
    if sigma > 0:
        batch = batch + sigma * torch.randn(batch.shape, generator=generator)
    return batch.clamp(0.0, 1.0)


def averaged_answers(oracle: Oracle, images: torch.Tensor, copies: int, sigma: float, shift: int,
                     generator: torch.Generator, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """The mean oracle answer over ``copies`` perturbed copies of each uint8 image; costs ``copies * len(images)`` queries."""
    means = []
    for start in range(0, len(images), batch_size):
        clean = images[start:start + batch_size].float().div(255.0)
        answers = oracle_targets(oracle, perturbed_copies(clean, copies, sigma, shift, generator), device)
        means.append(answers.view(copies, len(clean), -1).mean(dim=0))
    return torch.cat(means)


@register_attack("knockoff-avg")
class KnockoffAveraged(Attack):
    """KnockoffNets querying each image `copies` times under small random perturbations and averaging the answers."""

    label = "KnockoffNets (avg)"
    roles = ("surrogate",)
    contract_settings = {"budget": 1500}  # test size: 300 distinct images, each answered 5 times

    @dataclass
    class Config:
        budget: int = 50000  # answered queries, every copy counted
        copies: int = 5  # n perturbed copies per image (the InI code's 5)
        sigma: float = 0.05  # std of the Gaussian pixel noise, in [0, 1] units
        shift: int = 0  # largest random translation in pixels (0: none)
        curve: list[int] = field(default_factory=list)  # smaller budgets (queries) for intermediate clones

    @staticmethod
    def check_config(config: "KnockoffAveraged.Config") -> tuple[str, str] | None:
        if config.copies < 1:
            return "copies", f"expected a positive integer, got {config.copies}"
        if not config.sigma >= 0:
            return "sigma", f"expected a non-negative noise level, got {config.sigma}"
        if config.shift < 0:
            return "shift", f"expected a non-negative number of pixels, got {config.shift}"
        if config.budget < config.copies:
            return "budget", f"expected at least copies = {config.copies} queries, got {config.budget}"
        return None

    def run(self, oracle: Oracle, ctx: AttackContext) -> nn.Module:
        config = self.config
        pool = ctx.query_data()
        budget = min(config.budget, oracle.remaining)
        distinct = min(budget // config.copies, len(pool))
        if distinct < budget // config.copies:
            ctx.notes["budget_capped"] = f"surrogate set has {len(pool)} images; used {distinct}"
        if distinct * config.copies < config.budget:
            ctx.notes["unspent"] = f"{config.budget - distinct * config.copies} queries unspent"
        ctx.notes["distinct_images"] = distinct
        order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(ctx.seed_for("knockoff-avg.queries")))[:distinct]
        queries = pool.images[order]
        noise = torch.Generator().manual_seed(ctx.seed_for("knockoff-avg.perturbations"))
        targets = training_targets(averaged_answers(oracle, queries, config.copies, config.sigma, config.shift, noise,
                                                    ctx.device), oracle.label_mode)
        for size in sorted(s for s in config.curve if s < distinct * config.copies):
            images = size // config.copies
            if images == 0:
                continue
            clone = fit(ctx.new_clone(), queries[:images], targets[:images], ctx.recipe, device=ctx.device,
                        seed=ctx.seed_for("knockoff-avg.train"), desc=f"knockoff-avg clone @{size}")
            ctx.report(images * config.copies, clone)
        clone = fit(ctx.new_clone(), queries, targets, ctx.recipe, device=ctx.device, seed=ctx.seed_for("knockoff-avg.train"),
                    desc=f"knockoff-avg clone ({oracle.label_mode})")
        ctx.report(oracle.queries, clone)
        return clone
