"""The one supervised training loop that victims and clones share, and evaluation helpers."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Callable, Iterator, Literal

import torch
import torch.nn.functional as F
from torch import nn

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

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


CLONE_RECIPE = Recipe(epochs=50, lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="cosine")
"""KnockoffNets' clone recipe in the InI code: 50 epochs, SGD lr 0.1 momentum 0.9, wd 5e-4, cosine."""


def make_optimizer(params: Iterator[nn.Parameter] | list, recipe: Recipe) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
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
    return padded[torch.arange(n, device=x.device).view(n, 1, 1, 1), torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1),
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


def descend(optimizer: torch.optim.Optimizer, loss: torch.Tensor, desc: str, epoch: int | None = None) -> None:
    """One optimiser step on ``loss``. A non-finite loss stops training there, naming where, rather
    than letting NaN weights reach a cached victim."""
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{desc}: loss became {loss.item()}" + (f" in epoch {epoch}" if epoch is not None else ""))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def fit(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, recipe: Recipe, *, device: torch.device | str = "cpu",
        seed: int = 0, augment: str = "none", desc: str = "train",
        on_epoch: Callable[[int, nn.Module], None] | None = None) -> nn.Module:
    """Train ``model`` on uint8 or float ``images`` with integer labels or probability targets.

    Probability targets (2-D float) use the soft cross-entropy of KnockoffNets' soft-label
    attack; integer labels use the ordinary cross-entropy.
    """
    generator = torch.Generator().manual_seed(seed)
    model.to(device).train()
    optimizer, scheduler = make_optimizer(model.parameters(), recipe)
    soft = targets.dim() == 2
    n = len(images)
    steps = math.ceil(n / recipe.batch_size)
    with progress(total=recipe.epochs * steps, desc=desc, unit="step") as bar:
        for epoch in range(recipe.epochs):
            model.train()
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, recipe.batch_size):
                index = order[start:start + recipe.batch_size]
                x = images[index].to(device)
                x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
                x = augment_batch(x, augment, generator)
                y = targets[index].to(device)
                logits = model(x)
                loss = soft_cross_entropy(logits, y) if soft else F.cross_entropy(logits, y)
                descend(optimizer, loss, desc, epoch + 1)
                bar.update(1)
            scheduler.step()
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
            if on_epoch is not None:
                on_epoch(epoch, model)
    return model.eval()


@torch.no_grad()
def predict_labels(predict: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, device: torch.device | str = "cpu",
                   batch_size: int = 512) -> torch.Tensor:
    """Top-1 labels of any callable returning logits or probabilities, over uint8 images."""
    labels = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device).float().div_(255.0)
        labels.append(predict(x).argmax(dim=1).cpu())
    return torch.cat(labels) if labels else torch.empty(0, dtype=torch.long)


def accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 agreement in percent."""
    return 100.0 * (predicted == labels.cpu()).float().mean().item()
