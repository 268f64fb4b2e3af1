"""The stateful threat model: an API that serves accounts, and the attacker's side of it.

``AccountService`` is the deployed API of a detection defense. Every query carries an account;
each account has its own ``Monitor``, which sees the account's queries in order (with the
victim's top-1 class of each) before they are answered. Once a monitor flags its account at some
query, that query and every later one of the account are refused (``AccountStopped``): unanswered
and uncounted. The count, the budget, query validation and the answers stay the plain ``Oracle``'s,
which the service answers through, so a refused query can never reach the ledger.

``Relay`` is what an attack holds: the oracle interface every attack already uses (``oracle(x)``,
``queries``, ``remaining``, ``budget``, ``label_mode``, ...) plus ``open_account()`` and an
``account=`` argument for attacks that spread their queries. An account the service stops is
replaced by a freshly opened one and the refused rest of the batch is sent through it, so the
attack's stream is the one it would send to an undetected API, and the relay writes down what
opening accounts costs: the answered count at every stop and the accounts opened in all.
"""
from __future__ import annotations

import time
from typing import Callable

import torch

from msbench.detection.monitor import Monitor
from msbench.oracle import BudgetExceeded, LabelMode, Oracle, check_query


class AccountStopped(RuntimeError):
    """The service stopped ``account`` at one of this batch's queries: ``answers`` are those of the
    ``answered`` queries before it (counted); the rest were refused, uncounted."""

    def __init__(self, account: int, answers: torch.Tensor, answered: int):
        super().__init__(f"account {account} was stopped by the detection defense after {answered} queries "
                         f"of this batch")
        self.account, self.answers, self.answered = account, answers, answered


class AccountService:
    """The API of a detection defense: ``service(x, account)`` answers through ``oracle`` unless the
    account's monitor flags it. ``classify(x)`` is the victim's top-1 (what PRADA groups by)."""

    def __init__(self, oracle: Oracle, classify: Callable[[torch.Tensor], torch.Tensor],
                 new_monitor: Callable[[], Monitor]):
        self.oracle, self._classify, self._new_monitor = oracle, classify, new_monitor
        self._monitors: dict[int, Monitor] = {}
        self._stopped: set[int] = set()
        self.monitor_seconds, self.screened = 0.0, 0  # the detector's own cost, victim forward excluded

    def open_account(self) -> int:
        account = len(self._monitors)
        self._monitors[account] = self._new_monitor()
        return account

    def stopped(self, account: int) -> bool:
        return account in self._stopped

    def _refusal(self, x: torch.Tensor, account: int, answers: torch.Tensor) -> AccountStopped:
        self._stopped.add(account)
        return AccountStopped(account, answers, len(answers))

    def __call__(self, x: torch.Tensor, account: int) -> torch.Tensor:
        if account not in self._monitors:
            raise KeyError(f"account {account} was never opened")
        nothing = torch.empty(0, self.oracle.num_classes)
        if account in self._stopped:
            raise AccountStopped(account, nothing, 0)
        check_query(x, self.oracle.input_shape)
        if len(x) > self.oracle.remaining:
            raise BudgetExceeded(f"{len(x)} queries asked with {self.oracle.remaining} of {self.oracle.budget} left")
        images = x.detach().to(torch.float32).clamp(0.0, 1.0)
        with torch.no_grad():
            labels = self._classify(images)
        started = time.perf_counter()
        flagged = self._monitors[account].screen(images, labels)
        self.monitor_seconds += time.perf_counter() - started
        self.screened += len(x) if flagged is None else flagged + 1
        if flagged is None:
            return self.oracle(x)
        answers = self.oracle(x[:flagged]) if flagged > 0 else nothing
        raise self._refusal(x, account, answers)


class Relay:
    """The attacker's accounts on an ``AccountService`` (see the module docstring). Account 0 is
    opened for the attacker; ``open_account`` opens more. ``keep`` queries and answers are written
    down until the attacker's own accounts are all stopped (what it keeps when it cannot replace them)."""

    def __init__(self, service: AccountService, keep: bool = True):
        self._service = service
        self._current = {0: service.open_account()}  # the attacker's account -> the service account serving it now
        self._answered = {self._current[0]: 0}
        self.own, self.opened = 1, 1
        self.stops: list[int] = []  # answered queries (all accounts) when each account was stopped
        self._keep = keep
        self.kept_x: list[torch.Tensor] = []
        self.kept_y: list[torch.Tensor] = []

    @property
    def queries(self) -> int:
        return self._service.oracle.queries

    @property
    def budget(self) -> int:
        return self._service.oracle.budget

    @property
    def remaining(self) -> int:
        return self._service.oracle.remaining

    @property
    def label_mode(self) -> LabelMode:
        return self._service.oracle.label_mode

    @property
    def num_classes(self) -> int:
        return self._service.oracle.num_classes

    @property
    def input_shape(self) -> tuple[int, int, int] | None:
        return self._service.oracle.input_shape

    def open_account(self) -> int:
        """A further account of the attacker's own (its cost); returns its id for ``account=``."""
        account = len(self._current)
        self._current[account] = self._service.open_account()
        self._answered[self._current[account]] = 0
        self.own += 1
        self.opened += 1
        return account

    def _record(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self._keep and len(self.stops) < self.own and len(y):
            self.kept_x.append(x[:len(y)].detach().cpu())
            self.kept_y.append(y.detach().cpu())

    def __call__(self, x: torch.Tensor, account: int | None = None) -> torch.Tensor:
        """Answers for every query of ``x``, through the attacker's ``account`` (default: its first)
        and the accounts opened to replace it when the service stops one."""
        account = 0 if account is None else account
        if account not in self._current:
            raise KeyError(f"account {account} was never opened (open_account() opens one)")
        parts = []
        while True:
            real = self._current[account]
            try:
                answers = self._service(x, real)
            except AccountStopped as stop:
                answers = stop.answers
                self._answered[real] += stop.answered
                parts.append(answers)
                self._record(x, answers)
                self.stops.append(self.queries)
                if self._answered[real] == 0:
                    raise RuntimeError("the detection defense refused a fresh account's first query: "
                                       "no account can be served") from stop
                x = x[stop.answered:]
                self._current[account] = self._service.open_account()
                self._answered[self._current[account]] = 0
                self.opened += 1
                if len(x) == 0:
                    break
                continue
            self._answered[real] += len(answers)
            parts.append(answers)
            self._record(x, answers)
            break
        return torch.cat([p.to(parts[-1].device) for p in parts]) if len(parts) > 1 else parts[0]

    @property
    def stop_queries(self) -> int | None:
        """Answered queries when the attacker's own accounts were all stopped; None if they never were."""
        return self.stops[self.own - 1] if len(self.stops) >= self.own else None
