"""ActiveThief: the budget is split across rounds exactly, and each round queries what its strategy says."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from msbench.attacks import AttackContext
from msbench.attacks.activethief import ActiveThief, clone_probabilities, entropy_selection, kcenter_selection, round_sizes
from msbench.data import ImageData
from msbench.defenses import Softmax
from msbench.models import build_model
from msbench.oracle import Oracle
from msbench.training import Recipe

SHAPE = (1, 28, 28)


def make_model() -> nn.Module:
    return build_model("smallcnn", SHAPE, 10, (0.1307,), (0.3081,))


class Recorder(Oracle):
    def __init__(self, *args):
        super().__init__(*args)
        self.sent: list[torch.Tensor] = []

    def __call__(self, x):
        self.sent.append(x.detach().clone())
        return super().__call__(x)


def attack(strategy: str, budget: int = 60, rounds: int = 2):
    torch.manual_seed(0)
    victim = Softmax(make_model()).eval()
    generator = torch.Generator().manual_seed(4)
    pool = ImageData(torch.randint(0, 256, (150, *SHAPE), dtype=torch.uint8, generator=generator), torch.zeros(150, dtype=torch.long))
    oracle = Recorder(victim, "soft", budget, 10)
    reports: list[tuple[int, nn.Module]] = []
    ctx = AttackContext(query_data=lambda: pool, seed_data=lambda: pool, make_clone=make_model,
                        recipe=Recipe(epochs=2, lr=0.05, batch_size=16), device=torch.device("cpu"), seed=0, num_classes=10,
                        report=lambda queries, clone: reports.append((queries, copy.deepcopy(clone))))
    ActiveThief(ActiveThief.Config(budget=budget, strategy=strategy, rounds=rounds, initial_fraction=0.2)).run(oracle, ctx)
    return pool, oracle, reports


def test_round_sizes_spend_the_budget():
    assert round_sizes(100, 0.1, 3) == [10, 30, 30, 30]
    assert round_sizes(101, 0.1, 4) == [10, 22, 22, 22, 25]
    assert sum(round_sizes(7, 0.5, 10)) == 7


@pytest.mark.parametrize("strategy", ["entropy", "kcenter", "random"])
def test_budget_is_spent_exactly_on_distinct_images(one_thread, strategy):
    pool, oracle, reports = attack(strategy, budget=61, rounds=3)
    sent = torch.cat(oracle.sent)
    assert oracle.queries == len(sent) == 61
    assert len(torch.unique(sent.flatten(1), dim=0)) == 61  # never the same image twice
    assert [q for q, _ in reports] == [12, 28, 44, 61]  # one clone per round for the budget curve


def test_entropy_rounds_query_the_clones_most_uncertain_images(one_thread):
    pool, oracle, reports = attack("entropy")
    sent = [torch.cat(oracle.sent[:1]), torch.cat(oracle.sent[1:2])]  # initial set, round 1 (one batch each)
    assert [len(s) for s in sent] == [12, 24]
    probabilities = clone_probabilities(reports[0][1], pool.images, torch.device("cpu"))
    entropy = -(probabilities * probabilities.clamp_min(1e-12).log()).sum(dim=1)
    floats = pool.images.float().div(255.0).flatten(1)
    index = lambda batch: torch.cdist(batch.flatten(1), floats).argmin(dim=1)  # noqa: E731
    initial, chosen = index(sent[0]), index(sent[1])
    others = torch.ones(len(pool), dtype=torch.bool)
    others[initial] = False
    others[chosen] = False
    assert entropy[chosen].min() >= entropy[others].max()


def test_kcenter_matches_a_naive_greedy_core_set():
    generator = torch.Generator().manual_seed(0)
    candidates, centres = torch.rand(40, 3, generator=generator), torch.rand(5, 3, generator=generator)
    picked, chosen = [], centres.clone()
    for _ in range(6):
        distance = torch.cdist(candidates, chosen).min(dim=1).values
        distance[picked] = -1
        picked.append(int(distance.argmax()))
        chosen = torch.cat([chosen, candidates[picked[-1:]]])
    assert kcenter_selection(candidates, centres, 6, chunk=2).tolist() == picked


def test_entropy_selection_takes_the_most_uncertain_rows():
    probabilities = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.9, 0.1], [0.6, 0.4]])
    assert entropy_selection(probabilities, 2).tolist() == [1, 3]


def test_bad_strategy_is_refused():
    with pytest.raises(ValueError, match="strategy: expected one of 'entropy', 'kcenter', 'random', got 'dfal'"):
        ActiveThief(ActiveThief.Config(strategy="dfal"))
