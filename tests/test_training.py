"""The one training loop: what it owns (modes, shuffling, schedules, finiteness) and that ``fit`` on
it trains exactly as the literal SGD loop does, draw for draw."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from msbench.training import Once, Optimiser, Recipe, Shuffled, augment_batch, fit, train_loop


def tiny_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.3), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))


def literal_fit(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, recipe: Recipe, seed: int,
                augment: str) -> nn.Module:
    """The supervised loop written out by hand, as it stood before the loop was shared."""
    generator = torch.Generator().manual_seed(seed)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, recipe.step_size, recipe.gamma)
    for _ in range(recipe.epochs):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), recipe.batch_size):
            index = order[start:start + recipe.batch_size]
            x = augment_batch(images[index].float().div_(255.0), augment, generator)
            loss = F.cross_entropy(model(x), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
    return model.eval()


def test_fit_trains_bit_for_bit_as_the_literal_loop():
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(50, 1, 8, 8, generator=g) * 255).to(torch.uint8)
    labels = torch.randint(0, 3, (50,), generator=g)
    recipe = Recipe(epochs=3, lr=0.05, batch_size=16, step_size=2, gamma=0.5)
    torch.manual_seed(1)
    ours = tiny_cnn()
    theirs = tiny_cnn()
    theirs.load_state_dict(ours.state_dict())
    torch.manual_seed(2)  # dropout draws from the global stream: both runs start it alike
    fit(ours, images, labels, recipe, seed=3, augment="crop_flip")
    torch.manual_seed(2)
    literal_fit(theirs, images, labels, recipe, seed=3, augment="crop_flip")
    assert not ours.training
    for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()):
        assert torch.equal(a, b)


def test_every_epoch_starts_in_training_mode_and_steps_the_schedule_once():
    model = nn.Linear(2, 1)
    optimiser = Optimiser.sgd(model.parameters(), Recipe(epochs=3, lr=1.0, step_size=1, gamma=0.5))
    seen: list[tuple[bool, float]] = []

    def step(index: torch.Tensor) -> dict[str, float]:
        seen.append((model.training, optimiser.optimizer.param_groups[0]["lr"]))
        optimiser.step_on(model(torch.ones(len(index), 2)).sum())
        return {"size": float(len(index))}

    train_loop(step, Shuffled(5, 2, torch.Generator().manual_seed(0)), 3, [model], [optimiser], "test",
               on_epoch=lambda epoch: model.eval())  # an evaluation between epochs must not leak into training
    assert seen == [(True, 1.0)] * 3 + [(True, 0.5)] * 3 + [(True, 0.25)] * 3
    assert not model.training


def test_shuffled_visits_every_item_once_per_epoch_in_a_fresh_order():
    batches = Shuffled(10, 4, torch.Generator().manual_seed(0))
    first, second = list(batches), list(batches)
    assert len(batches) == 3 and [len(b) for b in first] == [4, 4, 2]
    assert sorted(torch.cat(first).tolist()) == list(range(10)) == sorted(torch.cat(second).tolist())
    assert not torch.equal(torch.cat(first), torch.cat(second))


def test_a_non_finite_loss_stops_training_naming_where_and_leaves_the_weights():
    model = nn.Linear(2, 1)
    before = [p.detach().clone() for p in model.parameters()]
    optimiser = Optimiser.sgd(model.parameters(), Recipe(), "victim mnist")
    calls = []

    def step(_: None) -> dict[str, float]:
        calls.append(1)
        loss = model(torch.ones(1, 2)).sum() * (float("nan") if len(calls) == 2 else 1.0)
        optimiser.step_on(loss)
        return {}

    with pytest.raises(FloatingPointError, match="victim mnist: loss became nan in iteration 2"):
        train_loop(step, Once(), 5, [model], [optimiser], "test")
    assert len(calls) == 2
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the first step was taken
    with pytest.raises(FloatingPointError, match="an objective became non-finite"):
        optimiser.check({"benign": 1.0, "isolation": float("inf")})


def test_stepping_through_an_output_equals_descending_the_loss_it_stands_for():
    torch.manual_seed(0)
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    x, gradient = torch.randn(4, 3), torch.randn(4, 2)
    Optimiser.adam(a.parameters(), 0.1).step_through(a(x), gradient)
    Optimiser.adam(b.parameters(), 0.1).step_on((b(x) * gradient).sum())
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
