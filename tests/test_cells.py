"""Cache keys: a change to the suite changes exactly the victim and cell keys that read it."""
from __future__ import annotations

import copy
import importlib
import sys

import pytest

from msbench.runner.cells import cell_key, expand, victim_key
from msbench.code_identity import code_identity
from msbench.defenses.ini import InI
from msbench.runner.suite import parse_suite
from tests.conftest import merged

IDX = {"images": "KMNIST/raw/t10k-images-idx3-ubyte", "labels": "KMNIST/raw/t10k-labels-idx1-ubyte"}
BASE = {
    "name": "keys",
    "matrix": {"datasets": ["mnist"], "archs": ["smallcnn"], "defenses": ["vanilla", "mad", "am", "edm", "ini", "ini+mad"],
               "attacks": ["knockoff", "jbda"], "label_modes": ["soft"], "seeds": [0]},
    "run": {"train_subset": 600, "test_subset": 200, "match_benign": 1.0},
    "victim": {"epochs": 2}, "clone": {"epochs": 2},
    "datasets": {"mnist": {"ood": "ood-set", "hash": "hash-set", "surrogate": "letters"},
                 "ood-set": {"format": "idx", "like": "mnist", "test": IDX},
                 "hash-set": {"format": "idx", "like": "mnist", "test": IDX},
                 "letters": {"format": "npz", "like": "mnist", "train": "letters.npz"}},
}
VICTIMS = {"vanilla": ["vanilla"], "vanilla+mad": ["vanilla", "mad"], "oe": ["oe"], "oe+am": ["oe", "am"], "edm": ["edm"],
           "ini": ["ini"], "ini+mad": ["ini", "mad"]}
OF_COMPOSITION = {"vanilla": "vanilla", "mad": "vanilla+mad", "am": "oe+am", "edm": "edm", "ini": "ini", "ini+mad": "ini+mad"}
ALL = set(VICTIMS)
OOD_READERS = {"oe", "oe+am", "edm", "ini", "ini+mad"}  # OE, AM (and AM over OE), EDM, InI and MAD over InI
TUNED = {"vanilla+mad", "oe+am", "ini+mad"}

# (change to the suite, victims whose key must change, attacks whose cells must change whatever their victim)
CHANGES = {
    "ood dataset": ({"datasets": {"mnist": {"ood": "fashionmnist"}}}, OOD_READERS, set()),
    "ood files": ({"datasets": {"ood-set": {"test": {**IDX, "images": "elsewhere"}}}}, OOD_READERS, set()),
    "hash dataset": ({"datasets": {"mnist": {"hash": "fashionmnist"}}}, {"edm"}, set()),
    "hash files": ({"datasets": {"hash-set": {"like": "fashionmnist"}}}, {"edm"}, set()),
    "surrogate dataset": ({"datasets": {"mnist": {"surrogate": "emnist-letters"}}}, set(), {"knockoff"}),
    "surrogate files": ({"datasets": {"letters": {"train": "other.npz"}}}, set(), {"knockoff"}),
    "ini config": ({"defenses": {"ini": {"gamma_iso": 0.5}}}, {"ini", "ini+mad"}, set()),
    "ini recipe": ({"defenses": {"ini": {"recipe": {"epochs": 3}}}}, {"ini", "ini+mad"}, set()),
    "mad config": ({"defenses": {"mad": {"strategy": "argmax"}}}, {"vanilla+mad", "ini+mad"}, set()),
    "am config": ({"defenses": {"am": {"nu": 500.0}}}, {"oe+am"}, set()),
    "edm config": ({"defenses": {"edm": {"members": 3}}}, {"edm"}, set()),
    "victim recipe": ({"victim": {"epochs": 3}}, ALL, set()),
    "dataset victim recipe": ({"datasets": {"mnist": {"victim": {"lr": 0.01}}}}, ALL, set()),
    "train subset": ({"run": {"train_subset": 500}}, ALL, set()),
    "dataset test subset": ({"datasets": {"mnist": {"test_subset": 100}}}, ALL, set()),
    "val fraction": ({"run": {"val_fraction": 0.2}}, ALL, set()),
    "match benign": ({"run": {"match_benign": 2.0}}, TUNED, set()),
    "seed": ({"matrix": {"seeds": [1]}}, ALL, set()),
    "clone recipe": ({"clone": {"epochs": 3}}, set(), {"knockoff", "jbda"}),
    "knockoff config": ({"attacks": {"knockoff": {"budget": 100}}}, set(), {"knockoff"}),
    "jbda config": ({"attacks": {"jbda": {"seeds": 10}}}, set(), {"jbda"}),
    "jbda recipe": ({"attacks": {"jbda": {"recipe": {"lr": 0.01}}}}, set(), {"jbda"}),
    "device": ({"run": {"device": "cpu"}}, set(), set()),
    "name and description": ({"name": "renamed", "description": "words"}, set(), set()),
    "dataset note": ({"datasets": {"letters": {"note": "a note"}, "mnist": {"note": "another"}}}, set(), set()),
    "label modes": ({"matrix": {"label_modes": ["soft", "hard"]}}, set(), set()),  # the soft cells keep their keys
}


def keys(raw: dict) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    suite = parse_suite(copy.deepcopy(raw))
    seed = suite.matrix.seeds[0]
    victims = {name: victim_key(suite, "mnist", "smallcnn", chain, seed) for name, chain in VICTIMS.items()}
    cells = {(cell.defense, cell.attack): cell_key(suite, cell) for cell in expand(suite) if cell.label_mode == "soft"}
    return victims, cells


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_a_change_changes_exactly_the_keys_that_read_it(field):
    change, victims_read, attacks_read = CHANGES[field]
    (victims, cells), (victims_after, cells_after) = keys(BASE), keys(merged(BASE, change))
    assert {name for name in victims if victims[name] != victims_after[name]} == victims_read
    expected = {(defense, attack) for defense, attack in cells if OF_COMPOSITION[defense] in victims_read or attack in attacks_read}
    assert {cell for cell in cells if cells[cell] != cells_after[cell]} == expected


def test_a_declared_version_changes_the_keys_of_what_the_plugin_made(monkeypatch):
    victims, cells = keys(BASE)
    monkeypatch.setattr(InI, "version", "2", raising=False)
    try:
        victims_after, cells_after = keys(BASE)
    finally:
        monkeypatch.undo()
    assert {name for name in victims if victims[name] != victims_after[name]} == {"ini", "ini+mad"}
    assert {cell for cell in cells if cells[cell] != cells_after[cell]} == {("ini", "knockoff"), ("ini", "jbda"),
                                                                           ("ini+mad", "knockoff"), ("ini+mad", "jbda")}


def test_an_edited_plugin_source_changes_its_code_identity(tmp_path, monkeypatch):
    module = tmp_path / "edited_plugin.py"
    monkeypatch.syspath_prepend(str(tmp_path))
    identities = []
    for body in ("    scale = 1.0\n", "    scale = 2.0\n"):
        module.write_text("class Plugin:\n" + body)
        sys.modules.pop("edited_plugin", None)
        identities.append(code_identity(importlib.import_module("edited_plugin").Plugin))
    sys.modules.pop("edited_plugin", None)
    assert identities[0] != identities[1] and all(i.startswith("source:") for i in identities)
