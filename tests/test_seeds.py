"""Independent random streams: no two models of a cell start alike, and a seed still reproduces."""
from __future__ import annotations

import inspect
import os
import subprocess
import sys

import pytest
import torch

import msbench
import msbench.runner.evaluate
import msbench.seeds
import msbench.runner.victims
import msbench.runner.workspace
from msbench.attacks.activethief import ActiveThief
from msbench.attacks.base import AttackContext
from msbench.attacks.dfme import DFME
from msbench.attacks.knockoff_avg import KnockoffAveraged
from msbench.attacks.recovery import Recovery
from msbench.data import ImageData
from msbench.runner.checkpoints import read_checkpoint
from msbench.defenses.base import Softmax, VictimContext
from msbench.models import build_model
from msbench.oracle import Oracle
from msbench.seeds import build_seeded, derive_seed
from msbench.training import Recipe
from tests.conftest import tiny_suite

WHO = {("msbench.defenses.ini", "build"): "victim", ("msbench.defenses.ini", "fit"): "ini surrogate",
       ("msbench.attacks.knockoff", "run"): "clone"}


def spy_on_models(monkeypatch) -> dict[str, list[dict[str, torch.Tensor]]]:
    """Initial parameters of every model the runner's factories build, by who asked for it."""
    built: dict[str, list[dict[str, torch.Tensor]]] = {}
    real = msbench.runner.workspace.build_model

    def recording(*args, **kwargs):
        model = real(*args, **kwargs)
        caller = next(WHO[key] for frame in inspect.stack()
                      if (key := (frame.frame.f_globals.get("__name__"), frame.function)) in WHO)
        built.setdefault(caller, []).append({k: v.detach().clone() for k, v in model.named_parameters()})
        return model

    monkeypatch.setattr(msbench.runner.workspace, "build_model", recording)
    return built


def ini_suite(tmp_path, file="ini.toml"):
    return tiny_suite(tmp_path, file, matrix={"defenses": ["ini"], "label_modes": ["soft"], "seeds": [3]},
                      run={"train_subset": 200, "test_subset": 100}, victim={"epochs": 1}, attacks={"knockoff": {"budget": 100}},
                      datasets={"mnist": {"surrogate": "emnist-letters", "ood": "fashionmnist"}})


def differ_everywhere(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(not torch.equal(a[k], b[k]) for k in a)


def test_victim_ini_surrogate_and_clone_start_apart_and_the_seed_reproduces(tmp_path, mnist_root, monkeypatch, one_thread):
    built = spy_on_models(monkeypatch)
    seeds: list[int] = []
    real_run = msbench.attacks.knockoff.KnockoffNets.run
    monkeypatch.setattr(msbench.attacks.knockoff.KnockoffNets, "run", lambda self, o, ctx: (seeds.append(ctx.seed), real_run(self, o, ctx))[1])
    first = msbench.run_suite(ini_suite(tmp_path), data_root=mnist_root, out=tmp_path / "a", report=False)
    assert (first.status == "ok").all(), first.error.tolist()
    assert {k: len(v) for k, v in built.items()} == {"victim": 1, "ini surrogate": 1, "clone": 1}
    victim, surrogate, clone = built["victim"][0], built["ini surrogate"][0], built["clone"][0]
    assert differ_everywhere(victim, surrogate) and differ_everywhere(victim, clone) and differ_everywhere(surrogate, clone)
    assert seeds[0] != 3  # the attack is not handed the cell seed the defender's streams derive from

    before = {k: [dict(s) for s in v] for k, v in built.items()}
    built.clear()
    torch.rand(12345)  # whatever was drawn before, the same cell seed gives the same run
    second = msbench.run_suite(ini_suite(tmp_path), data_root=mnist_root, out=tmp_path / "b", report=False)
    for who, states in before.items():
        assert all(torch.equal(states[0][k], built[who][0][k]) for k in states[0]), who
    [a], [b] = (list((tmp_path / run / "victims").glob("*.pt")) for run in ("a", "b"))
    state_a, state_b = (read_checkpoint(p)["state"] for p in (a, b))
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert first.clone_acc.tolist() == second.clone_acc.tolist() and first.fidelity.tolist() == second.fidelity.tolist()


def test_every_stream_of_a_run_has_its_own_seed(tmp_path, mnist_root, monkeypatch, one_thread):
    """The (seed, purpose) pairs a real run asks for map to distinct seeds, for many cell seeds."""
    asked: set[tuple[int, str]] = set()
    for owner in (VictimContext, AttackContext):
        real = owner.seed_for
        monkeypatch.setattr(owner, "seed_for", lambda self, purpose, real=real: (asked.add((self.seed, purpose)), real(self, purpose))[1])
    real_derive = msbench.seeds.derive_seed
    for user in (msbench.runner.victims, msbench.runner.evaluate):  # the victims' build and fit streams, the attack's stream
        monkeypatch.setattr(user, "derive_seed", lambda seed, purpose: (asked.add((seed, purpose)), real_derive(seed, purpose))[1])
    suite = tiny_suite(tmp_path, matrix={"defenses": ["ini", "mad"], "attacks": ["knockoff", "jbda"], "label_modes": ["soft"]},
                       run={"train_subset": 100, "test_subset": 50}, victim={"epochs": 1},
                       attacks={"knockoff": {"budget": 50}, "jbda": {"seeds": 10, "rounds": 2, "epochs_per_round": 1}},
                       datasets={"mnist": {"surrogate": "emnist-letters", "ood": "fashionmnist"}})
    frame = msbench.run_suite(suite, data_root=mnist_root, out=tmp_path / "run", report=False)
    assert (frame.status == "ok").all(), frame.error.tolist()
    purposes = {purpose for _, purpose in asked}
    assert {"victim", "ini.surrogate", "mad.surrogate", "ini.train", "vanilla.train", "attack", "clone",
            "knockoff.queries"} <= purposes
    pairs = asked | {(seed, purpose) for seed in range(50) for purpose in purposes}
    assert len({derive_seed(seed, purpose) for seed, purpose in pairs}) == len(pairs)


SHAPE = (1, 28, 28)
PLUGIN_RUNS = {  # attack, its settings, the defense chain it is told, and the streams it must ask for
    "activethief": (ActiveThief, dict(budget=40, strategy="random", rounds=2, initial_fraction=0.25), "",
                    {"activethief.pool", "activethief.picks", "activethief.train", "clone"}),
    "knockoff-avg": (KnockoffAveraged, dict(budget=40, copies=2, curve=[20]), "",
                     {"knockoff-avg.queries", "knockoff-avg.perturbations", "knockoff-avg.train", "clone"}),
    "dfme": (DFME, dict(budget=48, batch_size=8, clone_steps=1, nz=16, ngf=8), "",
             {"dfme.generator", "dfme.noise", "dfme.probes", "clone"}),
    "recovery": (Recovery, dict(budget=40, pairs=10, shadow_draws=2, shadow_epochs=1, restorer_epochs=2), "random_noise+mad",
                 {"recovery.queries", "recovery.train", "recovery.shadow", "recovery.shadow.train",
                  "recovery.shadow_defense.draw0", "recovery.shadow_defense.draw1", "recovery.restorer",
                  "recovery.restorer.train", "clone", "random_noise.answers", "mad.surrogate", "mad.build", "mad.fit"}),
}


def make_model() -> torch.nn.Module:
    return build_model("smallcnn", SHAPE, 10, (0.1307,), (0.3081,))


@pytest.mark.parametrize("name", PLUGIN_RUNS)
def test_attack_plugins_draw_only_from_their_named_streams(name, monkeypatch, one_thread):
    """Each attack's clone depends on its own seed only, not on torch's global generator, and each
    of its random streams (and the shadow defenses' it builds) has a seed of its own."""
    attack, settings, defense, streams = PLUGIN_RUNS[name]
    asked: set[tuple[int, str]] = set()
    for owner in (VictimContext, AttackContext):
        real = owner.seed_for
        monkeypatch.setattr(owner, "seed_for", lambda self, purpose, real=real: (asked.add((self.seed, purpose)), real(self, purpose))[1])
    images = torch.randint(0, 256, (100, *SHAPE), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    pool = ImageData(images, torch.zeros(100, dtype=torch.long)).unlabeled()
    victim = Softmax(build_seeded(make_model, 0)).eval()
    clones = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)  # whatever state torch's global generator is in
        ctx = AttackContext(query_data=lambda: pool, seed_data=lambda: pool, make_clone=make_model,
                            recipe=Recipe(epochs=1, batch_size=16), device=torch.device("cpu"), seed=7, num_classes=10,
                            defense=defense, input_shape=SHAPE)
        clones.append(attack(attack.Config(**settings)).run(Oracle(victim, "soft", settings["budget"], 10), ctx).state_dict())
    assert all(torch.equal(clones[0][k], clones[1][k]) for k in clones[0])
    purposes = {purpose for _, purpose in asked}
    assert streams <= purposes, streams - purposes
    pairs = asked | {(seed, purpose) for seed in range(50) for purpose in purposes}
    assert len({derive_seed(seed, purpose) for seed, purpose in pairs}) == len(pairs)


def test_derived_seeds_are_the_same_in_every_process():
    # the module alone, by its file: importing the package would load all of msbench twice for one hash
    code = ("import importlib.util as u; s = u.spec_from_file_location('seeds', %r); m = u.module_from_spec(s); "
            "s.loader.exec_module(m); print(m.derive_seed(7, 'ini.surrogate'))" % msbench.seeds.__file__)
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": salt}).stdout.strip() for salt in ("1", "2")}
    assert outputs == {str(derive_seed(7, "ini.surrogate"))}
