"""Vanilla: an undefended victim trained with cross-entropy; the baseline every defense is compared to."""
from __future__ import annotations

from torch import nn

from msbench.defenses.base import Softmax, TrainingDefense, VictimContext
from msbench.registry import register_defense
from msbench.training import fit


@register_defense("vanilla")
class Vanilla(TrainingDefense):
    """Undefended model: cross-entropy training, answers its softmax."""

    label, color, paper_order = "Vanilla", "#999999", 0
    reference = True  # the undefended row: benign accuracy and slowdown are measured against it
    cost_model = "M_f"

    def build(self, ctx: VictimContext) -> nn.Module:
        return Softmax(ctx.new_model("victim"))

    def fit(self, victim: nn.Module, ctx: VictimContext) -> None:
        fit(victim.model, ctx.train.images, ctx.train.labels, ctx.recipe, device=ctx.device,
            seed=ctx.seed_for("vanilla.train"),
            augment=ctx.augment, desc=f"vanilla {ctx.spec.name}/{ctx.arch}")
