"""knockoff-avg: every copy is a counted query, and the answer is the mean of the copies' answers."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from msbench.attacks import AttackContext
from msbench.attacks import knockoff_avg as module
from msbench.attacks.knockoff_avg import KnockoffAveraged, averaged_answers, perturbed_copies
from msbench.data import ImageData
from msbench.defenses import Softmax
from msbench.models import build_model
from msbench.oracle import Oracle
from msbench.training import Recipe

SHAPE = (1, 28, 28)


def victim() -> nn.Module:
    torch.manual_seed(5)
    model = Softmax(build_model("smallcnn", SHAPE, 10, (0.1307,), (0.3081,))).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def images(n: int) -> ImageData:
    generator = torch.Generator().manual_seed(3)
    return ImageData(torch.randint(0, 256, (n, *SHAPE), dtype=torch.uint8, generator=generator), torch.zeros(n, dtype=torch.long))


class Recorder(Oracle):
    """The real oracle, keeping every image it answered and its answer."""

    def __init__(self, *args):
        super().__init__(*args)
        self.sent: list[torch.Tensor] = []
        self.answered: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        answer = super().__call__(x)
        self.sent.append(x.detach().cpu().clone())
        self.answered.append(answer.clone())
        return answer


@pytest.mark.parametrize("label_mode", ["soft", "hard"])
def test_answer_is_the_mean_over_the_perturbed_copies_sent(one_thread, label_mode):
    data = images(12)
    oracle = Recorder(victim(), label_mode, 10_000, 10)
    means = averaged_answers(oracle, data.images, 4, 0.05, 0, torch.Generator().manual_seed(0), torch.device("cpu"), batch_size=5)
    sent, answered = torch.cat(oracle.sent), torch.cat(oracle.answered)
    assert oracle.queries == len(sent) == 4 * 12
    clean = data.images.float().div(255.0).flatten(1)
    owner = torch.cdist(sent.flatten(1), clean).argmin(dim=1)  # which image each copy perturbs
    for i in range(12):
        mine = owner == i
        assert int(mine.sum()) == 4
        copies = sent[mine].flatten(1)
        assert (copies - clean[i]).abs().amax(dim=1).min() > 0  # every copy is perturbed ...
        assert torch.cdist(copies, copies).add(torch.eye(4)).min() > 0  # ... differently
        torch.testing.assert_close(means[i], answered[mine].mean(dim=0))
    if label_mode == "hard":  # vote shares
        assert torch.allclose((means * 4).round(), means * 4)


def test_noise_and_shift_stay_small_and_in_range():
    clean = torch.rand(6, *SHAPE)
    noisy = perturbed_copies(clean, 3, 0.05, 0, torch.Generator().manual_seed(0))
    assert noisy.shape == (18, *SHAPE) and noisy.min() >= 0 and noisy.max() <= 1
    residual = noisy - clean.repeat(3, 1, 1, 1)
    assert 0.02 < residual.std() < 0.06
    shifted = perturbed_copies(clean, 2, 0.0, 2, torch.Generator().manual_seed(0))
    back = [min((torch.roll(shifted[k], (dy, dx), (1, 2))[:, 3:-3, 3:-3] - clean[k % 6, :, 3:-3, 3:-3]).abs().max().item()
                for dy in range(-2, 3) for dx in range(-2, 3)) for k in range(12)]
    assert max(back) < 1e-6  # each copy is its image moved by at most 2 pixels


@pytest.mark.parametrize("budget, copies", [(53, 5), (40, 1), (41, 4)])
def test_every_answered_copy_counts_against_the_budget(one_thread, budget, copies):
    data = images(30)
    oracle = Recorder(victim(), "soft", budget, 10)
    reports = []
    ctx = AttackContext(query_data=lambda: data, seed_data=lambda: data,
                        make_clone=lambda: build_model("smallcnn", SHAPE, 10, (0.1307,), (0.3081,)),
                        recipe=Recipe(epochs=1, batch_size=16), device=torch.device("cpu"), seed=0, num_classes=10,
                        report=lambda queries, clone: reports.append(queries))
    attack = KnockoffAveraged(KnockoffAveraged.Config(budget=budget, copies=copies, curve=[20]))
    attack.run(oracle, ctx)
    distinct = min(budget // copies, 30)
    assert oracle.queries == sum(len(x) for x in oracle.sent) == distinct * copies <= budget
    assert ctx.notes["distinct_images"] == distinct
    assert reports[-1] == oracle.queries and reports[0] == (20 // copies) * copies


def test_clone_trains_on_the_averaged_answers(one_thread, monkeypatch):
    data = images(10)
    seen = {}
    real_fit = module.fit

    def spy(model, x, targets, *args, **kwargs):
        seen["targets"] = targets
        return real_fit(model, x, targets, *args, **kwargs)

    monkeypatch.setattr(module, "fit", spy)
    oracle = Recorder(victim(), "soft", 30, 10)
    ctx = AttackContext(query_data=lambda: data, seed_data=lambda: data,
                        make_clone=lambda: build_model("smallcnn", SHAPE, 10, (0.1307,), (0.3081,)),
                        recipe=Recipe(epochs=1, batch_size=16), device=torch.device("cpu"), seed=0, num_classes=10)
    KnockoffAveraged(KnockoffAveraged.Config(budget=30, copies=3)).run(oracle, ctx)
    answered = torch.cat(oracle.answered).view(3, 10, 10).mean(dim=0)  # copy-major batches of 10 images
    torch.testing.assert_close(seen["targets"], answered)


def test_bad_settings_are_refused():
    assert KnockoffAveraged.check_config(KnockoffAveraged.Config(copies=0))[0] == "copies"
    assert KnockoffAveraged.check_config(KnockoffAveraged.Config(budget=3, copies=5))[0] == "budget"
