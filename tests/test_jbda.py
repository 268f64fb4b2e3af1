"""JBDA: query accounting, the budget, what the oracle reveals, and the Jacobian step itself."""
from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import msbench
from msbench.attacks import AttackContext
from msbench.attacks import jbda as jbda_module
from msbench.attacks.jbda import JBDA, jacobian_step, pixel_step
from msbench.config import SuiteError
from msbench.data import ImageData
from msbench.defenses import Softmax
from msbench.models import Normalize, build_model
from msbench.oracle import Oracle
from msbench.runner.suite import parse_suite
from msbench.training import Recipe
from tests.conftest import tiny_suite

SHAPE, MEAN, STD = (1, 28, 28), (0.1307,), (0.3081,)
RECIPE = Recipe(epochs=50, lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=16, schedule="constant")


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("smallcnn", SHAPE, 10, MEAN, STD)


def make_victim() -> nn.Module:
    victim = Softmax(make_model(123)).eval()
    for parameter in victim.parameters():
        parameter.requires_grad_(False)
    return victim


def synthetic(n: int = 30) -> ImageData:
    generator = torch.Generator().manual_seed(7)
    return ImageData(torch.randint(0, 256, (n, *SHAPE), dtype=torch.uint8, generator=generator),
                     torch.randint(0, 10, (n,), generator=generator), "synthetic")


class RecordingOracle(Oracle):
    """The real oracle, keeping a copy of every answer the attack receives."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.answers: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        answer = super().__call__(x)
        self.answers.append(answer.clone())
        return answer


def attack(label_mode: str = "soft", budget: int = 50000, data: ImageData | None = None, **settings):
    """Run JBDA on a small untrained victim; returns (oracle, ctx, reports (queries, clone copy))."""
    data = data if data is not None else synthetic()
    victim = make_victim()
    oracle = RecordingOracle(victim, label_mode, budget, 10)
    reports: list[tuple[int, nn.Module]] = []
    ctx = AttackContext(query_data=lambda: data, seed_data=lambda: data, make_clone=lambda: make_model(1), recipe=RECIPE,
                        device=torch.device("cpu"), seed=0, num_classes=10,
                        report=lambda queries, clone: reports.append((queries, copy.deepcopy(clone))))
    config = JBDA.Config(budget=budget, **{"seeds": 10, "rounds": 3, "epochs_per_round": 1, **settings})
    clone = JBDA(config).run(oracle, ctx)
    assert isinstance(clone, nn.Module)
    return oracle, ctx, reports, victim


@pytest.fixture
def fit_calls(monkeypatch):
    """The (images, targets) of every training round, recorded on the way into the real fit."""
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    real_fit = jbda_module.fit

    def recording_fit(model, images, targets, *args, **kwargs):
        calls.append((images.clone(), targets.clone()))
        return real_fit(model, images, targets, *args, **kwargs)

    monkeypatch.setattr(jbda_module, "fit", recording_fit)
    return calls


@pytest.mark.parametrize("relabel, queries, curve", [("new", 40, [10, 20, 40]), ("all", 70, [10, 30, 70])])
def test_query_count_is_exact(relabel, queries, curve, fit_calls):
    oracle, ctx, reports, _ = attack(relabel=relabel)
    assert oracle.queries == queries == sum(len(a) for a in oracle.answers)
    assert [q for q, _ in reports] == curve  # one intermediate clone per round
    assert [len(images) for images, _ in fit_calls] == [10, 20, 40]  # the set doubles after each round but the last
    assert ctx.notes["relabel"] == relabel and ctx.notes["points"] == 40 and "budget_capped" not in ctx.notes


@pytest.mark.parametrize("relabel, budget, queries, points", [
    ("new", 25, 25, 25),  # seeds 10, +10, then only 5 of 20 fit
    ("new", 20, 20, 20),  # nothing fits after round 2
    ("new", 6, 6, 6),  # not even every seed
    ("all", 50, 30, 20),  # 10, relabel 20; relabelling 40 (or 20 + any new) would pass 50
    ("all", 60, 10 + 20 + 30, 30),  # 10 new points: relabel 30 fits in the 30 left
])
def test_budget_caps_the_run_and_says_so(relabel, budget, queries, points, fit_calls):
    oracle, ctx, reports, _ = attack(budget=budget, relabel=relabel, rounds=4)
    assert oracle.queries == queries <= budget
    assert len(fit_calls[-1][0]) == points == ctx.notes["points"]
    assert "budget" in ctx.notes["budget_capped"]
    assert reports[-1][0] == queries


def test_hard_labels_reveal_only_one_hots_and_train_on_top1(fit_calls):
    oracle, _, _, victim = attack(label_mode="hard")
    answers = torch.cat(oracle.answers)
    assert set(answers.unique().tolist()) <= {0.0, 1.0} and torch.equal(answers.sum(dim=1), torch.ones(len(answers)))
    for images, targets in fit_calls:
        assert targets.dtype == torch.long and targets.dim() == 1
        assert torch.equal(targets, victim(images).argmax(dim=1))


def test_soft_labels_train_on_the_probabilities(fit_calls):
    _, _, _, victim = attack(label_mode="soft")
    for images, targets in fit_calls:
        assert targets.dim() == 2 and targets.dtype == torch.float32
        assert torch.allclose(targets, victim(images), atol=1e-6)
        assert not torch.allclose(targets, F.one_hot(targets.argmax(dim=1), 10).float())


def expected_step(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, step: float | torch.Tensor, direction: str):
    """The reference: one autograd call per sample, then x + step * sign, clamped; and the gradients."""
    model.eval()
    gradients = []
    for xi, yi in zip(x, labels):
        xi = xi.unsqueeze(0).clone().requires_grad_(True)
        logits = model(xi)
        objective = logits[0, yi] if direction == "logit" else F.cross_entropy(logits, yi.view(1))
        (gradient,) = torch.autograd.grad(objective, xi)
        gradients.append(gradient)
    gradients = torch.cat(gradients)
    return (x + step * gradients.sign()).clamp(0, 1), gradients


def assert_same_step(moved: torch.Tensor, expected: torch.Tensor, gradients: torch.Tensor) -> None:
    clear = gradients.abs() > 1e-6  # leave out entries whose sign is at the mercy of rounding
    assert clear.float().mean() > 0.5
    assert torch.allclose(moved[clear], expected[clear], rtol=0, atol=1e-6)  # a wrong sign is off by 2 * step


@pytest.mark.parametrize("direction", ["logit", "ce"])
def test_jacobian_step_matches_per_sample_autograd(direction):
    torch.manual_seed(3)
    model = nn.Sequential(Normalize(MEAN, STD), nn.Flatten(), nn.Linear(28 * 28, 32), nn.Tanh(), nn.Linear(32, 10))
    x = torch.rand(12, *SHAPE)
    labels = torch.randint(0, 10, (12,))
    step = pixel_step(model, 0.1, "normalised")
    moved = jacobian_step(model, x, labels, step, direction)
    expected, gradients = expected_step(model, x, labels, step, direction)
    assert_same_step(moved, expected, gradients)
    inside = (expected > 0) & (expected < 1) & (gradients != 0)
    assert torch.allclose((moved - x).abs()[inside], torch.tensor(0.1 * STD[0]))  # normalised step -> pixels

    # a small step moves each objective the way the direction says
    small = jacobian_step(model, x, labels, 1e-3, direction)
    with torch.no_grad():
        def objective(images):
            logits = model(images)
            return logits.gather(1, labels.view(-1, 1)).squeeze(1) if direction == "logit" else F.cross_entropy(logits, labels, reduction="none")
        assert (objective(small) > objective(x)).all()


@pytest.mark.parametrize("direction, units", [("logit", "normalised"), ("ce", "normalised"), ("logit", "pixel")])
def test_attack_moves_points_along_the_sign_of_the_clones_jacobian(direction, units, fit_calls):
    data = synthetic()
    oracle, _, reports, victim = attack(direction=direction, step_units=units, rounds=2, data=data)
    seeds = data.images[:10].float() / 255
    round_one, round_two = fit_calls[0][0], fit_calls[1][0]
    assert torch.equal(round_one, seeds)  # the first images of the training set, unshuffled
    assert torch.equal(round_two[:10], seeds)
    clone_after_round_one = reports[0][1]
    step = 0.1 * STD[0] if units == "normalised" else 0.1
    expected, gradients = expected_step(clone_after_round_one, seeds, victim(seeds).argmax(dim=1), step, direction)
    assert_same_step(round_two[10:], expected, gradients)


def test_invalid_settings_are_suite_errors():
    raw = {"matrix": {"datasets": ["mnist"], "archs": ["smallcnn"], "defenses": ["vanilla"], "attacks": ["jbda"]},
           "attacks": {"jbda": {"direction": "up"}}}
    with pytest.raises(SuiteError, match="attacks.jbda.direction"):
        parse_suite(raw)
    raw["attacks"]["jbda"] = {"relabel": "some"}
    with pytest.raises(SuiteError, match="attacks.jbda.relabel"):
        parse_suite(raw)


JBDA_SUITE_CHANGES = {
    "name": "jbda-tiny",
    "matrix": {"attacks": ["jbda"], "seeds": None},
    "victim": {"epochs": 1},
    "clone": None,
    "attacks": {"knockoff": None, "jbda": {"seeds": 10, "rounds": 2, "epochs_per_round": 1, "recipe": {"batch_size": 16}}},
    "datasets": None,
}


def test_jbda_runs_in_a_suite_with_curves_and_notes(tmp_path, mnist_root):
    path = tiny_suite(tmp_path, "jbda.toml", **JBDA_SUITE_CHANGES)
    frame = msbench.run_suite(path, data_root=mnist_root, out=tmp_path / "run", echo=lambda *_: None)
    assert (frame.status == "ok").all() and list(frame.label_mode) == ["soft", "hard"]
    assert (frame.queries == 20).all()
    assert frame.notes.str.contains('"relabel": "new"').all()
    curves = pd.read_csv(tmp_path / "run" / "curves.csv")
    assert sorted(curves.queries.tolist()) == [10, 10, 20, 20]
