"""DFME: the forward-difference estimate follows the true gradient, and every probe is a counted query."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from msbench.attacks import AttackContext
from msbench.attacks.dfme import DFME, Generator, forward_difference_gradient, victim_logits
from msbench.defenses import Softmax
from msbench.models import build_model
from msbench.oracle import Oracle
from msbench.training import Recipe

SHAPE = (1, 28, 28)


def smooth(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """A small smooth function of each sample: sum of sin(W x) + 0.5 |x|^2."""
    flat = x.flatten(1)
    return torch.sin(flat @ weights).sum(dim=1) + 0.5 * flat.pow(2).sum(dim=1)


def test_forward_differences_estimate_the_true_gradient():
    generator = torch.Generator().manual_seed(0)
    weights = torch.randn(12, 5, generator=generator, dtype=torch.float64)
    x = torch.randn(4, 3, 2, 2, generator=generator, dtype=torch.float64)
    calls = []

    def loss(points):
        calls.append(len(points))
        return smooth(points, weights)

    estimate, at_x = forward_difference_gradient(loss, x, 2000, 1e-5, generator)
    assert calls == [4 * 2001]
    torch.testing.assert_close(at_x, smooth(x, weights))
    true = torch.autograd.functional.jacobian(lambda v: smooth(v, weights).sum(), x)
    cosine = F.cosine_similarity(estimate.flatten(1), true.flatten(1), dim=1)
    assert cosine.min() > 0.95, cosine
    ratio = estimate.flatten(1).norm(dim=1) / true.flatten(1).norm(dim=1)
    assert ((ratio > 0.8) & (ratio < 1.2)).all(), ratio  # unbiased in size too: the d / m factor
    few, _ = forward_difference_gradient(loss, x, 1, 1e-5, generator)  # one direction: right on average only
    assert F.cosine_similarity(few.flatten(1), true.flatten(1), dim=1).abs().max() < 0.99


def test_logits_are_recovered_up_to_a_constant():
    logits = torch.randn(5, 10)
    recovered = victim_logits(torch.softmax(logits, dim=1))
    torch.testing.assert_close(recovered, logits - logits.mean(dim=1, keepdim=True), atol=1e-5, rtol=0)


class Recorder(Oracle):
    def __init__(self, *args):
        super().__init__(*args)
        self.sent: list[torch.Tensor] = []

    def __call__(self, x):
        self.sent.append(x.detach().clone())
        return super().__call__(x)


def make_model() -> nn.Module:
    return build_model("smallcnn", SHAPE, 10, (0.1307,), (0.3081,))


@pytest.mark.parametrize("budget, directions, generator_steps", [(130, 2, 1), (64, 1, 0), (500, 3, 2)])
def test_every_probe_counts_and_the_budget_is_exact(one_thread, budget, directions, generator_steps):
    torch.manual_seed(0)
    victim = Softmax(make_model()).eval()
    oracle = Recorder(victim, "soft", budget, 10)
    reports = []
    ctx = AttackContext(query_data=lambda: None, seed_data=lambda: None, make_clone=make_model, recipe=Recipe(),
                        device=torch.device("cpu"), seed=0, num_classes=10, input_shape=SHAPE,
                        report=lambda queries, clone: reports.append(queries))
    config = DFME.Config(budget=budget, batch_size=8, directions=directions, generator_steps=generator_steps, clone_steps=2,
                         nz=16, ngf=8, report_every=60)
    attack = DFME(config)
    attack.run(oracle, ctx)
    cost = (generator_steps * (directions + 1) + 2) * 8
    assert attack.iteration_cost() == cost
    sent = torch.cat(oracle.sent)
    assert oracle.queries == len(sent) == (budget // cost) * cost
    assert sent.shape[1:] == SHAPE and sent.min() >= 0 and sent.max() <= 1  # valid images, no clamping needed
    assert reports[-1] == oracle.queries and reports == sorted(reports)
    if budget // cost * cost < budget:
        assert "unspent" in ctx.notes


def test_a_generator_step_raises_the_disagreement(one_thread):
    """The estimated ascent direction, applied to G's output, increases l (the generator's objective)."""
    torch.manual_seed(1)
    victim, clone = Softmax(make_model()).eval(), make_model().eval()
    generator = torch.Generator().manual_seed(0)
    pre = Generator(SHAPE, 16, 8)(torch.randn(6, 16, generator=generator)).detach()

    def minus_l(points):
        with torch.no_grad():
            images = Generator.image(points)
            return -(clone(images) - victim_logits(victim(images))).abs().mean(dim=1)

    estimate, at_x = forward_difference_gradient(minus_l, pre, 200, 1e-3, generator)
    stepped = minus_l(pre - 0.5 * estimate / estimate.flatten(1).norm(dim=1).view(-1, 1, 1, 1))
    assert (stepped < at_x).float().mean() >= 5 / 6  # -l went down: the disagreement went up


def test_the_schedule_at_a_small_budget_decays_where_the_docs_say():
    official = DFME(DFME.Config(budget=100_000))  # 55 iterations of 1,792 queries
    assert official.iteration_cost() == 1792 and official.schedule(55) == [5, 16, 27]  # 10%, 30%, 50% of 55
    held = DFME(DFME.Config(budget=100_000, decay_after=40))
    assert held.schedule(55) == [40]  # the three decays land on iteration 40: one x0.3 there
    assert DFME(DFME.Config(budget=100_000, decay_after=60)).schedule(55) == []  # beyond the run: constant rates
    assert DFME(DFME.Config(milestones=[0.5])).schedule(1000) == [500]


@pytest.mark.parametrize("changes, key", [({"budget": 1000}, "budget"), ({"milestones": [0.5, 1.0]}, "milestones"),
                                          ({"milestones": [0.5, 0.3]}, "milestones"), ({"decay_after": -1}, "decay_after")])
def test_bad_schedule_and_budget_are_one_line_naming_the_key(changes, key):
    with pytest.raises(ValueError, match=rf"^dfme\.{key}: expected "):
        DFME(DFME.Config(**changes))
