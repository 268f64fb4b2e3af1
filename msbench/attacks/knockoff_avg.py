"""KnockoffNets with perturb-and-average queries (multi-query "smoothing").

Each of ``budget // copies`` distinct surrogate images x is sent ``copies`` times, each copy
perturbed independently, and the clone trains on x with the mean of the answers:

    answer(x) = (1 / copies) * sum_j oracle(perturb_j(x)),   j = 1..copies

Every copy is one answered query (the defender answers each), so the attack labels
``budget // copies`` distinct images; a remainder of fewer than ``copies`` queries is left unspent
(the record's notes say so). The InI code's KnockoffNets counts each image once, not each copy;
msbench counts what the API answers.

``perturbation = "affine"`` (default) is the InI code's (``src/attacks/knockoffnets/knockoff.py``,
``adaptive_pred``, 5 copies): torchvision's ``RandomAffine(15, translate=(0.1, 0.1), scale=(0.9,
1.0), shear=0.1)`` (nearest-neighbour, zero fill) then ``ColorJitter(0.1, 0.1, 0.1, 0.1)``
(brightness, contrast, saturation and hue in a random order; saturation and hue leave a greyscale
image unchanged). Every parameter is drawn from the attack's own generator, so a cell reproduces.
``perturbation = "gaussian"`` adds pixel noise of standard deviation ``sigma`` (of the [0, 1] range)
after a random whole-pixel translation of at most ``shift`` pixels (zero padding).

Why: a defense whose answer depends on per-query randomness, or on which side of a boundary in
input space a query lands (EDM's hash routing picks the ensemble member from the input), gives
each copy a different distortion; the mean cancels part of it. Small pixel noise rarely moves an
input to another EDM member, a rotation, translation or rescaling does. ModelGuard's "smoothing"
attacker uses 3 augmented copies.

Hard labels: each copy answers a one-hot, so the mean is the vote share of each class and the
clone trains on its top-1 (the majority vote; ties go to the lowest class index).
The clone trains on the clean, unperturbed images, as KnockoffNets does, with the suite's recipe.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

import torch
from torch import nn
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from msbench.attacks.base import Attack, AttackContext, oracle_targets, training_targets
from msbench.oracle import Oracle
from msbench.registry import register_attack
from msbench.training import fit


DEGREES, TRANSLATE, SCALE, SHEAR, JITTER = 15.0, 0.1, (0.9, 1.0), 0.1, 0.1
"""The InI code's RandomAffine(DEGREES, translate=(TRANSLATE, TRANSLATE), scale=SCALE, shear=SHEAR) and
ColorJitter(JITTER x 4)."""


@dataclass(frozen=True)
class AffineDraw:
    """One copy's perturbation: RandomAffine's parameters (as ``RandomAffine.get_params`` draws them:
    whole-pixel translation, shear along x only) and ColorJitter's order and factors."""

    angle: float
    translate: tuple[int, int]  # (dx, dy) in pixels
    scale: float
    shear: float  # degrees, along x
    order: tuple[int, ...]  # 0 brightness, 1 contrast, 2 saturation, 3 hue
    brightness: float
    contrast: float
    saturation: float
    hue: float

    @classmethod
    def sample(cls, height: int, width: int, generator: torch.Generator) -> "AffineDraw":
        u = torch.rand(9, generator=generator, dtype=torch.float64).tolist()
        between = lambda r, lo, hi: lo + (hi - lo) * r  # noqa: E731
        order = tuple(torch.randperm(4, generator=generator).tolist())
        return cls(between(u[0], -DEGREES, DEGREES),
                   (round(between(u[1], -TRANSLATE * width, TRANSLATE * width)),
                    round(between(u[2], -TRANSLATE * height, TRANSLATE * height))),
                   between(u[3], *SCALE), between(u[4], -SHEAR, SHEAR), order, between(u[5], 1 - JITTER, 1 + JITTER),
                   between(u[6], 1 - JITTER, 1 + JITTER), between(u[7], 1 - JITTER, 1 + JITTER),
                   between(u[8], -JITTER, JITTER))

    def apply(self, image: torch.Tensor) -> torch.Tensor:
        """The perturbed copy of one float image (C, H, W) in [0, 1]."""
        out = TF.affine(image, angle=self.angle, translate=list(self.translate), scale=self.scale,
                        shear=[self.shear, 0.0],
                        interpolation=InterpolationMode.NEAREST, fill=0.0)
        colour = image.shape[0] == 3  # saturation and hue are the identity on a greyscale image
        for op in self.order:
            if op == 0:
                out = TF.adjust_brightness(out, self.brightness)
            elif op == 1:
                out = TF.adjust_contrast(out, self.contrast)
            elif op == 2 and colour:
                out = TF.adjust_saturation(out, self.saturation)
            elif op == 3 and colour:
                out = TF.adjust_hue(out, self.hue)
        return out.clamp(0.0, 1.0)


def affine_copies(images: torch.Tensor, copies: int, generator: torch.Generator) -> torch.Tensor:
    """``copies`` versions of each float image under the InI code's affine and colour perturbation, copy-major."""
    batch = images.repeat(copies, 1, 1, 1)
    _, _, h, w = batch.shape
    return torch.stack([AffineDraw.sample(h, w, generator).apply(image) for image in batch])


def gaussian_copies(images: torch.Tensor, copies: int, sigma: float, shift: int,
                    generator: torch.Generator) -> torch.Tensor:
    """``copies`` versions of each float image with Gaussian pixel noise after a random translation,
    copy-major: row ``j * N + i`` is copy j of image i."""
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


def averaged_answers(oracle: Oracle, images: torch.Tensor, copies: int,
                     perturb: Callable[[torch.Tensor, int], torch.Tensor],
                     device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """The mean oracle answer over ``copies`` perturbed copies of each uint8 image (``perturb(float images,
    copies)`` makes them, copy-major); costs ``copies * len(images)`` queries."""
    means = []
    for start in range(0, len(images), batch_size):
        clean = images[start:start + batch_size].float().div(255.0)
        answers = oracle_targets(oracle, perturb(clean, copies), device)
        means.append(answers.view(copies, len(clean), -1).mean(dim=0))
    return torch.cat(means)


@register_attack("knockoff-avg")
class KnockoffAveraged(Attack):
    """KnockoffNets querying each image `copies` times under small random perturbations and averaging the answers."""

    label = "KnockoffNets (avg)"
    roles = ("surrogate",)
    contract_settings = {"budget": 1500}  # test size: 300 distinct images, each answered 5 times
    former_defaults = {"perturbation": "gaussian"}  # the only perturbation before the InI code's affine one

    @dataclass
    class Config:
        budget: int = 50000  # answered queries, every copy counted
        copies: int = 5  # n perturbed copies per image (the InI code's 5)
        perturbation: Literal["affine", "gaussian"] = "affine"  # the InI code's affine + colour jitter, or pixel noise
        sigma: float = 0.05  # gaussian: std of the pixel noise, in [0, 1] units
        shift: int = 0  # gaussian: largest random translation in pixels (0: none)
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
        order = torch.randperm(len(pool),
                               generator=torch.Generator().manual_seed(ctx.seed_for("knockoff-avg.queries")))[:distinct]
        queries = pool.images[order]
        noise = torch.Generator().manual_seed(ctx.seed_for("knockoff-avg.perturbations"))
        if config.perturbation == "affine":
            perturb = lambda x, copies: affine_copies(x, copies, noise)  # noqa: E731
        else:
            perturb = lambda x, copies: gaussian_copies(x, copies, config.sigma, config.shift, noise)  # noqa: E731
        targets = training_targets(averaged_answers(oracle, queries, config.copies, perturb, ctx.device),
                                   oracle.label_mode)
        for size in sorted(s for s in config.curve if s < distinct * config.copies):
            images = size // config.copies
            if images == 0:
                continue
            clone = fit(ctx.new_clone(), queries[:images], targets[:images], ctx.recipe, device=ctx.device,
                        seed=ctx.seed_for("knockoff-avg.train"), desc=f"knockoff-avg clone @{size}")
            ctx.report(images * config.copies, clone)
        clone = fit(ctx.new_clone(), queries, targets, ctx.recipe, device=ctx.device,
                    seed=ctx.seed_for("knockoff-avg.train"),
                    desc=f"knockoff-avg clone ({oracle.label_mode})")
        ctx.report(oracle.queries, clone)
        return clone
