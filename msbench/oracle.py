"""The black-box API an attack sees: answers, a query counter and a budget, nothing else.

What the oracle enforces (see "Threat model" in docs/ARCHITECTURE.md): every image counts as one
query; a batch that would pass the budget is refused whole; a query that is not a batch of float
images of the victim's input shape is refused (``InvalidQuery``) before it is counted or answered;
answers are probability vectors (soft) or one-hots (hard), detached and computed under
``no_grad``. The count and the budget are read-only for the attack: they live in the runner's
``QueryLedger`` and in closures, not in attributes the attack can assign, and the runner records
the count from its own ledger, not from the oracle.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, Literal, get_args

import torch
import torch.nn.functional as F

from msbench.compute import full_precision
from msbench.config import not_one_of

LabelMode = Literal["soft", "hard"]
"""What the oracle answers: probability vectors (soft) or one-hot top-1 vectors (hard)."""
LABEL_MODES: tuple[LabelMode, ...] = get_args(LabelMode)


class BudgetExceeded(RuntimeError):
    """Raised when a query batch would take the attacker past its budget; nothing is answered."""


class OracleClosed(RuntimeError):
    """A query to the oracle of a cell that has finished: an oracle answers only while its own cell
    runs, so an oracle an attack kept (in a module global, say) cannot answer, or be charged, later."""


class InvalidQuery(ValueError):
    """The attack sent something that is not a batch of float images of the victim's input shape;
    the fault is the attack's, and nothing was counted or answered."""


class NotProbabilities(ValueError):
    """A defense answered something that is not a batch of probability vectors."""


def check_probabilities(p: torch.Tensor, tolerance: float = 1e-5) -> None:
    """Raise unless every row is finite, non-negative and sums to 1 (within ``tolerance``)."""
    if not torch.isfinite(p).all():
        raise NotProbabilities("the defense answered non-finite values")
    if (p < 0).any() or ((p.sum(dim=1) - 1).abs() > tolerance).any():
        raise NotProbabilities(f"the defense's answers are not probability vectors (row sums "
                               f"{p.sum(dim=1).min():.6f}..{p.sum(dim=1).max():.6f})")


def check_query(x: Any, input_shape: tuple[int, int, int] | None = None) -> None:
    """Raise ``InvalidQuery`` unless ``x`` is a finite float batch (N, C, H, W) of ``input_shape``."""
    expected = f"(N, {', '.join(map(str, input_shape))})" if input_shape else "(N, C, H, W)"
    if not isinstance(x, torch.Tensor):
        raise InvalidQuery(f"queries must be a torch.Tensor of float images {expected} in [0, 1], got "
                           f"{type(x).__name__}")
    if not x.is_floating_point():
        raise InvalidQuery(f"queries must be float images in [0, 1], got dtype {x.dtype}"
                           + (" (divide uint8 images by 255)" if x.dtype == torch.uint8 else ""))
    if x.dim() != 4:
        raise InvalidQuery(f"queries must be a batch {expected}, got shape {tuple(x.shape)}")
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        raise InvalidQuery(f"queries must have the victim's input shape {expected}, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise InvalidQuery(f"queries contain NaN or infinite values ({int((~torch.isfinite(x)).sum())} of {x.numel()})")


class QueryLedger:
    """The runner's count of the queries an oracle answered. The runner makes it, hands it to the
    oracle and reads it after the attack; the attack is only handed the oracle."""

    __slots__ = ("queries",)

    def __init__(self) -> None:
        self.queries = 0


class Oracle:
    """Answers queries with what the deployed API returns.

    Soft mode returns the defense's probability vectors, hard mode a one-hot of their top-1.
    The defended model, the count and the budget are held in closures, not attributes: an attack
    gets no parameters or gradients through the oracle, and ``queries``, ``budget`` and
    ``remaining`` are read-only properties (assigning them raises ``AttributeError``).
    ``input_shape`` (C, H, W), when given, is the only image shape accepted.
    """

    __slots__ = ("_call", "_facts", "_close")
    _SEALED = frozenset({"_call", "_facts", "_close"})

    def __init__(self, predict: Callable[[torch.Tensor], torch.Tensor], label_mode: LabelMode, budget: int,
                 num_classes: int,
                 input_shape: tuple[int, int, int] | None = None, ledger: QueryLedger | None = None,
                 observe: Callable[[torch.Tensor, torch.Tensor], None] | None = None):
        """``observe(queries, probabilities)``, when given, sees every answered batch (before the
        hard-label step); the runner measures the defense's distortion with it."""
        if label_mode not in LABEL_MODES:
            raise ValueError(f"label_mode: {not_one_of(LABEL_MODES, label_mode)}")
        ledger = ledger if ledger is not None else QueryLedger()
        shape = tuple(input_shape) if input_shape is not None else None
        facts = {"label_mode": label_mode, "budget": int(budget), "num_classes": num_classes, "input_shape": shape}
        state = {"open": True}

        @torch.no_grad()
        def call(x: torch.Tensor) -> torch.Tensor:
            if not state["open"]:
                raise OracleClosed("this oracle's cell has finished; an oracle answers only while its own cell runs")
            check_query(x, shape)
            remaining = facts["budget"] - ledger.queries
            if len(x) > remaining:
                raise BudgetExceeded(f"{len(x)} queries asked with {remaining} of {facts['budget']} left")
            if len(x) == 0:
                return torch.empty(0, num_classes, device=x.device)
            ledger.queries += len(x)
            x = x.detach().to(torch.float32).clamp(0.0, 1.0)
            probabilities = predict(x).detach()
            check_probabilities(probabilities)
            if observe is not None:
                observe(x, probabilities)
            if label_mode == "hard":
                return F.one_hot(probabilities.argmax(dim=1), num_classes).to(probabilities.dtype)
            return probabilities

        object.__setattr__(self, "_call", call)
        object.__setattr__(self, "_facts", lambda: (ledger.queries, dict(facts)))
        object.__setattr__(self, "_close", lambda: state.update(open=False))

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._SEALED or isinstance(getattr(type(self), name, None), property):
            raise AttributeError(f"the oracle's '{name}' is read-only")
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        if name in self._SEALED or isinstance(getattr(type(self), name, None), property):
            raise AttributeError(f"the oracle's '{name}' is read-only")
        object.__delattr__(self, name)

    @property
    def queries(self) -> int:
        return self._facts()[0]

    @property
    def budget(self) -> int:
        return self._facts()[1]["budget"]

    @property
    def remaining(self) -> int:
        queries, facts = self._facts()
        return facts["budget"] - queries

    @property
    def label_mode(self) -> LabelMode:
        return self._facts()[1]["label_mode"]

    @property
    def num_classes(self) -> int:
        return self._facts()[1]["num_classes"]

    @property
    def input_shape(self) -> tuple[int, int, int] | None:
        return self._facts()[1]["input_shape"]

    def close(self) -> None:
        """Stop answering for good (the runner calls it when the cell's attack returns or fails);
        later queries raise ``OracleClosed`` and are not counted."""
        self._close()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Answer a batch of float images in [0, 1] (values outside are clamped); every image
        counts as one query. Raises ``InvalidQuery`` or ``BudgetExceeded`` without counting.
        The deployed victim answers in its own precision: never under the attacker's training autocast."""
        with full_precision(x) if isinstance(x, torch.Tensor) else nullcontext():  # a non-tensor is refused inside
            return self._call(x)
