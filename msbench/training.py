"""The one training loop every trainer uses (victims, clones, a defense's auxiliary models, an
attack's generator or restorer), the optimisers it steps, and evaluation helpers.

A trainer supplies only its objective: a ``step`` that makes one batch's loss and updates through an
``Optimiser``. ``train_loop`` owns modes, batching and shuffling, schedules, finiteness and progress,
so two trainers cannot drift apart in how they train.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from msbench.compute import current as current_compute
from msbench.compute import full_precision, resident
from msbench.logs import Pulse
from msbench.progress import progress


Schedule = Literal["step", "cosine", "constant"]
"""The learning-rate schedules of a recipe: x gamma every step_size epochs, cosine annealing, none."""
Augmentation = Literal["none", "crop_flip"]
"""What a training batch goes through: nothing, or the CIFAR recipe's random crop (pad 4) and flip."""


@dataclass(frozen=True)
class Recipe:
    """How to train a model: SGD with a learning-rate schedule.

    Defaults are the InI paper's victim recipe for MNIST-family datasets (SGD lr 0.1, momentum
    0.5, weight decay 1e-3, batch 128, 50 epochs, x0.1 every 20).
    """

    epochs: int = 50
    lr: float = 0.1
    momentum: float = 0.5
    weight_decay: float = 1e-3
    batch_size: int = 128
    schedule: Schedule = "step"
    step_size: int = 20
    gamma: float = 0.1
    augment: Literal["auto", Augmentation] = "auto"  # "auto": the dataset's default

    def with_(self, **changes: object) -> "Recipe":
        return replace(self, **changes)  # type: ignore[arg-type]


CLONE_RECIPE = Recipe(epochs=50, lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="cosine")
"""KnockoffNets' clone recipe in the InI code: 50 epochs, SGD lr 0.1 momentum 0.9, wd 5e-4, cosine."""


def augment_batch(x: torch.Tensor, mode: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Batch-level random crop (pad 4) and horizontal flip, the CIFAR recipe; identity for 'none'."""
    if mode in ("none", "auto"):
        return x
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(3), x)
    padded = F.pad(x, (4, 4, 4, 4))
    dy, dx = torch.randint(0, 9, (2, n), generator=generator)
    rows = (torch.arange(h).view(1, h) + dy.view(n, 1)).to(x.device)
    cols = (torch.arange(w).view(1, w) + dx.view(n, 1)).to(x.device)
    return padded[torch.arange(n, device=x.device).view(n, 1, 1, 1),
                  torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1),
                  rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]


def cycle_batches(size: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless shuffled full batches of indices into a dataset of ``size`` items, reshuffled each
    pass: an auxiliary (OOD) stream that runs independently of the in-distribution epochs."""
    if size == 0:
        raise ValueError("cannot draw batches from an empty dataset")
    while True:
        order = torch.randperm(size, generator=generator)
        for start in range(0, max(size - batch_size, 0) + 1, batch_size):
            yield order[start:start + batch_size]


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against probability vectors; equals KL(targets || softmax) up to a constant."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def _recipe_optimizer(params: Iterable[nn.Parameter],
                      recipe: Recipe) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """SGD and the learning-rate schedule ``recipe`` names, over ``params``."""
    optimizer = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    if recipe.schedule == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, recipe.step_size, recipe.gamma)
    elif recipe.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(recipe.epochs, 1))
    elif recipe.schedule == "constant":
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    else:
        raise ValueError(f"unknown schedule '{recipe.schedule}'")
    return optimizer, scheduler


class Optimiser:
    """An optimiser, its learning-rate schedule (stepped once per epoch of ``train_loop``) and the
    name its errors carry: the one place where parameters are stepped, so that every trainer gets
    the same finiteness check and the same zero_grad / backward / step order."""

    def __init__(self, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
                 desc: str = "train"):
        self.optimizer, self.scheduler, self.desc = optimizer, scheduler, desc
        self.where = ""  # the epoch (or iteration) under way, set by train_loop and named in errors

    @classmethod
    def sgd(cls, params: Iterable[nn.Parameter], recipe: Recipe, desc: str = "train") -> "Optimiser":
        """SGD with the recipe's momentum, weight decay and schedule."""
        return cls(*_recipe_optimizer(params, recipe), desc=desc)

    @classmethod
    def milestone_sgd(cls, params: Iterable[nn.Parameter], lr: float, momentum: float, weight_decay: float,
                      milestones: Sequence[int] = (), gamma: float = 1.0, desc: str = "train") -> "Optimiser":
        """SGD whose learning rate is multiplied by ``gamma`` at each milestone epoch (none: constant)."""
        optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        return cls(optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, list(milestones), gamma) if milestones
                   else None, desc)

    @classmethod
    def adam(cls, params: Iterable[nn.Parameter], lr: float, milestones: Sequence[int] = (), gamma: float = 1.0,
             desc: str = "train") -> "Optimiser":
        """Adam whose learning rate is multiplied by ``gamma`` at each milestone epoch (none: constant)."""
        optimizer = torch.optim.Adam(params, lr=lr)
        return cls(optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, list(milestones), gamma) if milestones
                   else None, desc)

    def check(self, values: Mapping[str, float]) -> None:
        """Stop at a non-finite objective, naming it, rather than letting NaN weights reach a cached model."""
        if not all(math.isfinite(v) for v in values.values()):
            raise FloatingPointError(f"{self.desc}: an objective became non-finite: {dict(values)}" + self.where)

    def step_on(self, loss: torch.Tensor) -> None:
        """One step down the gradient of ``loss``; a non-finite loss stops training there."""
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{self.desc}: loss became {loss.item()}" + self.where)
        self.optimizer.zero_grad(set_to_none=True)
        with full_precision(loss):  # autocast wraps the forward and the loss, not the backward and the update
            loss.backward()
            self.optimizer.step()

    def step_through(self, output: torch.Tensor, gradient: torch.Tensor) -> None:
        """One step with ``gradient`` (d loss / d output) back-propagated through ``output``: for a loss
        whose gradient is estimated outside autograd (DFME's generator)."""
        if not bool(torch.isfinite(gradient).all()):
            raise FloatingPointError(f"{self.desc}: the gradient estimate became non-finite" + self.where)
        self.optimizer.zero_grad(set_to_none=True)
        with full_precision(output):
            output.backward(gradient.to(output.dtype))  # under bf16 autocast the output is bf16, the estimate fp32
            self.optimizer.step()

    def step_along(self, params: Sequence[nn.Parameter], direction: torch.Tensor) -> None:
        """One step with a flat update ``direction`` the caller computed (PCGrad's merged gradient),
        laid onto ``params`` in order as their gradients."""
        offset = 0
        for p in params:
            p.grad = direction[offset:offset + p.numel()].view_as(p).to(p.dtype)  # a no-op in fp32
            offset += p.numel()
        with full_precision(direction):
            self.optimizer.step()

    def end_epoch(self) -> None:
        if self.scheduler is not None:
            self.scheduler.step()


class Shuffled:
    """The batches of one epoch: index tensors into ``size`` items, in a fresh order drawn from
    ``generator`` at the start of every pass (the last batch may be short)."""

    unit = "epoch"

    def __init__(self, size: int, batch_size: int, generator: torch.Generator):
        self.size, self.batch_size, self.generator = size, batch_size, generator

    def __len__(self) -> int:
        return math.ceil(self.size / self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        order = torch.randperm(self.size, generator=self.generator)
        for start in range(0, self.size, self.batch_size):
            yield order[start:start + self.batch_size]


class Once:
    """One step per epoch, with no data (an iteration of a data-free game such as DFME's)."""

    unit = "iteration"

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[None]:
        yield None


def train_loop(step: Callable[[Any], Mapping[str, torch.Tensor | float]], batches: Shuffled | Once,
               epochs: int, modules: Sequence[nn.Module], optimisers: Sequence[Optimiser], desc: str,
               on_epoch: Callable[[int], None] | None = None) -> None:
    """The training loop every trainer shares: ``epochs`` passes over ``batches``, ``step(batch)``
    per batch.

    The loop owns what the trainers must not get different: ``modules`` in training mode at the
    start of every epoch and in eval mode at the end, each optimiser's schedule stepped after every
    epoch, the epoch named in a non-finite loss's error, the progress bar and heartbeat, and the
    run's precision (each step under ``msbench.compute``'s autocast; none in fp32). The step owns its
    objective: it makes its batch, computes the loss and updates through an ``Optimiser`` (step_on,
    or its own update direction), and returns the values shown on the bar (scalars).
    ``on_epoch(epoch)`` runs after each epoch (reports of intermediate models).
    """
    values: Mapping[str, torch.Tensor | float] = {}
    pulse = Pulse(desc, epochs, len(batches), batches.unit)
    compute = current_compute()
    with progress(total=epochs * len(batches), desc=desc, unit="step") as bar:
        for epoch in range(epochs):
            for module in modules:
                module.train()
            for optimiser in optimisers:
                optimiser.where = f" in {batches.unit} {epoch + 1}"
            for index, batch in enumerate(batches):
                with compute.autocast():
                    values = step(batch)
                bar.update(1)
                pulse.beat(epoch, index + 1)
            for optimiser in optimisers:
                optimiser.end_epoch()
            bar.set_postfix(epoch=epoch + 1, **{k: f"{float(v):.3f}" for k, v in values.items()})
            if on_epoch is not None:
                on_epoch(epoch)
    for module in modules:
        module.eval()


def fit(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, recipe: Recipe, *,
        device: torch.device | str = "cpu", seed: int = 0, augment: str = "none", desc: str = "train",
        on_epoch: Callable[[int, nn.Module], None] | None = None) -> nn.Module:
    """Train ``model`` on uint8 or float ``images`` with integer labels or probability targets.

    Probability targets (2-D float) use the soft cross-entropy of KnockoffNets' soft-label
    attack; integer labels use the ordinary cross-entropy.
    """
    generator = torch.Generator().manual_seed(seed)
    model.to(device)  # train_loop sets the modes
    optimiser = Optimiser.sgd(model.parameters(), recipe, desc)
    soft = targets.dim() == 2
    images, targets = resident(images, device), resident(targets, device)

    def step(index: torch.Tensor) -> dict[str, torch.Tensor]:
        index = index.to(images.device)
        x = images[index].to(device, non_blocking=True)
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        x = augment_batch(x, augment, generator)
        y = targets[index].to(device, non_blocking=True)
        logits = model(x)
        loss = soft_cross_entropy(logits, y) if soft else F.cross_entropy(logits, y)
        optimiser.step_on(loss)
        return {"loss": loss.detach()}

    train_loop(step, Shuffled(len(images), recipe.batch_size, generator), recipe.epochs, [model], [optimiser], desc,
               None if on_epoch is None else lambda epoch: on_epoch(epoch, model))
    return model


@torch.no_grad()
def predict_labels(predict: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                   device: torch.device | str = "cpu", batch_size: int = 512) -> torch.Tensor:
    """Top-1 labels of any callable returning logits or probabilities, over uint8 images."""
    labels = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device).float().div_(255.0)
        labels.append(predict(x).argmax(dim=1).cpu())
    return torch.cat(labels) if labels else torch.empty(0, dtype=torch.long)


def accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 agreement in percent."""
    return 100.0 * (predicted == labels.cpu()).float().mean().item()
