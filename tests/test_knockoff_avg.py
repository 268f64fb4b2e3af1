"""knockoff-avg: every copy is a counted query, and the answer is the mean of the copies' answers."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from msbench.attacks import AttackContext
from msbench.attacks import knockoff_avg as module
from msbench.attacks.knockoff_avg import (DEGREES, SCALE, SHEAR, TRANSLATE, AffineDraw, KnockoffAveraged, affine_copies,
                                          averaged_answers, gaussian_copies)
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
    noise = torch.Generator().manual_seed(0)
    means = averaged_answers(oracle, data.images, 4, lambda x, k: affine_copies(x, k, noise), torch.device("cpu"), batch_size=5)
    sent, answered = torch.cat(oracle.sent), torch.cat(oracle.answered)
    assert oracle.queries == len(sent) == 4 * 12
    clean = data.images.float().div(255.0).flatten(1)
    # which image each copy perturbs: batches of 5 images, each sent copy-major (row j * 5 + i is copy j of image i)
    owner = torch.cat([torch.arange(start, min(start + 5, 12)).repeat(4) for start in range(0, 12, 5)])
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
    noisy = gaussian_copies(clean, 3, 0.05, 0, torch.Generator().manual_seed(0))
    assert noisy.shape == (18, *SHAPE) and noisy.min() >= 0 and noisy.max() <= 1
    residual = noisy - clean.repeat(3, 1, 1, 1)
    assert 0.02 < residual.std() < 0.06
    shifted = gaussian_copies(clean, 2, 0.0, 2, torch.Generator().manual_seed(0))
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


def _identity(**changes) -> AffineDraw:
    base = dict(angle=0.0, translate=(0, 0), scale=1.0, shear=0.0, order=(0, 1, 2, 3), brightness=1.0, contrast=1.0,
                saturation=1.0, hue=0.0)
    return AffineDraw(**{**base, **changes})


def test_the_affine_perturbation_moves_a_known_image_by_a_known_transform():
    image = torch.zeros(1, 28, 28)
    image[0, 10, 12] = 1.0  # one lit pixel: row 10, column 12
    moved = _identity(translate=(3, -2)).apply(image)
    assert moved[0, 8, 15] == 1.0 and moved.sum() == 1.0  # dx = +3 columns, dy = -2 rows
    turned = _identity(angle=90.0).apply(image)  # about the centre (13.5, 13.5), clockwise (torchvision's affine)
    assert turned.sum() == 1.0 and turned[0, 12, 17] == 1.0  # (x, y) - centre: (-1.5, -3.5) -> (3.5, -1.5)
    grey = torch.full((1, 28, 28), 0.5)
    torch.testing.assert_close(_identity(brightness=1.1).apply(grey), torch.full((1, 28, 28), 0.55))
    torch.testing.assert_close(_identity(saturation=0.5, hue=0.1).apply(grey), grey)  # no colour to change
    assert _identity().apply(image).equal(image)


def test_affine_draws_span_the_ini_codes_ranges():
    generator = torch.Generator().manual_seed(0)
    draws = [AffineDraw.sample(28, 28, generator) for _ in range(2000)]
    angles, shears = [d.angle for d in draws], [d.shear for d in draws]
    assert -DEGREES <= min(angles) < -0.95 * DEGREES and 0.95 * DEGREES < max(angles) <= DEGREES
    assert -SHEAR <= min(shears) < -0.9 * SHEAR and 0.9 * SHEAR < max(shears) <= SHEAR
    shifts = {t for d in draws for t in d.translate}
    assert shifts == set(range(-round(TRANSLATE * 28), round(TRANSLATE * 28) + 1))  # whole pixels, -3..3 on 28 pixels
    assert SCALE[0] <= min(d.scale for d in draws) and max(d.scale for d in draws) <= SCALE[1]
    factors = [d.brightness for d in draws] + [d.contrast for d in draws]
    assert 0.9 <= min(factors) < 0.91 and 1.09 < max(factors) <= 1.1
    assert len({d.order for d in draws}) == 24  # ColorJitter's random order of its four adjustments
    copies = affine_copies(torch.rand(4, *SHAPE), 5, torch.Generator().manual_seed(1))
    assert copies.shape == (20, *SHAPE) and copies.min() >= 0 and copies.max() <= 1


def test_the_default_perturbation_is_the_ini_codes():
    assert KnockoffAveraged.Config().perturbation == "affine" and KnockoffAveraged.Config().copies == 5


def test_bad_settings_are_refused():
    assert KnockoffAveraged.check_config(KnockoffAveraged.Config(copies=0))[0] == "copies"
    assert KnockoffAveraged.check_config(KnockoffAveraged.Config(budget=3, copies=5))[0] == "budget"
