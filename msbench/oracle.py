"""The black-box API an attack sees: answers, a query counter and a budget, nothing else."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

LABEL_MODES = ("soft", "hard")


class BudgetExceeded(RuntimeError):
    """Raised when a query batch would take the attacker past its budget; nothing is answered."""


class NotProbabilities(ValueError):
    """A defense answered something that is not a batch of probability vectors."""


def check_probabilities(p: torch.Tensor, tolerance: float = 1e-5) -> None:
    """Raise unless every row is finite, non-negative and sums to 1 (within ``tolerance``)."""
    if not torch.isfinite(p).all():
        raise NotProbabilities("the defense answered non-finite values")
    if (p < 0).any() or ((p.sum(dim=1) - 1).abs() > tolerance).any():
        raise NotProbabilities(f"the defense's answers are not probability vectors (row sums {p.sum(dim=1).min():.6f}..{p.sum(dim=1).max():.6f})")


class Oracle:
    """Answers queries with what the deployed API returns.

    Soft mode returns the defense's probability vectors, hard mode a one-hot of their top-1.
    The defended model is held in a closure, not an attribute, so an attack gets no parameters
    or gradients through the oracle: answers are detached tensors computed under ``no_grad``.
    """

    __slots__ = ("_answer", "_observe", "label_mode", "budget", "queries", "num_classes")

    def __init__(self, predict: Callable[[torch.Tensor], torch.Tensor], label_mode: str, budget: int, num_classes: int,
                 observe: Callable[[torch.Tensor, torch.Tensor], None] | None = None):
        """``observe(queries, probabilities)``, when given, sees every answered batch (before the
        hard-label step); the runner measures the defense's distortion with it."""
        if label_mode not in LABEL_MODES:
            raise ValueError(f"label_mode must be one of {LABEL_MODES}, got '{label_mode}'")

        @torch.no_grad()
        def answer(x: torch.Tensor) -> torch.Tensor:
            return predict(x).detach()

        self._answer = answer
        self._observe = observe
        self.label_mode = label_mode
        self.budget = budget
        self.queries = 0
        self.num_classes = num_classes

    @property
    def remaining(self) -> int:
        return self.budget - self.queries

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Answer a batch of float images in [0, 1]; every image counts as one query."""
        if x.dim() != 4:
            raise ValueError(f"queries must be a batch (N, C, H, W), got shape {tuple(x.shape)}")
        if len(x) > self.remaining:
            raise BudgetExceeded(f"{len(x)} queries asked with {self.remaining} of {self.budget} left")
        self.queries += len(x)
        probabilities = self._answer(x.detach().clamp(0.0, 1.0))
        check_probabilities(probabilities)
        if self._observe is not None:
            self._observe(x.detach().clamp(0.0, 1.0), probabilities)
        if self.label_mode == "hard":
            return F.one_hot(probabilities.argmax(dim=1), self.num_classes).to(probabilities.dtype)
        return probabilities
