"""MAD: answers are probability vectors in the epsilon ball that turn the surrogate's real gradient away."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from msbench.data import DatasetSpec, ImageData
from msbench.defenses import OutputDefense, Softmax, VictimContext
from msbench.defenses.mad import MAD
from msbench.models import build_model, last_linear
from msbench.registry import DEFENSES
from msbench.training import Recipe

SHAPE = (1, 16, 16)


def context(num_classes: int, seed: int = 0) -> VictimContext:
    spec = DatasetSpec("synthetic", SHAPE, num_classes, (0.5,), (0.25,), lambda root, split: None)
    data = ImageData(torch.zeros(4, *SHAPE, dtype=torch.uint8), torch.zeros(4, dtype=torch.long), "synthetic")
    return VictimContext(spec, "smallcnn", data, data, Recipe(epochs=1), torch.device("cpu"), seed,
                         make_model=lambda: build_model("smallcnn", SHAPE, num_classes, spec.mean, spec.std))


def base_victim(ctx: VictimContext, sharpness: float = 15.0) -> Softmax:
    """A random victim with peaked answers (a random net's own are near uniform)."""
    torch.manual_seed(ctx.seed + 1)
    base = Softmax(ctx.make_model()).eval()
    with torch.no_grad():
        last_linear(base).weight.mul_(sharpness)
    return base


def defend(num_classes: int, **config) -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor]:
    ctx = context(num_classes)
    base = base_victim(ctx)
    defended = MAD(MAD.Config(**config)).build(base, ctx).eval()
    x = torch.rand(16, *SHAPE, generator=torch.Generator().manual_seed(3))
    return defended, base, x


def gradient_deviation(surrogate: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """||G^T c/|G^T c| - G^T y/|G^T y|||^2 for one input, G from autograd on a copy of the last linear weight."""
    layer = last_linear(surrogate)
    saved = layer.weight
    weight = saved.detach().clone().requires_grad_(True)
    layer.weight = torch.nn.Parameter(weight)
    try:
        log_p = F.log_softmax(surrogate(x[None]), dim=1)[0]
        G = torch.stack([torch.autograd.grad(-log_p[k], layer.weight, retain_graph=True)[0].flatten()
                         for k in range(len(log_p))])
    finally:
        layer.weight = saved
    u, v = candidates @ G, y @ G
    return (u / u.norm(dim=1, keepdim=True) - v / v.norm()).pow(2).sum(dim=1)


@pytest.mark.parametrize("strategy", ["extreme", "argmax"])
@pytest.mark.parametrize("num_classes", [10, 12])
def test_answers_are_probabilities_that_spend_the_budget(strategy, num_classes):
    epsilon = 0.5
    defended, base, x = defend(num_classes, epsilon=epsilon, strategy=strategy)
    with torch.no_grad():
        y, out = base(x), defended(x)
    assert (out >= 0).all() and torch.allclose(out.sum(dim=1), torch.ones(len(x)), atol=1e-5)
    moved = (out - y).abs().sum(dim=1)
    assert (moved <= epsilon + 1e-5).all()
    if strategy == "extreme":  # y* = e_k, the one class that gains: the move is min(eps, ||y - e_k||_1)
        k = (out - y).argmax(dim=1)
        room = 2 * (1 - y.gather(1, k[:, None])[:, 0])
        assert torch.allclose(moved, room.clamp(max=epsilon), atol=1e-5)
    else:
        assert (moved > 0).all()


def test_extreme_picks_the_vertex_of_largest_gradient_deviation():
    defended, base, x = defend(10, epsilon=0.5, strategy="extreme")
    with torch.no_grad():
        y, out = base(x), defended(x)
    vertices = torch.eye(10)
    chosen = (out - y).argmax(dim=1)
    for i in range(len(x)):
        scores = gradient_deviation(defended.surrogate, x[i], y[i], torch.cat([vertices, out[i:i + 1], y[i:i + 1]]))
        assert scores[-1] < 1e-8  # y deviates from itself by nothing
        assert scores[-2] > 1e-3  # the answer turns the attacker's gradient
        assert scores[chosen[i]] >= scores[:10].max() - 1e-5


def test_l2_objective_option_picks_the_least_likely_class():
    defended, base, x = defend(10, epsilon=0.5, strategy="extreme", objective="l2")
    with torch.no_grad():
        y, out = base(x), defended(x)
    assert torch.equal((out - y).argmax(dim=1), y.argmin(dim=1))


@pytest.mark.parametrize("num_classes", [10, 12])
def test_argmax_keeps_top1_and_answers_a_uniform_set(num_classes):
    defended, base, x = defend(num_classes, epsilon=2.0, strategy="argmax")  # a budget of 2 answers y* itself
    with torch.no_grad():
        y, out = base(x), defended(x)
    assert torch.equal(out.argmax(dim=1), y.argmax(dim=1))
    for i in range(len(x)):
        members = out[i] > 1e-6
        level = out[i][members & (torch.arange(num_classes) != y[i].argmax())]
        assert members[y[i].argmax()] and torch.allclose(level, torch.full_like(level, 1 / members.sum().item()), atol=1e-4)
        scores = gradient_deviation(defended.surrogate, x[i], y[i], torch.stack([out[i], y[i]]))
        assert scores[0] > 1e-3 and scores[1] < 1e-8
    assert (out > 1e-6).sum(dim=1).float().mean() > 1  # sets of several classes, not k1 alone


def test_argmax_exhaustive_set_is_best_by_real_gradients():
    defended, base, x = defend(6, epsilon=2.0, strategy="argmax")
    with torch.no_grad():
        y, out = base(x[:4]), defended(x[:4])
    for i in range(4):
        k1 = int(y[i].argmax())
        sets = torch.tensor([[(c >> k) & 1 for k in range(6)] for c in range(64) if (c >> k1) & 1], dtype=torch.float32)
        sets[:, k1] += 1e-5
        candidates = sets / sets.sum(dim=1, keepdim=True)
        scores = gradient_deviation(defended.surrogate, x[i], y[i], torch.cat([candidates, out[i:i + 1]]))
        assert scores[-1] >= scores[:-1].max() - 1e-5


@pytest.mark.parametrize("strategy,num_classes", [("extreme", 10), ("argmax", 10), ("extreme", 16), ("argmax", 11),
                                                  ("argmax", 16), ("argmax", 50)])  # 50: the 1,024-candidate cap stops a round
def test_fast_form_equals_reference(strategy, num_classes):
    ctx = context(num_classes, seed=2)
    base = base_victim(ctx, sharpness=8.0)
    x = torch.rand(8 if num_classes > 16 else 16, *SHAPE, generator=torch.Generator().manual_seed(5))
    answers = {}
    for implementation in ("fast", "reference"):
        defended = MAD(MAD.Config(epsilon=0.4, strategy=strategy, implementation=implementation)).build(base, ctx).eval()
        with torch.no_grad():
            answers[implementation] = defended(x)
    assert torch.allclose(answers["fast"], answers["reference"], atol=1e-6)
    assert not torch.allclose(answers["fast"], base(x), atol=1e-3)  # the defense did change the answers


def test_surrogate_is_seeded_frozen_and_stays_in_eval_mode():
    ctx = context(10)
    base = base_victim(ctx)
    first, second = (MAD().build(base, ctx) for _ in range(2))
    assert all(torch.equal(a, b) for a, b in zip(first.surrogate.state_dict().values(), second.surrogate.state_dict().values()))
    first.train()
    assert not first.surrogate.training and first.base.training
    assert not any(p.requires_grad for p in first.surrogate.parameters())


def test_registered_with_tunable_epsilon_and_config_checks():
    mad = DEFENSES.get("mad")
    assert issubclass(mad, OutputDefense) and mad.default_base == "vanilla" and mad.tunable == "epsilon"
    assert list(mad.tunable_grid) == sorted(mad.tunable_grid, reverse=True)
    assert mad.check_config(mad.Config()) is None
    assert mad.check_config(mad.Config(epsilon=-1.0))[0] == "epsilon"
    for key, value in (("strategy", "vertex"), ("implementation", "slow")):  # closed vocabularies: refused on construction
        with pytest.raises(ValueError, match=f"mad: {key}: expected one of '.*', got '{value}'"):
            mad(mad.Config(**{key: value}))
