"""An attack registered from outside the package runs in a suite like a built-in one."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

import msbench
from msbench.registry import ATTACKS
from tests.conftest import tiny_suite, unregister

PLUGINS = Path(__file__).parent / "plugins"

SUITE_CHANGES = {
    "name": "noise",
    "plugins": ["random_noise_attack"],
    "matrix": {"attacks": ["uniform-noise"], "seeds": None},
    "victim": {"epochs": 1},
    "attacks": {"knockoff": None, "uniform-noise": {"budget": 300, "recipe": {"batch_size": 50}}},
    "datasets": None,
}


@pytest.fixture
def plugin_folder(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    yield
    unregister(ATTACKS, "uniform-noise")
    sys.modules.pop("random_noise_attack", None)


def test_out_of_package_attack_runs_end_to_end(tmp_path, mnist_root, plugin_folder):
    assert "uniform-noise" not in ATTACKS  # the suite's plugins list registers it, not msbench
    suite = tiny_suite(tmp_path, "noise.toml", **SUITE_CHANGES)
    frame = msbench.run_suite(suite, data_root=mnist_root, out=tmp_path / "run", echo=lambda *_: None)
    assert "uniform-noise" in ATTACKS
    assert list(frame.status) == ["ok", "ok"] and list(frame.label_mode) == ["soft", "hard"]
    assert (frame.attack == "uniform-noise").all() and (frame.queries == 300).all() and (frame.budget == 300).all()
    assert frame.clone_acc.between(0, 100).all() and frame.fidelity.between(0, 100).all()
    assert [json.loads(n)["queries_from"] for n in frame.notes] == ["uniform noise"] * 2  # (with a chance-level note)
    curves = pd.read_csv(tmp_path / "run" / "curves.csv")
    assert list(curves.queries) == [300, 300] and list(curves.attack) == ["uniform-noise"] * 2
    resolved = json.loads((tmp_path / "run" / "suite.json").read_text())
    assert resolved["attacks"]["uniform-noise"]["recipe"]["batch_size"] == 50  # the per-attack recipe table
    assert resolved["attacks"]["uniform-noise"]["recipe"]["lr"] == 0.05  # over the suite's [clone] recipe


def test_an_attack_refuses_a_bad_setting_on_construction():
    """The Attack base class runs the plugin's ``check_config`` once, as Defense does, so a bad
    setting given through the Python API fails before any query, naming the attack and the key."""
    from msbench.attacks.jbda import JBDA
    from msbench.attacks.knockoff_avg import KnockoffAveraged

    with pytest.raises(ValueError, match=r"^jbda\.seeds: expected a positive integer, got 0$"):
        JBDA(JBDA.Config(seeds=0))
    with pytest.raises(ValueError, match=r"^knockoff-avg\.copies: "):
        KnockoffAveraged(KnockoffAveraged.Config(copies=0))
