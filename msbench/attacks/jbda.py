"""JBDA, Jacobian-based dataset augmentation (Papernot et al., 2017), as the InI code runs it.

Seeds are the first ``seeds`` images of the victim's training set. Each of ``rounds`` rounds trains
the clone for ``epochs_per_round`` epochs on every point so far, then (except after the last round)
doubles the set: ``x_new = clip(x + step * sign(d clone_logit_yhat(x) / dx))`` with ``yhat`` the
oracle's top-1 answer for ``x``. 150 seeds and 6 rounds end with 4,800 points.

Choices, each a setting:

- ``relabel = "new"`` (default): every point is labelled once, when it is made (4,800 queries), as
  in Papernot et al.'s accounting (queries = points). The InI code relabels all points every round
  (``"all"``: 9,450 queries); a deterministic victim answers the same again, so the clone trains on
  the same targets and only the query count differs.
- ``step_units = "normalised"`` (default): the InI code steps ``step`` in the normalised input, then
  de-normalises, clamps to [0, 1] and re-normalises; here that is a pixel step of ``step * std`` per
  channel (the sign of the gradient is the same in both spaces), clamped to [0, 1]. ``"pixel"``
  steps ``step`` in [0, 1] pixel units. ``clip = false`` skips the clamp (AM's own code), though
  the oracle still sees clamped images.
- ``direction = "logit"`` (default, the InI and AM code) or ``"ce"`` (the prediction-poisoning code:
  the sign of the gradient of the cross-entropy to ``yhat``, which points away from ``yhat``).

As in the InI code, one clone keeps training across rounds. Each round is one call of the shared
``fit`` with the attack's recipe and ``epochs_per_round`` epochs, so the optimiser and its schedule
start afresh each round; the InI code keeps one SGD optimiser whose schedule is never stepped
(a constant learning rate: ``[attacks.jbda.recipe] schedule = "constant"`` comes closest).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from msbench.attacks.base import Attack, AttackContext, oracle_targets, training_targets
from msbench.config import not_one_of
from msbench.models import Normalize
from msbench.oracle import Oracle
from msbench.registry import register_attack
from msbench.training import fit

# the label's logit (InI, AM code), or minus the cross-entropy (prediction-poisoning code)
Direction = Literal["logit", "ce"]
StepUnits = Literal["normalised", "pixel"]  # a step in the normalised input (InI code), or in [0, 1] pixels
Relabel = Literal["new", "all"]  # label each point once, or relabel every point each round (InI code)


def jacobian_step(clone: nn.Module, x: torch.Tensor, labels: torch.Tensor, step: float | torch.Tensor,
                  direction: Direction = "logit", clip: bool = True) -> torch.Tensor:
    """One JBDA step for a batch: ``x + step * sign(grad)``, optionally clamped to [0, 1].

    The per-sample gradients come from one backward pass: each sample's objective depends only on
    its own input, so the gradient of the batch sum is the stack of the per-sample gradients.
    """
    if direction not in get_args(Direction):
        raise ValueError(f"direction: {not_one_of(get_args(Direction), direction)}")
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = clone(x)
        if direction == "logit":
            objective = logits.gather(1, labels.view(-1, 1)).sum()
        else:
            objective = F.cross_entropy(logits, labels, reduction="sum")
        (gradient,) = torch.autograd.grad(objective, x)
    moved = x.detach() + step * gradient.sign()
    return moved.clamp(0.0, 1.0) if clip else moved


def augment(clone: nn.Module, points: torch.Tensor, labels: torch.Tensor, step: float | torch.Tensor,
            direction: Direction,
            clip: bool, device: torch.device | str = "cpu", batch_size: int = 512) -> torch.Tensor:
    """The new points of one augmentation round, in batches; returned on the CPU."""
    clone.eval()
    step = step.to(device) if isinstance(step, torch.Tensor) else step
    moved = [jacobian_step(clone, points[start:start + batch_size].to(device),
                           labels[start:start + batch_size].to(device),
                           step, direction, clip).cpu()
             for start in range(0, len(points), batch_size)]
    return torch.cat(moved)


def pixel_step(clone: nn.Module, step: float, units: StepUnits) -> float | torch.Tensor:
    """The step in pixel units: ``step * std`` per channel for a step in normalised units."""
    if units == "pixel":
        return step
    normalize = next((m for m in clone.modules() if isinstance(m, Normalize)), None)
    if normalize is None:
        raise ValueError("step_units = 'normalised' needs a clone with a Normalize layer; use step_units = 'pixel'")
    return step * normalize.std.detach().cpu()


@register_attack("jbda")
class JBDA(Attack):
    """JBDA (Papernot et al. 2017): Jacobian-augmented seeds from the victim's training set, 6 rounds."""

    label, paper_order = "JBDA", 1
    contract_settings = {"epochs_per_round": 3}  # test size (suites/quick.toml runs 2)

    @dataclass
    class Config:
        budget: int = 50000
        seeds: int = 150
        rounds: int = 6  # training rounds; an augmentation follows each but the last
        epochs_per_round: int = 10
        step: float = 0.1  # lambda
        step_units: StepUnits = "normalised"
        clip: bool = True
        direction: Direction = "logit"
        relabel: Relabel = "new"

    @staticmethod
    def check_config(config: "JBDA.Config") -> tuple[str, str] | None:
        for key in ("budget", "seeds", "rounds"):
            if getattr(config, key) < 1:
                return key, f"expected a positive integer, got {getattr(config, key)}"
        if config.epochs_per_round < 0:
            return "epochs_per_round", f"expected a non-negative integer, got {config.epochs_per_round}"
        return None

    def _growth(self, size: int, remaining: int) -> int:
        """How many points the next augmentation may add within the remaining budget."""
        if self.config.relabel == "all":
            return max(0, min(size, remaining - size))
        return max(0, min(size, remaining))

    def run(self, oracle: Oracle, ctx: AttackContext) -> nn.Module:
        config = self.config
        notes = ctx.notes
        notes["relabel"] = config.relabel
        data = ctx.seed_data()
        points = data.images[:config.seeds].float().div(255.0)
        if len(points) < config.seeds:
            notes["seeds"] = f"the training set has {len(points)} images; {config.seeds} seeds asked"
        if oracle.remaining < len(points):
            notes["budget_capped"] = f"budget {oracle.budget} labels only {oracle.remaining} of {len(points)} seeds"
            points = points[:oracle.remaining]
        if len(points) == 0:
            raise ValueError("JBDA has no seed to query: empty training set or no budget")
        answers = oracle_targets(oracle, points, ctx.device)

        clone = ctx.new_clone()
        step = pixel_step(clone, config.step, config.step_units)
        recipe = ctx.recipe.with_(epochs=config.epochs_per_round)
        last_round = False
        for round_ in range(1, config.rounds + 1):
            fit(clone, points, training_targets(answers, oracle.label_mode), recipe, device=ctx.device,
                seed=ctx.seed_for(f"jbda.train.round{round_}"),
                desc=f"jbda round {round_}/{config.rounds} ({len(points)} points)")
            ctx.report(oracle.queries, clone)
            if round_ == config.rounds or last_round:
                break
            grow = self._growth(len(points), oracle.remaining)
            if grow < len(points):
                notes["budget_capped"] = (f"budget {oracle.budget} reached: after round {round_}, {grow} of "
                                          f"{len(points)} points augmented ({config.relabel} relabelled), no further "
                                          f"rounds")
                last_round = True
            if grow == 0:
                break
            new = augment(clone, points[:grow], answers[:grow].argmax(dim=1), step, config.direction, config.clip,
                          ctx.device)
            if config.relabel == "all":
                points = torch.cat([points, new])
                answers = oracle_targets(oracle, points, ctx.device)
            else:
                answers = torch.cat([answers, oracle_targets(oracle, new, ctx.device)])
                points = torch.cat([points, new])
        notes["points"] = len(points)
        notes["rounds_run"] = round_
        return clone
