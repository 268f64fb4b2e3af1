"""The contract every registered defense and attack must pass, on learnable synthetic data.

Each test is parametrised over the registries (``DEFENSES.names()``, ``ATTACKS.names()``), as
timm's tests run over ``list_models()``, so a plugin is checked as soon as it is registered. The
victims are built and the attacks run through the runner's own ``Workspace`` on the synthetic
suite of ``tests/conftest.py``; each victim is trained once for the whole module. A plugin that
needs other settings at test size declares them in its ``contract_settings`` (docs/plugins.md,
"The contract your plugin must pass").
"""
from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass
from typing import Any, Iterator

import pytest
import torch
from torch import nn

import msbench.runner.evaluate
from msbench.runner.cells import Cell, cell_key
from msbench.attacks import Attack
from msbench.config import build, choices, coerce
from msbench.data import ROLES
from msbench.defenses import OutputDefense, TrainingDefense
from msbench.registry import ATTACKS, DEFENSES
from msbench.runner.workspace import Workspace
from msbench.runner.suite import Suite, check_data, load_suite
from msbench.training import accuracy, predict_labels
from tests.conftest import SYNTHETIC_CLASSES, single_thread, synthetic_suite, unregister

DATASET, ARCH, SEED = "synth", "smallcnn", 0
BUDGET = 300  # below every built-in attack's own schedule, so the budget binds
CHANCE = 100.0 / SYNTHETIC_CLASSES
MATCH_BENIGN = 5.0  # points; benign matching runs, so every tunable defense goes through it

DEFENSE_NAMES = DEFENSES.names()
ATTACK_NAMES = ATTACKS.names()
TUNABLE = [n for n in DEFENSE_NAMES if issubclass(DEFENSES.get(n), OutputDefense) and DEFENSES.get(n).tunable and DEFENSES.get(n).tunable_grid]
WITH_REFERENCE = [n for n in DEFENSE_NAMES if "implementation" in {f.name for f in dataclasses.fields(DEFENSES.get(n).Config)}]


def contract_suite(tmp_path, **changes: Any) -> Suite:
    """The synthetic suite with every registered defense and attack, each at its declared test settings."""
    defenses = {name: dict(DEFENSES.get(name).contract_settings) for name in DEFENSE_NAMES if DEFENSES.get(name).contract_settings}
    attacks = {name: {"budget": BUDGET, **ATTACKS.get(name).contract_settings} for name in ATTACK_NAMES}
    path = synthetic_suite(tmp_path, matrix={"defenses": DEFENSE_NAMES, "attacks": ATTACK_NAMES},
                           run={"match_benign": MATCH_BENIGN}, defenses=defenses, attacks=attacks, **changes)
    suite = load_suite(path)
    check_data(suite, tmp_path)
    return suite


@dataclass
class Bench:
    """The module's workspace and the inputs every defense is asked about."""

    workspace: Workspace

    @property
    def suite(self) -> Suite:
        return self.workspace.suite

    def victim(self, name: str) -> tuple[nn.Module, dict[str, Any]]:
        return self.workspace.victims.get(DATASET, ARCH, self.suite.chain(name), SEED)

    def inputs(self) -> dict[str, torch.Tensor]:
        """In-distribution (test), out-of-distribution (the OOD role set) and uniform-noise queries."""
        test = self.workspace.splits(DATASET).test
        ood = self.workspace.role_data(DATASET, "ood")
        noise = torch.rand((64, *test.shape), generator=torch.Generator().manual_seed(5))
        return {"id": test.floats(slice(0, 128)), "ood": ood.floats(slice(0, 128)), "noise": noise}

    def build(self, name: str, **config: Any) -> nn.Module:
        """A fresh, untrained module of a defense, built as the runner builds it (``config`` over the suite's)."""
        cls = DEFENSES.get(name)
        defense = cls(dataclasses.replace(self.suite.defenses[name].config, **config))
        ctx = self.workspace.victim_context(DATASET, ARCH, name, SEED)
        torch.manual_seed(SEED)
        if not isinstance(defense, OutputDefense):
            return defense.build(ctx)
        base, _ = self.workspace.victims.get(DATASET, ARCH, self.suite.chain(name)[:-1], SEED)
        return defense.build(base, ctx)


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Iterator[Bench]:
    tmp = tmp_path_factory.mktemp("contracts")
    with single_thread():
        yield Bench(Workspace(contract_suite(tmp), tmp, tmp / "run", torch.device("cpu")))


def answers(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The module's answers from a fixed random state, so a stochastic defense is compared with itself:
    torch's global stream seeded, and every ``restart_randomness()`` hook of a wrapper with its own
    generator called (docs/plugins.md)."""
    for part in module.modules():
        restart = getattr(part, "restart_randomness", None)
        if callable(restart):
            restart()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return module(x)


# -- defenses -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", DEFENSE_NAMES)
def test_answers_are_probability_vectors(bench, name):
    victim, _ = bench.victim(name)
    for kind, x in bench.inputs().items():
        p = answers(victim, x)
        assert p.shape == (len(x), SYNTHETIC_CLASSES), f"{name} on {kind} inputs"
        finite, lowest = bool(torch.isfinite(p).all()), p.min().item()
        assert finite, f"{name} answers non-finite values on {kind} inputs"
        assert lowest >= 0, f"{name} answers negative probabilities ({lowest:.3g}) on {kind} inputs"
        off = (p.sum(dim=1) - 1).abs().max().item()
        assert off <= 1e-5, f"{name}'s answers on {kind} inputs do not sum to 1 (off by up to {off:.3g})"


@pytest.mark.parametrize("name", DEFENSE_NAMES)
def test_defended_victim_learns_the_task(bench, name):
    """A defense keeps a usable victim: benign accuracy far above chance on learnable data."""
    _, info = bench.victim(name)
    assert info["benign_acc"] > 3 * CHANCE


@pytest.mark.parametrize("name", TUNABLE)
def test_tunable_setting_changes_the_answers(bench, name):
    """Benign matching changes the setting only through ``tune``: the module must answer with it."""
    victim, info = bench.victim(name)
    defense = DEFENSES.get(name)(bench.suite.defenses[name].config)
    tunable, grid = defense.tunable, defense.tunable_grid
    assert info["tuned"]["name"] == tunable and info["tuned"]["value"] in grid
    assert defense.setting(victim) == info["tuned"]["value"]  # the matched setting is the one in use
    x = bench.workspace.splits(DATASET).val.floats()
    tuned = defense.setting(victim)
    try:
        outputs = []
        for value in (grid[0], grid[-1]):
            defense.tune(victim, value)
            assert defense.setting(victim) == value, f"{name}: tune({value}) is not the setting read back"
            outputs.append(answers(victim, x))
    finally:
        defense.tune(victim, tuned)
    changed = not torch.equal(*outputs)
    assert changed, f"{name}: {tunable} = {grid[0]} and {grid[-1]} give the same answers"


@pytest.mark.parametrize("name", DEFENSE_NAMES)
def test_saved_victim_loads_back_identically(bench, name):
    """A fresh workspace on the same run directory loads the cached victim into a fresh build."""
    victim, info = bench.victim(name)
    fresh = Workspace(bench.suite, bench.workspace.data_root, bench.workspace.run_dir, torch.device("cpu"))
    loaded, loaded_info = fresh.victims.get(DATASET, ARCH, bench.suite.chain(name), SEED)
    assert loaded is not victim and loaded_info == info
    for kind, x in bench.inputs().items():
        same = torch.equal(answers(loaded, x), answers(victim, x))
        assert same, f"{name} answers differently after loading ({kind} inputs)"


@pytest.mark.parametrize("name", WITH_REFERENCE)
def test_fast_form_equals_reference_form(bench, name):
    """Both ``implementation`` forms, loaded with the trained victim's weights, answer alike."""
    victim, info = bench.victim(name)
    defense = DEFENSES.get(name)(bench.suite.defenses[name].config)
    forms = {}
    for implementation in ("fast", "reference"):
        module = bench.build(name, implementation=implementation)
        module.load_state_dict(victim.state_dict())
        if info.get("tuned"):
            defense.tune(module, info["tuned"]["value"])
        forms[implementation] = module.eval()
    for kind, x in bench.inputs().items():
        gap = (answers(forms["fast"], x) - answers(forms["reference"], x)).abs().max().item()
        assert gap <= 1e-5, f"{name}: the fast form differs from the reference by {gap:.3g} on {kind} inputs"


# -- the declared contract, checked without training ----------------------------------------

PLUGINS = [(DEFENSES, name) for name in DEFENSE_NAMES] + [(ATTACKS, name) for name in ATTACK_NAMES]
COLOUR = re.compile(r"#[0-9A-Fa-f]{6}")


def _plugin_id(case: tuple[Any, str]) -> str:
    return f"{case[0].kind}-{case[1]}"


@pytest.mark.parametrize("registry, name", PLUGINS, ids=[_plugin_id(c) for c in PLUGINS])
def test_plugin_is_one_of_the_declared_types(registry, name):
    """The framework tells plugins apart by type: a defense is a TrainingDefense or an OutputDefense
    (never the bare base), an attack an Attack, and each is built from its default Config."""
    plugin = registry.get(name)
    types = (TrainingDefense, OutputDefense) if registry is DEFENSES else (Attack,)
    assert issubclass(plugin, types), f"{name} is a {plugin.__mro__[1].__name__}, not one of {[t.__name__ for t in types]}"
    assert not (issubclass(plugin, TrainingDefense) and issubclass(plugin, OutputDefense)), f"{name} is both kinds"
    assert plugin.registered_name == name
    plugin()  # the defaults are valid: every field has one, inside its vocabulary and past check_config


@pytest.mark.parametrize("registry, name", PLUGINS, ids=[_plugin_id(c) for c in PLUGINS])
def test_config_fields_are_typed_for_the_suite(registry, name):
    """Every Config field has an annotation the suite can check (``config.coerce``), and the test
    settings it declares are fields of it, accepted the way a suite's table is."""
    plugin = registry.get(name)
    hints = typing.get_type_hints(plugin.Config)
    assert set(hints) == {f.name for f in dataclasses.fields(plugin.Config)}
    for field_name, hint in hints.items():
        default = getattr(plugin.Config(), field_name)
        assert coerce(default, hint, name, field_name) == default, f"{name}.{field_name}: its default is not a {hint}"
    assert set(plugin.contract_settings) <= set(hints), f"{name}: contract_settings names no such field"
    build(plugin.Config, dict(plugin.contract_settings), name, name)
    assert set(plugin.former_defaults) <= set(hints), f"{name}: former_defaults names no such field"
    build(plugin.Config, dict(plugin.former_defaults), name, name)  # a value the field still accepts
    if "implementation" in hints:
        assert choices(hints["implementation"]) == ("fast", "reference"), f"{name}.implementation is not Literal['fast', 'reference']"


@pytest.mark.parametrize("registry, name", PLUGINS, ids=[_plugin_id(c) for c in PLUGINS])
def test_presentation_and_roles_have_the_declared_types(registry, name):
    """What reports read: a label string, a '#RRGGBB' colour or None, an integer paper position
    or None; and role datasets that msbench knows."""
    plugin = registry.get(name)
    assert isinstance(plugin.label, str)
    colours = [plugin.color] + ([plugin.color_over_base] if registry is DEFENSES and issubclass(plugin, OutputDefense) else [])
    for colour in colours:
        assert colour is None or COLOUR.fullmatch(colour), f"{name}: colour {colour!r} is not '#RRGGBB'"
    assert plugin.paper_order is None or (isinstance(plugin.paper_order, int) and plugin.paper_order >= 0)
    assert set(plugin.roles) <= set(ROLES), f"{name}: unknown roles {set(plugin.roles) - set(ROLES)}"


@pytest.mark.parametrize("registry", [DEFENSES, ATTACKS], ids=["defenses", "attacks"])
def test_paper_positions_are_distinct(registry):
    orders = [registry.get(n).paper_order for n in registry.names() if registry.get(n).paper_order is not None]
    assert len(orders) == len(set(orders)), f"two {registry.kind}s share a paper_order: {sorted(orders)}"


@pytest.mark.parametrize("name", [n for n in DEFENSE_NAMES if issubclass(DEFENSES.get(n), OutputDefense)])
def test_output_defense_tunable_is_a_config_field(name):
    """``tunable`` names a numeric Config field whose grid benign matching walks, strongest first."""
    defense = DEFENSES.get(name)
    assert DEFENSES.get(defense.default_base) and issubclass(DEFENSES.get(defense.default_base), TrainingDefense)
    if defense.tunable is None:
        assert not defense.tunable_grid, f"{name}: a tunable_grid without a tunable"
        return
    hints = typing.get_type_hints(defense.Config)
    assert defense.tunable in hints and hints[defense.tunable] in (int, float), f"{name}: tunable '{defense.tunable}'"
    assert len(defense.tunable_grid) >= 2, f"{name}: benign matching needs at least two grid values"


# -- the runner refuses a tunable that tunes nothing ----------------------------------------------

class _Scaled(nn.Module):
    """Mixes the base victim's answer with uniform: (1 - s) y + s / K."""

    def __init__(self, base: nn.Module, strength: float):
        super().__init__()
        self.base, self.scale = base, strength  # stored under another name than the declared tunable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        return (1 - self.scale) * y + self.scale / y.shape[1]


class _Frozen(_Scaled):
    """Has the declared attribute, but reads a copy taken at construction."""

    def __init__(self, base: nn.Module, strength: float):
        super().__init__(base, strength)
        self.strength = strength


class _Renamed(OutputDefense):
    tunable = "strength"
    tunable_grid = (1.0, 0.5, 0.0)

    @dataclass
    class Config:
        strength: float = 0.5

    def build(self, base: nn.Module, ctx) -> nn.Module:
        return _Scaled(base, self.config.strength)


class _Unread(_Renamed):
    def build(self, base: nn.Module, ctx) -> nn.Module:
        return _Frozen(base, self.config.strength)


@pytest.mark.parametrize("plugin, message", [(_Renamed, "has no attribute 'strength'"),
                                             (_Unread, "must read the attribute 'strength'")])
def test_benign_matching_refuses_a_tunable_the_module_does_not_read(bench, plugin, message):
    name = f"contract-{plugin.__name__.strip('_').lower()}"
    DEFENSES.register(name)(plugin)
    try:
        suite = load_suite(synthetic_suite(bench.workspace.data_root, f"{name}.toml", matrix={"defenses": [name]},
                                           run={"match_benign": MATCH_BENIGN}))
        workspace = Workspace(suite, bench.workspace.data_root, bench.workspace.run_dir, torch.device("cpu"))
        with single_thread(), pytest.raises(ValueError, match=message):
            workspace.victims.get(DATASET, ARCH, suite.chain(name), SEED)
    finally:
        unregister(DEFENSES, name)


# -- attacks ------------------------------------------------------------------------------------

@pytest.mark.parametrize("label_mode", ["soft", "hard"])
@pytest.mark.parametrize("attack", ATTACK_NAMES)
def test_attack_stays_within_its_budget_and_its_clone_learns(bench, monkeypatch, attack, label_mode):
    """Against Vanilla: every image the victim answers for the attack is within the budget and is
    the count recorded, and the clone beats chance by a wide margin on learnable data."""
    answered = []
    real_oracle = msbench.runner.evaluate.Oracle

    def counting_oracle(predict, *args, **kwargs):
        def count(x: torch.Tensor) -> torch.Tensor:
            answered.append(len(x))
            return predict(x)

        return real_oracle(count, *args, **kwargs)

    monkeypatch.setattr(msbench.runner.evaluate, "Oracle", counting_oracle)
    cell = Cell(DATASET, ARCH, "vanilla", attack, label_mode, SEED)
    record = msbench.runner.evaluate.run_cell(bench.workspace, cell, cell_key(bench.suite, cell))
    budget = bench.suite.attacks[attack].config.budget
    assert record["budget"] == budget
    assert sum(answered) <= budget, f"{attack} had {sum(answered)} images answered on a budget of {budget}"
    assert record["queries"] == sum(answered), "the recorded count is not the number of images answered"
    if ATTACKS.get(attack).spends_budget:
        assert record["queries"] == budget
    if ATTACKS.get(attack).learns_at_test_size:
        assert record["clone_acc"] > 3 * CHANCE, f"{attack} ({label_mode}): clone accuracy {record['clone_acc']:.1f}%"


def test_synthetic_data_is_learnable_and_its_roles_differ(bench):
    """The premise of the checks above: a victim learns the synthetic classes; the OOD set is not
    its distribution; and the surrogate set's own labels say nothing of the victim's, so only the
    oracle's answers can teach a clone."""
    victim, info = bench.victim("vanilla")
    assert info["benign_acc"] > 80
    for role in ("ood", "surrogate"):
        data = bench.workspace.role_data(DATASET, role)
        agreement = accuracy(predict_labels(victim, data.images), data.labels)
        assert agreement < 2 * CHANCE, f"the victim agrees with the {role} set's labels on {agreement:.1f}%"
