"""Adaptive Misinformation (Kariyappa & Qureshi, CVPR 2020) and the outlier-exposure victim it guards.

AM answers confident (in-distribution-looking) queries truthfully and blends unconfident ones,
which a data-limited attacker sends most of, towards a *misinformation model* F^ trained to put
little mass on the correct class. Its victim F is trained with outlier exposure (``oe``) so that
out-of-distribution inputs get low confidence. ``am`` is AM's gate and F^ over any base victim:
plain ``am`` wraps ``oe``'s victim; ``ini+am`` wraps InI's, as the InI paper does (no retraining).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn

from msbench.data import ImageData
from msbench.defenses.base import OutputDefense, Softmax, TrainingDefense, VictimContext
from msbench.registry import register_defense
from msbench.training import Optimiser, Recipe, Shuffled, augment_batch, cycle_batches, predict_labels, train_loop


def outlier_exposure_loss(logits_in: torch.Tensor, labels: torch.Tensor, logits_out: torch.Tensor,
                          weight: float) -> torch.Tensor:
    """CE(F(x_in), y) + weight * CE(uniform, F(x_oe)); the second term is -mean_k log p_k."""
    return F.cross_entropy(logits_in, labels) + weight * -F.log_softmax(logits_out, dim=1).mean(dim=1).mean()


def misinformation_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """-log(1 - p_y), computed stably as logsumexp(z) - logsumexp(z without class y)."""
    others = logits.scatter(1, labels[:, None], -math.inf)
    return (torch.logsumexp(logits, dim=1) - torch.logsumexp(others, dim=1)).mean()


def train_with_outliers(model: nn.Module, data: ImageData, targets: torch.Tensor, outliers: ImageData,
                        outlier_targets: torch.Tensor | None, loss: Callable[..., torch.Tensor], recipe: Recipe,
                        ctx: VictimContext, outlier_batch: int | None, desc: str, stream: str) -> None:
    """AM's objective for ``train_loop``: each step one forward of an ID batch concatenated with an outlier batch.

    ``loss(logits_in, targets_in, logits_out, targets_out)``; an epoch is one pass over ``data``.
    ``stream`` names the random stream of the shuffles and augmentation (``ctx.seed_for``).
    """
    device = ctx.device
    generator = torch.Generator().manual_seed(ctx.seed_for(stream))
    model.to(device)  # train_loop sets the modes
    optimiser = Optimiser.sgd(model.parameters(), recipe, desc)
    outlier_batches = cycle_batches(len(outliers), outlier_batch or recipe.batch_size, generator)

    def step(index: torch.Tensor) -> dict[str, torch.Tensor]:
        out_index = next(outlier_batches)
        x = augment_batch(data.floats(index, device), ctx.augment, generator)
        x_out = augment_batch(outliers.floats(out_index, device), ctx.augment, generator)
        logits = model(torch.cat([x, x_out]))
        value = loss(logits[:len(x)], targets[index].to(device), logits[len(x):],
                     None if outlier_targets is None else outlier_targets[out_index].to(device))
        optimiser.step_on(value)
        return {"loss": value.detach()}

    train_loop(step, Shuffled(len(data), recipe.batch_size, generator), recipe.epochs, [model], [optimiser], desc)


@register_defense("oe")
class OutlierExposure(TrainingDefense):
    """Outlier exposure (AM's victim): cross-entropy plus a pull towards uniform answers on OOD data."""

    label = "OE"
    training_cost = 2.54  # with AM's misinformation model (1.0), Table B.1's AM 3.54x Vanilla
    cost_model = "M_f"

    roles = ("ood",)

    @dataclass
    class Config:
        lambda_oe: float = 1.0  # weight of CE(uniform, F(x_oe)), AM's setting
        oe_batch_size: int | None = None  # outlier images per step; None: the recipe's batch size

    @staticmethod
    def check_config(config: "OutlierExposure.Config") -> tuple[str, str] | None:
        if not (math.isfinite(config.lambda_oe) and config.lambda_oe >= 0):
            return "lambda_oe", f"expected a non-negative weight, got {config.lambda_oe}"
        if config.oe_batch_size is not None and config.oe_batch_size < 1:
            return "oe_batch_size", f"expected a positive integer, got {config.oe_batch_size}"
        return None

    def build(self, ctx: VictimContext) -> nn.Module:
        return Softmax(ctx.new_model("victim"))

    def fit(self, victim: nn.Module, ctx: VictimContext) -> None:
        weight = self.config.lambda_oe
        train_with_outliers(victim.model, ctx.train, ctx.train.labels, ctx.role("ood"), None,
                            lambda z_in, y_in, z_out, _: outlier_exposure_loss(z_in, y_in, z_out, weight),
                            ctx.recipe, ctx, self.config.oe_batch_size, f"oe {ctx.spec.name}/{ctx.arch}", "oe.train")


class AMVictim(nn.Module):
    """A base victim behind AM's gate: (1 - a) y + a softmax(F^(x)), a = sigmoid(nu (tau - max y)).

    The fast form: F^ runs only where the gate is open (a == 0 gives (1 - 0) y + 0 * q = y exactly anyway)."""

    def __init__(self, base: nn.Module, misinfo: nn.Module, tau: float, nu: float):
        super().__init__()
        self.base, self.misinfo = base, misinfo
        self.tau, self.nu = tau, nu

    def gate(self, y: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.nu * (self.tau - y.amax(dim=1, keepdim=True)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        alpha = self.gate(y)
        out = (1 - alpha) * y
        open_ = alpha[:, 0] != 0
        if bool(open_.all()):
            return out + alpha * torch.softmax(self.misinfo(x), dim=1)
        if bool(open_.any()):
            rows = open_.nonzero()[:, 0]
            out[rows] = out[rows] + alpha[rows] * torch.softmax(self.misinfo(x[rows]), dim=1)
        return out


class ReferenceAMVictim(AMVictim):
    """The same answers by the formula as written: F^ on every query, whether its gate is open or not."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        alpha = self.gate(y)
        return (1 - alpha) * y + alpha * torch.softmax(self.misinfo(x), dim=1)


FORMS: dict[str, type[AMVictim]] = {"fast": AMVictim, "reference": ReferenceAMVictim}
"""The module of each ``implementation``, chosen once when the victim is built."""


@register_defense("am")
class AdaptiveMisinformation(OutputDefense):
    """Adaptive Misinformation: blends unconfident (OOD-looking) answers towards a misinformation model."""

    default_base = "oe"
    roles = ("ood",)
    tunable = "tau"
    label, color, paper_order, color_over_base = "AM", "#56B4E9", 2, "#CC79A7"
    training_cost = 1.0  # its misinformation model: one classifier training (with OE's 2.54, Table B.1's 3.54)

    def cost_model(self, batch_size: int) -> str:
        """The paper's 2 M_f (base and misinformation model) for the reference form; the fast form
        runs the misinformation model only on the share r of inputs the gate opens."""
        return "2 M_f" if self.config.implementation == "reference" else "(1 + r) M_f"

    # not L1_GRID: tau is a confidence threshold in [0, 1], finer near 1 where the gate closes
    # strong to weak
    tunable_grid = (1.0, 0.999, 0.995, 0.99, 0.98, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0)

    @dataclass
    class Config:
        tau: float = 0.99  # confidence threshold: the official MNIST example; benign matching tunes it
        nu: float = 10000.0  # gate sharpness
        misinfo_epochs: int | None = None  # F^'s epochs; None: the recipe's
        misinfo_momentum: float = 0.9  # F^'s SGD momentum and weight decay, as in the official code
        misinfo_weight_decay: float = 5e-4
        implementation: Literal["fast", "reference"] = "fast"  # F^ only on gated inputs, or on all

    @staticmethod
    def check_config(config: "AdaptiveMisinformation.Config") -> tuple[str, str] | None:
        if not (math.isfinite(config.tau) and 0.0 <= config.tau <= 1.0):
            return "tau", f"expected a confidence threshold in [0, 1], got {config.tau}"
        if not (math.isfinite(config.nu) and config.nu > 0):
            return "nu", f"expected a positive gate sharpness, got {config.nu}"
        if config.misinfo_epochs is not None and config.misinfo_epochs < 0:
            return "misinfo_epochs", f"expected a non-negative integer, got {config.misinfo_epochs}"
        return None

    def build(self, base: nn.Module, ctx: VictimContext) -> nn.Module:
        misinfo = ctx.new_model("am.misinformation")  # F^'s initialisation is independent of the victim's
        c = self.config
        return FORMS[c.implementation](base, misinfo, c.tau, c.nu)

    def fit(self, defended: nn.Module, ctx: VictimContext) -> None:
        """Train F^ on ID images (true labels) and outliers (labelled by the base victim's top-1)."""
        c = self.config
        base = defended.base.eval()
        outliers = ctx.role("ood")
        outlier_labels = predict_labels(base, outliers.images, ctx.device)
        recipe = ctx.recipe.with_(epochs=ctx.recipe.epochs if c.misinfo_epochs is None else c.misinfo_epochs,
                                  momentum=c.misinfo_momentum, weight_decay=c.misinfo_weight_decay)
        train_with_outliers(defended.misinfo, ctx.train, ctx.train.labels, outliers, outlier_labels,
                            lambda z_in, y_in, z_out,
                            y_out: misinformation_loss(torch.cat([z_in, z_out]), torch.cat([y_in, y_out])),
                            recipe, ctx, None, f"am misinformation {ctx.spec.name}/{ctx.arch}",
                            "am.misinformation.train")
