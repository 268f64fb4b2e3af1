"""AM: outlier exposure trains the victim, the gate passes confident answers and misinforms the rest."""
from __future__ import annotations

import math

import pytest
import torch

from msbench.data import DatasetSpec, ImageData
from msbench.defenses import OutputDefense, TrainingDefense, VictimContext
from msbench.defenses.am import AdaptiveMisinformation, ReferenceAMVictim, OutlierExposure, misinformation_loss, outlier_exposure_loss
from msbench.models import build_model
from msbench.registry import DEFENSES
from msbench.defenses.chain import resolve_chain
from msbench.training import Recipe
from tests.conftest import single_thread

SHAPE, CLASSES, TAU = (1, 16, 16), 10, 0.9


def in_distribution(n: int, seed: int) -> ImageData:
    """Class c: a bright 4x4 square at the c-th cell of a 4x4 grid, on dim noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (n,), generator=g)
    images = torch.randint(0, 40, (n, *SHAPE), generator=g, dtype=torch.uint8)
    for c in range(CLASSES):
        row, col = divmod(c, 4)
        images[labels == c, :, 4 * row:4 * row + 4, 4 * col:4 * col + 4] = 220
    return ImageData(images, labels, "squares")


def outliers(n: int, seed: int) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    return ImageData(torch.randint(0, 256, (n, *SHAPE), generator=g, dtype=torch.uint8), torch.zeros(n, dtype=torch.long), "noise")


def context(train: ImageData, ood: ImageData) -> VictimContext:
    spec = DatasetSpec("squares", SHAPE, CLASSES, (0.2,), (0.3,), lambda root, split: train)
    recipe = Recipe(epochs=4, lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=32, schedule="constant")
    return VictimContext(spec, "smallcnn", train, train, recipe, torch.device("cpu"), 0, {"ood": lambda: ood},
                         lambda: build_model("smallcnn", SHAPE, CLASSES, spec.mean, spec.std))


def oe_loss(model: torch.nn.Module, data: ImageData, ood: ImageData) -> float:
    with torch.no_grad():
        return outlier_exposure_loss(model(data.floats()), data.labels, model(ood.floats()), 1.0).item()


def misinfo_loss(model: torch.nn.Module, data: ImageData, ood: ImageData, ood_labels: torch.Tensor) -> float:
    with torch.no_grad():
        return misinformation_loss(model(torch.cat([data.floats(), ood.floats()])), torch.cat([data.labels, ood_labels])).item()


def true_class_mass(model: torch.nn.Module) -> float:
    """Mean probability a model gives the true class of held-out in-distribution images."""
    test = in_distribution(200, 7)
    with torch.no_grad():
        return torch.softmax(model(test.floats()), dim=1).gather(1, test.labels[:, None]).mean().item()


@pytest.fixture(scope="module")
def trained():
    """An OE victim and AM over it, trained on the tiny problem, with their losses before and after.

    One thread: tiny batches gain nothing from more, and on a busy machine a second spinning
    thread costs tens of times the work itself."""
    with single_thread():
        return train_tiny_problem()


def train_tiny_problem() -> dict:
    train, ood = in_distribution(320, 0), outliers(320, 1)
    ctx = context(train, ood)
    torch.manual_seed(0)
    victim = OutlierExposure().build(ctx)
    oe_before = oe_loss(victim.model, train, ood)
    OutlierExposure().fit(victim, ctx)
    oe_after = oe_loss(victim.model, train, ood)
    victim.eval()
    am = AdaptiveMisinformation(AdaptiveMisinformation.Config(tau=TAU))
    defended = am.build(victim, ctx)
    ood_labels = victim(ood.floats()).argmax(dim=1).detach()
    misinfo_before = misinfo_loss(defended.misinfo, train, ood, ood_labels)
    mass_before = true_class_mass(defended.misinfo)
    am.fit(defended, ctx)
    misinfo_after = misinfo_loss(defended.misinfo, train, ood, ood_labels)
    defended.eval()
    return {"victim": victim, "am": defended, "losses": (oe_before, oe_after, misinfo_before, misinfo_after),
            "true_class_mass": (mass_before, true_class_mass(defended.misinfo))}


def test_outlier_exposure_loss_falls_and_separates_confidence(trained):
    before, after = trained["losses"][:2]
    floor = math.log(CLASSES)  # the outlier term's minimum, -mean_k log p_k of uniform answers
    assert after - floor < 0.5 * (before - floor)
    victim, test, ood = trained["victim"], in_distribution(200, 7), outliers(200, 8)
    with torch.no_grad():
        y_in, y_out = victim(test.floats()), victim(ood.floats())
    assert (y_in.argmax(dim=1) == test.labels).float().mean() > 0.9
    assert y_out.amax(dim=1).mean() < y_in.amax(dim=1).mean() - 0.3  # outliers get unconfident answers


def test_misinformation_loss_falls_and_moves_mass_off_the_true_class(trained):
    before, after = trained["losses"][2:]
    assert after < 0.5 * before
    mass_before, mass_after = trained["true_class_mass"]
    assert mass_after < min(mass_before, 1 / CLASSES) - 0.01


def test_gate_passes_confident_answers_and_misinforms_unconfident_ones(trained):
    am = trained["am"]
    x = torch.cat([in_distribution(100, 7).floats(), outliers(100, 8).floats()])
    with torch.no_grad():
        y, q, out = am.base(x), torch.softmax(am.misinfo(x), dim=1), am(x)
    assert (out >= 0).all() and torch.allclose(out.sum(dim=1), torch.ones(len(x)), atol=1e-5)
    confident, unsure = y.amax(dim=1) >= TAU + 0.01, y.amax(dim=1) <= TAU - 0.01
    assert confident[:100].sum() >= 80 and unsure[100:].sum() >= 80
    assert torch.allclose(out[confident], y[confident], rtol=0, atol=1e-7)
    assert torch.allclose(out[unsure], q[unsure], rtol=0, atol=1e-6)
    assert ((out[unsure] - y[unsure]).abs().sum(dim=1) > 0.1).all()
    alpha = torch.sigmoid(am.nu * (am.tau - y.amax(dim=1, keepdim=True)))
    assert torch.allclose(out, (1 - alpha) * y + alpha * q, rtol=0, atol=1e-6)


def test_fast_form_equals_reference_and_skips_closed_gates(trained):
    am = trained["am"]
    reference_form = ReferenceAMVictim(am.base, am.misinfo, am.tau, am.nu)  # the same modules, F^ on every query
    sizes: list[int] = []
    hook = am.misinfo.register_forward_hook(lambda module, args, output: sizes.append(len(args[0])))
    try:
        for x in (in_distribution(60, 9).floats(), outliers(60, 10).floats(),
                  torch.cat([in_distribution(30, 11).floats(), outliers(30, 12).floats()])):
            with torch.no_grad():
                reference = reference_form(x)
                sizes.clear()
                fast = am(x)
                alpha = torch.sigmoid(am.nu * (am.tau - am.base(x).amax(dim=1)))
            opened = int((alpha != 0).sum())
            assert sizes == ([opened] if opened else [])  # F^ runs on the open rows only
            closed = alpha == 0
            assert torch.equal(fast[closed], reference[closed])
            if opened == len(x):
                assert torch.equal(fast, reference)
            # rows F^ saw in a smaller batch may differ by the backend's batch-size-dependent rounding
            assert torch.allclose(fast, reference, rtol=0, atol=1e-6)
        assert 0 < opened < len(x)  # the mixed batch exercised the sub-batch path
    finally:
        hook.remove()


def test_registered_and_composed():
    am, oe = DEFENSES.get("am"), DEFENSES.get("oe")
    assert issubclass(am, OutputDefense) and am.default_base == "oe" and am.roles == ("ood",) and am.tunable == "tau"
    assert issubclass(oe, TrainingDefense) and oe.roles == ("ood",)
    assert list(am.tunable_grid) == sorted(am.tunable_grid, reverse=True)
    assert resolve_chain("am") == ["oe", "am"] and resolve_chain("vanilla+am") == ["vanilla", "am"]
    assert am.check_config(am.Config()) is None and am.Config().tau == 0.99 and am.Config().nu == 10000.0
    assert am.check_config(am.Config(tau=1.5))[0] == "tau"
    with pytest.raises(ValueError, match="am: implementation: expected one of 'fast', 'reference', got 'quick'"):
        am(am.Config(implementation="quick"))
    assert oe.check_config(oe.Config(lambda_oe=-1.0))[0] == "lambda_oe"
