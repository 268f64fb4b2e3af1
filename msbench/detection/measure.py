"""What a detection cell measures, beside the clone: when the attacker's accounts were stopped,
what it keeps, how many accounts the whole budget takes, false positives on benign users, and
the monitor's cost per query.

A detector changes no answer, so the attack's stream up to a stop is the one it sends to an
undetected API; the relay replaces every stopped account and lets the attack finish, which gives
``accounts_needed`` in the same run. What the attacker *keeps* when its own accounts are all
stopped (one account, unless an adaptive attack opened more) is the clone trained, with the
attack's recipe, on the queries answered before that stop: the cell's ``clone_acc`` is that
clone's, so every table and the worst case treat a flagged account as stopped at the flag;
``clone_unstopped`` is the attack's own clone, trained on the whole budget over all the
accounts it needed.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import torch
from torch import nn

from msbench.attacks.base import AttackContext, training_targets
from msbench.data import ImageData
from msbench.detection.accounts import AccountService, Relay
from msbench.detection.monitor import Monitored, find_monitored
from msbench.oracle import Oracle
from msbench.seeds import derive_seed
from msbench.training import fit

FIELDS = ("attacker_accounts", "flag_queries", "stop_queries", "accounts_needed", "clone_unstopped", "benign_fpr",
          "benign_users", "benign_queries", "monitor_ms")
"""The record's detection fields (NaN in the tables for cells of other defenses)."""


def _classify(victim: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: victim(x).argmax(dim=1)


def benign_rate(monitored: Monitored, victim: nn.Module, test: ImageData, users: int, queries: int, seed: int,
                device: torch.device, key: str, batch_size: int = 50) -> tuple[float, float]:
    """Percent of ``users`` benign accounts stopped, each a stream of ``queries`` distinct test
    images in a random order of its own, sent in batches of ``batch_size``; and the monitor's
    milliseconds per query on them. ``key`` names the setting in the error for a stream longer than the split."""
    if queries > len(test):
        raise ValueError(f"{key}: {queries} queries per benign user is longer than the test split ({len(test)} images)")
    flagged, seconds, screened = 0, 0.0, 0
    classify = _classify(victim)
    for user in range(users):
        order = torch.randperm(len(test), generator=torch.Generator().manual_seed(
            derive_seed(seed, f"benign.{user}")))[:queries]
        monitor = monitored.new_monitor()
        for start in range(0, queries, batch_size):
            x = test.floats(order[start:start + batch_size], device)
            with torch.no_grad():
                labels = classify(x)
            started = time.perf_counter()
            hit = monitor.screen(x, labels)
            seconds += time.perf_counter() - started
            screened += len(x)
            if hit is not None:
                flagged += 1
                break
    return 100.0 * flagged / users, 1000.0 * seconds / max(1, screened)


class Watch:
    """One detection cell: the service over the runner's oracle, the relay the attack holds, and
    after the attack the clone the attacker keeps and the record's detection fields."""

    def __init__(self, monitored: Monitored, victim: nn.Module, oracle: Oracle):
        self.monitored, self.victim = monitored, victim
        self.service = AccountService(oracle, _classify(victim), monitored.new_monitor)
        self.relay = Relay(self.service)

    def kept_clone(self, clone: nn.Module, ctx: AttackContext, label_mode: str) -> nn.Module:
        """The clone the attacker keeps: trained on what was answered before its own accounts were
        all stopped, or the attack's clone when they never were."""
        if self.relay.stop_queries is None:
            return clone
        if not self.relay.kept_x:
            return ctx.new_clone("detection.kept").eval()  # stopped before any answer: an untrained clone
        x, y = torch.cat(self.relay.kept_x), torch.cat(self.relay.kept_y)
        return fit(ctx.new_clone("detection.kept"), x, training_targets(y, label_mode), ctx.recipe, device=ctx.device,
                   seed=ctx.seed_for("detection.kept"), desc="clone kept at the stop").eval()

    def facts(self, test: ImageData, seed: int, device: torch.device, defense_name: str,
              clone_unstopped: float) -> dict[str, Any]:
        """The record's detection fields (``FIELDS``)."""
        users, queries = self.monitored.benign_users, self.monitored.benign_queries
        fpr, benign_ms = benign_rate(self.monitored, self.victim, test, users, queries,
                                     derive_seed(seed, "detection.benign"), device,
                                     f"defenses.{defense_name}.benign_queries")
        attack_ms = 1000.0 * self.service.monitor_seconds / max(1, self.service.screened)
        nan = float("nan")
        return {"attacker_accounts": self.relay.own,
                "flag_queries": self.relay.stops[0] if self.relay.stops else nan,
                "stop_queries": self.relay.stop_queries if self.relay.stop_queries is not None else nan,
                "accounts_needed": self.relay.opened, "clone_unstopped": clone_unstopped,
                "benign_fpr": fpr, "benign_users": users, "benign_queries": queries,
                "monitor_ms": attack_ms if self.service.screened else benign_ms}


def watch(victim: nn.Module, oracle: Oracle) -> Watch | None:
    """A detection cell's watch when the deployed victim contains a detection defense; else None."""
    monitored = find_monitored(victim)
    return Watch(monitored, victim, oracle) if monitored is not None else None
