"""recovery: its restorer, trained only on the attacker's shadow pairs, brings the real victim's
defended answers closer to the victim's clean answers than no restoration does."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from msbench.attacks import AttackContext
from msbench.attacks import recovery as module
from msbench.attacks.recovery import Recovery
from msbench.data import load_split
from msbench.defenses import Softmax, VictimContext
from msbench.defenses.mad import MAD
from msbench.models import build_model
from msbench.oracle import Oracle
from msbench.registry import DATASETS
from msbench.training import Recipe, fit

SHAPE, MEAN, STD = (1, 28, 28), (0.1307,), (0.3081,)
RECIPE = Recipe(epochs=3, lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=32, schedule="cosine")


def make_model() -> nn.Module:
    return build_model("smallcnn", SHAPE, 10, MEAN, STD)


@pytest.fixture(scope="module")
def mnist():
    from tests.conftest import data_root
    root = data_root()
    if root is None:
        pytest.skip("MNIST not found")
    spec = DATASETS.get("mnist")
    return spec, load_split(spec, root, "train"), load_split(spec, root, "test")


def mad_victim(spec, train, epsilon: float):
    """A small MNIST victim (defender's seed 0) behind MAD, and its clean base."""
    torch.manual_seed(0)
    base = Softmax(make_model())
    fit(base.model, train.images[:1500], train.labels[:1500], RECIPE, seed=0)
    base.eval()
    for parameter in base.parameters():
        parameter.requires_grad_(False)
    vctx = VictimContext(spec, "smallcnn", train, train, RECIPE, torch.device("cpu"), 0, make_model=make_model)
    defense = MAD(MAD.Config(epsilon=epsilon))
    return base, defense.build(base, vctx).eval(), defense


def run(oracle: Oracle, pool, defense: str, config: dict, reports=None) -> tuple[Recovery, AttackContext]:
    ctx = AttackContext(query_data=lambda: pool, seed_data=lambda: pool, make_clone=make_model, recipe=RECIPE,
                        device=torch.device("cpu"), seed=0, num_classes=10,
                        report=(lambda q, c: reports.append(q)) if reports is not None else (lambda q, c: None),
                        defense=defense, defense_config=config)
    attack = Recovery(Recovery.Config(budget=oracle.budget, restorer_epochs=40, curve=[100]))
    attack.run(oracle, ctx)
    return attack, ctx


def test_restorer_undoes_mad_better_than_no_restoration(one_thread, mnist):
    spec, train, test = mnist
    base, defended, defense = mad_victim(spec, train, epsilon=0.5)
    pool = test.subset(3000, seed=1)  # the attacker's own images, unlabelled for it
    oracle = Oracle(defended, "soft", 800, 10)
    reports: list[int] = []
    attack, ctx = run(oracle, pool, "vanilla+mad", {"vanilla": {}, "mad": {"epsilon": 0.5, "strategy": "extreme",
                                                                            "objective": "angular", "implementation": "fast"}},
                      reports)
    assert oracle.queries == 800 and reports == [100, 800]
    # its shadow MAD is its own random draw, not the defender's surrogate
    theirs, mine = defended.surrogate.state_dict(), attack.shadow_defended.surrogate.state_dict()
    assert any(not torch.equal(theirs[k], mine[k]) for k in theirs)
    held_out = train.images[-600:].float().div(255.0)  # neither queried nor used for shadow pairs
    with torch.no_grad():
        clean, answered = base(held_out), defended(held_out)
        restored = attack.restorer(answered)
    distance = lambda a: (a - clean).abs().sum(dim=1).mean().item()  # noqa: E731
    assert distance(restored) < 0.8 * distance(answered), (distance(restored), distance(answered))
    assert "held-out L1" in ctx.notes["recovery"]


def test_nothing_to_restore_without_an_output_defense(one_thread, mnist, monkeypatch):
    spec, train, test = mnist
    base, _, _ = mad_victim(spec, train, epsilon=0.0)
    pool = test.subset(500, seed=1)
    targets = []
    real_fit = module.fit

    def spy(model, x, t, *args, **kwargs):
        targets.append(t)
        return real_fit(model, x, t, *args, **kwargs)

    monkeypatch.setattr(module, "fit", spy)
    oracle = Oracle(base, "soft", 200, 10)
    attack, ctx = run(oracle, pool, "vanilla", {"vanilla": {}})
    assert attack.restorer is None and "KnockoffNets" in ctx.notes["recovery"]
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(ctx.seed_for("recovery.queries")))[:200]
    with torch.no_grad():
        torch.testing.assert_close(targets[-1], base(pool.images[order].float().div(255.0)))  # the raw answers


def test_the_runner_tells_the_attack_its_defense_and_deployed_settings(mnist_root, one_thread, tmp_path):
    import msbench
    from tests.conftest import tiny_suite
    seen = {}
    real_run = Recovery.run

    def spy(self, oracle, ctx):
        seen["defense"], seen["config"] = ctx.defense, ctx.defense_config
        return real_run(self, oracle, ctx)

    Recovery.run = spy
    try:
        frame = msbench.run_suite(tiny_suite(tmp_path, matrix={"defenses": ["mad"], "attacks": ["recovery"], "label_modes": ["soft"]},
                                     run={"match_benign": 1.0}, attacks={"recovery": {"budget": 200, "restorer_epochs": 2}}),
                          data_root=mnist_root, out=tmp_path / "run", report=False, echo=lambda *a: None)
    finally:
        Recovery.run = real_run
    assert seen["defense"] == "vanilla+mad"
    assert set(seen["config"]) == {"vanilla", "mad"} and "epsilon" in seen["config"]["mad"]
    assert frame["status"].iloc[0] == "ok"
    assert frame["tuned"].iloc[0] == f"mad.epsilon={seen['config']['mad']['epsilon']:g}"  # the deployed value
