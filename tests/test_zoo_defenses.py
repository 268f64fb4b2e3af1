"""The defense zoo: each output defense against its paper's equation on hand-worked vectors, its
answers probability vectors, the top-1 kept where the method promises it, and its tunable setting
changing its answers. Numbers marked "by hand" were worked out on paper from the equations."""
from __future__ import annotations

import math

import pytest
import torch

from msbench.data import DatasetSpec, ImageData
from msbench.defenses import VictimContext
from msbench.defenses.base import OutputDefense, Softmax
from msbench.defenses.dcp import dcp
from msbench.defenses.grad2 import (fast_redirect, fast_scores, reference_redirect, reference_scores)
from msbench.defenses.label_only import one_hot_top1
from msbench.defenses.modelguard_s import build_codebooks, quantise
from msbench.defenses.modelguard_w import LOG_OFFSET, modelguard_w
from msbench.defenses.random_noise import RandomNoiseVictim
from msbench.defenses.reverse_sigmoid import reverse_sigmoid
from msbench.defenses.rounding import rounded
from msbench.defenses.topk import top_k
from msbench.models import build_model, last_linear
from msbench.oracle import check_probabilities
from msbench.registry import DEFENSES
from msbench.timing.cost import defense_cost
from msbench.training import Recipe

SHAPE = (1, 16, 16)
ZOO = ["reverse_sigmoid", "rounding", "topk", "label_only", "random_noise", "grad2", "modelguard_w", "modelguard_s", "dcp"]
ARGMAX_PRESERVING = ["topk", "label_only", "modelguard_w", "modelguard_s"]  # rounding ties (and zeroes) classes
t = lambda *rows: torch.tensor(rows, dtype=torch.float64)  # noqa: E731


def random_answers(n: int = 64, k: int = 10, seed: int = 0, sharpness: float = 3.0) -> torch.Tensor:
    return torch.softmax(sharpness * torch.randn(n, k, generator=torch.Generator().manual_seed(seed)), dim=1)


# -- hand-worked cases ------------------------------------------------------------------------------

def test_reverse_sigmoid_matches_hand_worked_vectors():
    # gamma = 1 makes sigmoid(logit y) = y, so y - r = (1 - beta) y + beta / 2, by hand:
    y = t([0.7, 0.2, 0.1])
    assert torch.allclose(reverse_sigmoid(y, beta=0.5, gamma=1.0), t([0.48, 0.28, 0.24]), atol=1e-12)
    # beta = 3: (-1.2, 2.1, 2.4) / 2 + ... = (0.1, 1.1, 1.3), clipped to (0.1, 1, 1), over 2.1
    assert torch.allclose(reverse_sigmoid(y, beta=3.0, gamma=1.0), t([0.1, 1.0, 1.0]) / 2.1, atol=1e-12)


def test_reverse_sigmoid_modelguard_setting_against_the_formula():
    y = random_answers().double()
    beta, gamma = 0.008, 0.2
    sig = 1 / (1 + (y.clamp(1e-12, 1 - 1e-12) / (1 - y.clamp(1e-12, 1 - 1e-12))) ** -gamma)  # sigmoid(gamma log(y/(1-y)))
    expected = (y - beta * (sig - 0.5)).clamp(0, 1)
    expected = expected / expected.sum(dim=1, keepdim=True)
    assert torch.allclose(reverse_sigmoid(y, beta, gamma), expected, atol=1e-12)
    assert not torch.allclose(reverse_sigmoid(y, beta, gamma), y, atol=1e-4)


def test_dcp_gates_by_confidence():
    # unconfident (max 0.7 < beta = 0.9): alpha = 1, and with gamma = 1, y - 0.9 (y - 1/2) = 0.1 y + 0.45, by hand
    y = t([0.7, 0.2, 0.1])
    assert torch.allclose(dcp(y, beta=0.9, gamma=1.0, nu=1000.0), t([0.52, 0.47, 0.46]) / 1.45, atol=1e-12)
    confident = t([0.95, 0.03, 0.02])  # alpha = 1 / (1 + e^50): the answer is y
    assert torch.allclose(dcp(confident, beta=0.9, gamma=1.0, nu=1000.0), confident, atol=1e-15)


def test_rounding_renormalises():
    y = t([0.12345, 0.54321, 0.33334])
    assert torch.allclose(rounded(y, 2), t([0.12, 0.54, 0.33]) / 0.99, atol=1e-12)  # by hand
    assert torch.allclose(rounded(t([0.4, 0.35, 0.25]), 0), t([1, 1, 1]) / 3)  # nothing left: uniform


def test_topk_and_label_only():
    y = t([0.1, 0.5, 0.15, 0.25])
    assert torch.allclose(top_k(y, 2), t([0, 0.5, 0, 0.25]) / 0.75, atol=1e-12)
    assert torch.equal(one_hot_top1(y), t([0, 1, 0, 0]))


def test_random_noise_moves_half_epsilon_to_one_non_top1_class():
    y = random_answers(2000, 5, sharpness=2.0)
    victim = RandomNoiseVictim(lambda x: x, epsilon=0.4, seed=0)
    answer = victim(y)
    moved = answer - 0.8 * y  # (1 - eps/2) y + (eps/2) e_j, so what is left is 0.2 e_j
    assert torch.allclose(moved.sort(dim=1).values[:, -1], torch.full((len(y),), 0.2), atol=1e-6)
    assert torch.allclose(moved.sort(dim=1).values[:, :-1], torch.zeros(len(y), 4), atol=1e-6)
    j = moved.argmax(dim=1)
    assert not (j == y.argmax(dim=1)).any()
    counts = torch.bincount((j - y.argmax(dim=1)) % 5, minlength=5)  # every other class is drawn, evenly
    assert counts[0] == 0 and counts[1:].min() > 400
    assert torch.allclose((answer - y).abs().sum(dim=1), 0.4 * (1 - y.gather(1, j[:, None])[:, 0]), atol=1e-5)
    victim.restart_randomness()
    assert torch.equal(victim(y), answer)  # seeded: the same answers from the seed
    assert not torch.equal(victim(y), answer)


def test_grad2_greedy_matches_hand_worked_step():
    # receiver: class 2 (lowest score); can give min(0.8/2, 1 - 0.2) = 0.4, taken from class 1 (all 0.3), then class 0 (0.1)
    y, scores = t([0.5, 0.3, 0.2]), t([0.0, 2.0, -1.0])
    for redirect in (fast_redirect, reference_redirect):
        assert torch.allclose(redirect(y, scores, 0.8), t([0.4, 0.0, 0.6]), atol=1e-12)
        assert torch.allclose(redirect(y, scores, 0.2), t([0.5, 0.2, 0.3]), atol=1e-12)


def test_grad2_greedy_is_optimal_for_its_linear_objective():
    y = random_answers(32, 6).double()
    scores = torch.randn(32, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    answer = fast_redirect(y, scores, 0.5)
    assert ((answer - y).abs().sum(dim=1) <= 0.5 + 1e-6).all()
    # any other point of the feasible set (y mixed towards a random simplex point, within the ball) scores no lower
    for seed in range(20):
        other = torch.distributions.Dirichlet(torch.ones(6)).sample((32,)).double()
        step = (0.5 / (other - y).abs().sum(dim=1, keepdim=True)).clamp(max=1)
        feasible = y + step * (other - y)
        assert ((answer * scores).sum(dim=1) <= (feasible * scores).sum(dim=1) + 1e-6).all()


def surrogate_and_inputs(num_classes: int = 5, n: int = 8):
    torch.manual_seed(0)
    model = build_model("smallcnn", SHAPE, num_classes, (0.5,), (0.25,)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(2))
    return model, x


def batch_gradient(model, x, y) -> torch.Tensor:
    """Independent check: the parameter gradient of mean_i sum_k y_ik log p_ik, by plain autograd."""
    params = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    copy = build_model("smallcnn", SHAPE, y.shape[1], (0.5,), (0.25,)).eval()
    with torch.no_grad():
        for target, source in zip(copy.parameters(), params):
            target.copy_(source)
    loss = (y * torch.log_softmax(copy(x), dim=1)).sum(dim=1).mean()
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(copy.parameters()))])


def test_grad2_redirects_the_surrogate_gradient(one_thread):
    model, x = surrogate_and_inputs()
    y = random_answers(8, 5, sharpness=2.0)
    clean = batch_gradient(model, x, y)
    scores = fast_scores(model, x, y, "untargeted")
    assert torch.allclose(scores, reference_scores(model, x, y, "untargeted"), atol=1e-6, rtol=1e-4)
    answer = fast_redirect(y, scores, 1.0)
    assert torch.allclose(answer, reference_redirect(y, reference_scores(model, x, y, "untargeted"), 1.0), atol=1e-6)
    # the gradient of the answers points away from the clean one (inner product lower than |g|^2, angle opened)
    redirected = batch_gradient(model, x, answer)
    assert (redirected @ clean) < (clean @ clean)
    assert torch.nn.functional.cosine_similarity(redirected, clean, dim=0) < 0.999
    # targeted all-ones: the inner product with the all-ones direction grows
    towards = fast_redirect(y, fast_scores(model, x, y, "all_ones"), 1.0)
    assert batch_gradient(model, x, towards).sum() > clean.sum()


def test_modelguard_w_matches_hand_worked_lp():
    # min log(y)^T y~: mass goes to class 2 (log 0.1 lowest), taken from the top-1 while it stays on top.
    # eps = 0.2: 0.1 from class 0. eps = 0.6: 0.2 - 1e-4 from class 0 and 0.1 + 1e-4 from class 1, worked by hand
    y = t([0.6, 0.3, 0.1])
    assert torch.allclose(modelguard_w(y, 0.2), t([0.5, 0.3, 0.2]), atol=1e-7)
    assert torch.allclose(modelguard_w(y, 0.6), t([0.4001, 0.1999, 0.4]), atol=1e-7)


def test_modelguard_w_block_lp_equals_one_lp_per_query():
    y = random_answers(24, 6)
    batched = modelguard_w(y, 0.5).double()
    single = torch.cat([modelguard_w(row[None], 0.5) for row in y]).double()
    cost = torch.log(y.double() + LOG_OFFSET)
    assert torch.allclose((cost * batched).sum(dim=1), (cost * single).sum(dim=1), atol=1e-6)
    assert ((batched - y).abs().sum(dim=1) <= 0.5 + 1e-5).all()


def test_modelguard_s_codebook_and_answers_by_hand():
    # class-0 answers; eps = 0.3: their mean (0.7333, 0.2, 0.0667) is 0.467 from the third, so the third
    # becomes a centroid and k-means settles on {(0.85, 0.15, 0), (0.5, 0.3, 0.2)}
    answers = t([0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.5, 0.3, 0.2])
    centroids, valid = build_codebooks(answers, 0.3, 8)
    assert valid[0].sum() == 2 and not valid[1:].any()
    assert torch.allclose(centroids[0, :2], t([0.85, 0.15, 0.0], [0.5, 0.3, 0.2]), atol=1e-12)
    assert torch.allclose(quantise(t([0.75, 0.2, 0.05]), centroids, valid, 0.3), t([0.85, 0.15, 0.0]))  # 0.2 away
    # nothing within 0.3 (nearest at 0.32): y moved 0.3 towards it, y + (0.3/0.32)(c - y), by hand
    assert torch.allclose(quantise(t([0.34, 0.33, 0.33]), centroids, valid, 0.3), t([0.49, 0.301875, 0.208125]), atol=1e-6)
    one, valid_one = build_codebooks(answers, 0.5, 8)  # at 0.5 the mean covers all three
    assert valid_one[0].sum() == 1 and torch.allclose(one[0, 0], answers.mean(dim=0))
    assert torch.allclose(quantise(t([0.1, 0.6, 0.3]), centroids, valid, 0.3), t([0.1, 0.6, 0.3]))  # no class-1 codebook


# -- every defense through its plugin ---------------------------------------------------------------

def context(num_classes: int = 10, seed: int = 0) -> VictimContext:
    spec = DatasetSpec("synthetic", SHAPE, num_classes, (0.5,), (0.25,), lambda root, split: None)
    images = torch.randint(0, 256, (200, *SHAPE), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    data = ImageData(images, torch.zeros(200, dtype=torch.long), "synthetic")
    return VictimContext(spec, "smallcnn", data, data, Recipe(epochs=1), torch.device("cpu"), seed,
                         make_model=lambda: build_model("smallcnn", SHAPE, num_classes, spec.mean, spec.std))


def defended(name: str, **config) -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor]:
    ctx = context()
    torch.manual_seed(1)
    base = Softmax(ctx.make_model()).eval()
    with torch.no_grad():
        last_linear(base).weight.mul_(15.0)  # peaked answers, as a trained victim's
    plugin = DEFENSES.get(name)
    defense = plugin(plugin.Config(**config))
    module = defense.build(base, ctx)
    defense.fit(module, ctx)
    x = torch.rand(64, *SHAPE, generator=torch.Generator().manual_seed(3))
    return module.eval(), base, x


@pytest.mark.parametrize("name", ZOO)
def test_every_answer_is_a_probability_vector(name, one_thread):
    plugin = DEFENSES.get(name)
    assert issubclass(plugin, OutputDefense) and plugin.label
    module, base, x = defended(name)
    for value in plugin.tunable_grid or [None]:
        if value is not None:
            setattr(module, plugin.tunable, value)
        with torch.no_grad():
            check_probabilities(module(x))
    assert defense_cost(plugin(), 128) not in ("", "?")


@pytest.mark.parametrize("name", ARGMAX_PRESERVING)
def test_argmax_preserving_defenses_keep_the_top1(name, one_thread):
    plugin = DEFENSES.get(name)
    module, base, x = defended(name)
    with torch.no_grad():
        truth = base(x).argmax(dim=1)
        for value in plugin.tunable_grid or [None]:
            if value is not None:
                setattr(module, plugin.tunable, value)
            assert torch.equal(module(x).argmax(dim=1), truth), (name, value)


@pytest.mark.parametrize("name", [n for n in ZOO if n != "label_only"])
def test_the_tunable_setting_changes_the_answers(name, one_thread):
    plugin = DEFENSES.get(name)
    module, base, x = defended(name)
    answers = []
    with torch.no_grad():
        for value in (plugin.tunable_grid[0], plugin.tunable_grid[len(plugin.tunable_grid) // 2]):
            setattr(module, plugin.tunable, value)
            if hasattr(module, "restart_randomness"):
                module.restart_randomness()
            answers.append(module(x))
    assert not torch.allclose(answers[0], answers[1], atol=1e-6)


@pytest.mark.parametrize("name", ["grad2", "modelguard_w", "modelguard_s", "random_noise"])
def test_l1_budget_defenses_stay_in_the_ball(name, one_thread):
    module, base, x = defended(name, epsilon=0.3)
    with torch.no_grad():
        assert ((module(x) - base(x)).abs().sum(dim=1) <= 0.3 + 1e-5).all()


def test_bad_settings_are_refused():
    for name, config in (("reverse_sigmoid", {"beta": -1.0}), ("rounding", {"decimals": -1}), ("topk", {"k": 0}),
                         ("random_noise", {"epsilon": 3.0}), ("grad2", {"target": "watermark"}),
                         ("modelguard_w", {"epsilon": math.nan}), ("modelguard_s", {"max_centroids": 0}), ("dcp", {"nu": 0.0})):
        plugin = DEFENSES.get(name)
        with pytest.raises(ValueError, match=name):
            plugin(plugin.Config(**config))


def test_modelguard_s_answers_the_first_centroid_within_the_ball_not_the_nearest():
    centroids = torch.zeros(3, 2, 3, dtype=torch.float64)
    centroids[0] = t([0.8, 0.2, 0.0], [0.7, 0.2, 0.1])
    valid = torch.tensor([[True, True], [False, False], [False, False]])
    # y is 0.16 from the first centroid and 0.04 from the second: ordered quantisation answers the first
    assert torch.allclose(quantise(t([0.72, 0.2, 0.08]), centroids, valid, 0.3), t([0.8, 0.2, 0.0]))


def test_modelguard_s_victim_saves_and_loads(tmp_path, one_thread):
    from msbench.defenses import load_victim, save_victim
    module, base, x = defended("modelguard_s")
    with torch.no_grad():
        answers = module(x)
    save_victim(module, tmp_path / "v.pt", {})
    fresh = DEFENSES.get("modelguard_s")().build(base, context())  # built, not fitted: no training answers yet
    load_victim(fresh, tmp_path / "v.pt")
    with torch.no_grad():
        assert torch.equal(fresh(x), answers)
