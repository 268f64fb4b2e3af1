"""Adaptive attackers against detection defenses: a battery attack run through a strategy that
changes the stream a detector sees, not what the attack learns from.

- ``spread``: the attack's queries dealt round-robin over ``accounts`` accounts (each detector
  state sees every k-th query, so a per-account statistic grows k times slower).
- ``interleave``: natural in-distribution images of the attacker's own (the seed data JBDA starts
  from) mixed into every batch, a ``share`` of the budget, so the stream looks like a benign user's;
  their answers are discarded by the wrapped attack (they still cost queries).
- ``blind``: every query sent under a random blinding transform (``msbench.detection.blinding``),
  the attack training on its own images with the answers to their blinded copies: the query
  blinding of SEAT's paper's adaptive evaluation.

Each wraps ``base``, a registered attack with its defaults overridden by ``base_settings`` (the
values its own ``[attacks.BASE]`` table would hold) and this attack's budget, of which
``interleave`` hands it the non-benign part. Against an API without accounts the strategy
still shapes the queries (interleaving and blinding cost what they cost) and spreading is a no-op.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch
from torch import nn

from msbench.attacks.base import Attack, AttackContext
from msbench.config import SuiteError, build
from msbench.detection.accounts import Relay
from msbench.detection.blinding import blind
from msbench.oracle import BudgetExceeded, LabelMode, Oracle
from msbench.registry import ATTACKS, register_attack


class Facade:
    """The oracle the wrapped attack sees: its own budget and count; each batch goes out through ``send``."""

    def __init__(self, oracle: Any, send: Callable[[torch.Tensor], torch.Tensor], budget: int):
        self._oracle, self._send, self._budget, self._asked = oracle, send, budget, 0

    @property
    def queries(self) -> int:
        return self._asked

    @property
    def budget(self) -> int:
        return self._budget

    @property
    def remaining(self) -> int:
        return self._budget - self._asked

    @property
    def label_mode(self) -> LabelMode:
        return self._oracle.label_mode

    @property
    def num_classes(self) -> int:
        return self._oracle.num_classes

    @property
    def input_shape(self) -> tuple[int, int, int] | None:
        return self._oracle.input_shape

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) > self.remaining:
            raise BudgetExceeded(f"{len(x)} queries asked with {self.remaining} of {self._budget} left")
        answers = self._send(x)
        self._asked += len(x)
        return answers


class Adaptive(Attack):
    """A wrapped battery attack behind a query strategy (``send``); see the module docstring."""

    roles = ("surrogate",)  # the wrapped attack may be a pool attack
    passes_per_query = None

    @dataclass
    class Config:
        budget: int = 50000
        base: str = "knockoff"
        base_settings: dict[str, Any] = field(default_factory=dict)  # the wrapped attack's [attacks.BASE] values

    @staticmethod
    def check_config(config: Any) -> tuple[str, str] | None:
        if config.base not in ATTACKS.names() or issubclass(ATTACKS.get(config.base), Adaptive):
            battery = ", ".join(n for n in ATTACKS.names() if not issubclass(ATTACKS.get(n), Adaptive))
            return "base", f"expected a battery attack to wrap ({battery}), got {config.base!r}"
        try:
            base_type = ATTACKS.get(config.base)
            base_type(build(base_type.Config, dict(config.base_settings), "", ""))
        except (SuiteError, ValueError) as bad:
            return "base_settings", " ".join(str(bad).split()).lstrip(": ")
        return None

    def base_budget(self) -> int:
        return self.config.budget

    def wrapped(self) -> tuple[str, ...]:
        return (self.config.base,)

    def sender(self, oracle: Any, ctx: AttackContext) -> Callable[[torch.Tensor], torch.Tensor]:
        raise NotImplementedError

    def run(self, oracle: Oracle, ctx: AttackContext) -> nn.Module:
        base_type = ATTACKS.get(self.config.base)
        settings = build(base_type.Config, dict(self.config.base_settings), "", "")
        base = base_type(replace(settings, budget=self.base_budget()))
        ctx.notes["wraps"] = self.config.base
        return base.run(Facade(oracle, self.sender(oracle, ctx), min(self.base_budget(), oracle.remaining)), ctx)


@register_attack("spread")
class Spread(Adaptive):
    """The wrapped attack's queries dealt round-robin over several accounts."""

    label = "Spread over accounts"

    @dataclass
    class Config(Adaptive.Config):  # the wrapper's settings, and its own
        accounts: int = 4

    @staticmethod
    def check_config(config: Any) -> tuple[str, str] | None:
        if isinstance(config.accounts, bool) or not isinstance(config.accounts, int) or config.accounts < 1:
            return "accounts", f"expected at least 1 account, got {config.accounts!r}"
        return Adaptive.check_config(config)

    def sender(self, oracle: Any, ctx: AttackContext) -> Callable[[torch.Tensor], torch.Tensor]:
        if not isinstance(oracle, Relay):
            return oracle
        accounts = [0] + [oracle.open_account() for _ in range(self.config.accounts - 1)]
        turn = [0]  # whose turn the next query is, across batches

        def send(x: torch.Tensor) -> torch.Tensor:
            owner = (torch.arange(len(x)) + turn[0]) % len(accounts)
            turn[0] = (turn[0] + len(x)) % len(accounts)
            answers = torch.empty(len(x), oracle.num_classes, device=x.device)
            for k, account in enumerate(accounts):
                index = (owner == k).nonzero().flatten()
                if len(index):
                    answers[index.to(x.device)] = oracle(x[index.to(x.device)], account=account).to(x.device)
            return answers
        return send


@register_attack("interleave")
class Interleave(Adaptive):
    """The wrapped attack's queries mixed with natural in-distribution images of the attacker's own."""

    label = "Interleaved benign"

    @dataclass
    class Config(Adaptive.Config):  # the wrapper's settings, and its own
        share: float = 0.5  # of every batch (and of the budget): benign images

    @staticmethod
    def check_config(config: Any) -> tuple[str, str] | None:
        if not 0.0 <= config.share < 1.0:
            return "share", f"expected a share of the budget in [0, 1), got {config.share!r}"
        return Adaptive.check_config(config)

    def base_budget(self) -> int:
        return int(self.config.budget * (1 - self.config.share))

    def sender(self, oracle: Any, ctx: AttackContext) -> Callable[[torch.Tensor], torch.Tensor]:
        pool = ctx.seed_data()
        generator = torch.Generator().manual_seed(ctx.seed_for("interleave.benign"))
        order = torch.randperm(len(pool), generator=generator)
        drawn = [0]
        ratio = self.config.share / (1 - self.config.share)

        def send(x: torch.Tensor) -> torch.Tensor:
            extra = min(int(round(len(x) * ratio)), oracle.remaining - len(x))
            index = order[(torch.arange(extra) + drawn[0]) % len(pool)]
            drawn[0] += extra
            mixed = torch.cat([x, pool.floats(index, x.device)])
            position = torch.randperm(len(mixed), generator=generator).to(x.device)
            answers = oracle(mixed[position])
            back = torch.empty_like(answers)
            back[position] = answers
            return back[:len(x)]
        return send


@register_attack("blind")
class Blind(Adaptive):
    """The wrapped attack's queries each sent under a random blinding transform."""

    label = "Query blinding"

    @dataclass
    class Config(Adaptive.Config):  # the wrapper's settings, and its own
        strength: float = 1.0  # scales every transform's range

    @staticmethod
    def check_config(config: Any) -> tuple[str, str] | None:
        if not config.strength > 0:
            return "strength", f"expected a positive strength, got {config.strength!r}"
        return Adaptive.check_config(config)

    def sender(self, oracle: Any, ctx: AttackContext) -> Callable[[torch.Tensor], torch.Tensor]:
        generator = torch.Generator().manual_seed(ctx.seed_for("blind.transforms"))
        return lambda x: oracle(blind(x, generator, self.config.strength))
