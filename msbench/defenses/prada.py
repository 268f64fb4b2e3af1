"""PRADA (Juuti et al., EuroS&P 2019): detection of model extraction by the distribution of the
distances between an account's queries.

Per account and per class the victim predicts, a growing set of queries. A new query's minimum L2
distance to the earlier queries of its class's set is recorded; if it exceeds the class's
threshold the query joins the set and the threshold becomes max(threshold, mean - std of the
set's distances). Benign streams of natural images give distances that look normally
distributed; synthetic queries (small steps around seeds, JBDA) do not. So the recorded distances
of classes with at least ``class_min`` of them are pooled, outliers beyond ``outlier_std``
standard deviations dropped, and once more than ``min_distances`` remain the Shapiro-Wilk
statistic W is computed; the account is flagged when W < ``delta``.

As the authors' code (SSGAalto, ``src/growing_set.py``): the test runs every ``test_every``
queries (the 1st, 11th, 21st, ... of the account), a class's first query enters its set with
distance 0, and std is the population one. Departure: their server keeps answering a flagged
account with shuffled top logits; msbench stops answering it (the issue's threat model), so
queries to detection and the clone kept at that point are what is measured.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import shapiro
from torch import nn

from msbench.defenses.base import VictimContext
from msbench.defenses.detection import DetectionDefense, benign_problem
from msbench.detection.monitor import Monitor, Monitored
from msbench.registry import register_defense


class PradaMonitor(Monitor):
    """One account's growing sets and recorded distances (see the module docstring)."""

    def __init__(self, delta: float, min_distances: int = 100, class_min: int = 10, test_every: int = 10,
                 outlier_std: float = 3.0):
        self.delta, self.min_distances, self.class_min = delta, min_distances, class_min
        self.test_every, self.outlier_std = test_every, outlier_std
        self.sets: dict[int, torch.Tensor] = {}  # class -> (n, D) queries of its growing set
        self.set_distances: dict[int, list[float]] = {}
        self.thresholds: dict[int, float] = {}
        self.distances: dict[int, list[float]] = {}  # class -> every recorded minimum distance
        self.seen = 0
        self.last_w: float | None = None

    def add(self, x: torch.Tensor, label: int) -> None:
        """Record one query (a flattened float image) of predicted class ``label``."""
        if label not in self.sets:
            self.sets[label], self.set_distances[label], self.thresholds[label] = x[None].clone(), [0.0], 0.0
            return
        d = float((self.sets[label] - x).norm(dim=1).min())
        self.distances.setdefault(label, []).append(d)
        if d > self.thresholds[label]:
            self.sets[label] = torch.cat([self.sets[label], x[None]])
            self.set_distances[label].append(d)
            kept = np.asarray(self.set_distances[label])
            self.thresholds[label] = max(self.thresholds[label], float(kept.mean() - kept.std()))

    def pooled(self) -> np.ndarray:
        """The distances the test is run on: classes with at least ``class_min``, outliers dropped."""
        pooled = np.asarray([d for values in self.distances.values() if len(values) >= self.class_min for d in values])
        if len(pooled) == 0:
            return pooled
        return pooled[np.abs(pooled - pooled.mean()) < self.outlier_std * pooled.std()]

    def statistic(self) -> float | None:
        """Shapiro-Wilk's W on the pooled distances; None until more than ``min_distances`` are pooled."""
        pooled = self.pooled()
        return float(shapiro(pooled).statistic) if len(pooled) > self.min_distances else None

    def screen(self, x: torch.Tensor, labels: torch.Tensor) -> int | None:
        flat = x.reshape(len(x), -1).cpu()
        for i, label in enumerate(labels.tolist()):
            self.add(flat[i], int(label))
            tested = self.seen % self.test_every == 0
            self.seen += 1
            if tested:
                self.last_w = self.statistic()
                if self.last_w is not None and self.last_w < self.delta:
                    return i
        return None


class PradaVictim(Monitored):
    def __init__(self, base: nn.Module, config: "Prada.Config"):
        super().__init__(base, config)
        self.delta, self.min_distances, self.class_min = config.delta, config.min_distances, config.class_min
        self.test_every, self.outlier_std = config.test_every, config.outlier_std

    def new_monitor(self) -> PradaMonitor:
        return PradaMonitor(self.delta, self.min_distances, self.class_min, self.test_every, self.outlier_std)


@register_defense("prada")
class Prada(DetectionDefense):
    """PRADA: stops an account once the Shapiro-Wilk W of its queries' minimum distances falls below delta."""

    label = "PRADA"
    paper_claim = ("every prior model extraction attack detected (JBDA-style synthetic queries, Tramer et al.'s), "
                   "with no false positives on benign MNIST and GTSRB streams")
    color = "#882255"
    cost_model = "M_f + O(|G| D) per query + Shapiro-Wilk every 10 queries"

    contract_settings = {"benign_queries": 200}  # the contract's test split holds 400 images

    @dataclass
    class Config:
        delta: float = 0.9  # the authors' code; the paper tunes delta per dataset for no false positives
        min_distances: int = 100  # pooled distances before the first test
        class_min: int = 10  # a class's distances join the pool once it has this many
        test_every: int = 10
        outlier_std: float = 3.0
        benign_users: int = 10
        benign_queries: int = 1000

    @staticmethod
    def check_config(config: "Prada.Config") -> tuple[str, str] | None:
        if not 0.0 < config.delta < 1.0:  # W lies in (0, 1]: delta outside flags every or no account
            return "delta", f"expected a threshold in (0, 1) (Shapiro-Wilk's W lies in (0, 1]), got {config.delta!r}"
        for key in ("min_distances", "class_min", "test_every"):
            if getattr(config, key) < 1:
                return key, f"expected a positive integer, got {getattr(config, key)!r}"
        if config.min_distances < 3:
            return "min_distances", f"expected at least 3 (Shapiro-Wilk needs 3 values), got {config.min_distances!r}"
        if not config.outlier_std > 0:
            return "outlier_std", f"expected a positive number of standard deviations, got {config.outlier_std!r}"
        return benign_problem(config)

    def build(self, base: nn.Module, ctx: VictimContext) -> nn.Module:
        return PradaVictim(base, self.config)
