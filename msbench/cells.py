"""Cells: one (dataset, arch, defense, attack, label mode, seed) and the content hashes that key caches.

A cell's identity hashes everything that determines its result, so re-running a suite skips
finished cells and a changed setting recomputes only the cells (and victims) it touches.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass
from typing import Any

from msbench.config import as_dict
from msbench.registry import DEFENSES
from msbench.suite import Suite
from msbench.sweep import sweep_options

RESULT_VERSION = 1  # bump when a change to msbench invalidates earlier results


@dataclass(frozen=True)
class Cell:
    dataset: str
    arch: str
    defense: str  # a composition such as "ini+mad"
    attack: str
    label_mode: str
    seed: int
    setting: float | None = None  # a trade-off sweep's value of the last defense's tunable (None: matched or default)

    def label(self) -> str:
        swept = "" if self.setting is None else f"@{self.setting:g}"
        return f"{self.dataset}/{self.arch}/{self.defense}{swept}/{self.attack}/{self.label_mode}/seed{self.seed}"


def digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def expand(suite: Suite) -> list[Cell]:
    """The matrix's cells, then the ``[sweep]`` cells: one per swept value of each swept composition."""
    m = suite.matrix
    cells = [Cell(d, a, f.lower(), k.lower(), mode, s)
             for d, a, f, k, mode, s in itertools.product(m.datasets, m.archs, m.defenses, m.attacks, m.label_modes, m.seeds)]
    sweep = sweep_options(suite)
    if sweep is not None:
        for composition in sweep.defenses:
            values = sweep.values(DEFENSES.get(suite.chain(composition)[-1]))
            cells += [Cell(d, a, composition.lower(), k.lower(), mode, s, float(v))
                      for d, a, v, k, mode, s in itertools.product(sweep.datasets or m.datasets, m.archs, values,
                                                                    sweep.attacks or m.attacks, sweep.label_modes or m.label_modes, m.seeds)]
    return list(dict.fromkeys(cells))


def data_identity(suite: Suite, dataset: str) -> dict[str, Any]:
    """What of the data determines a victim: the dataset, its subsets, and its role datasets."""
    return {"dataset": dataset, "train_subset": suite.subset(dataset, "train"), "test_subset": suite.subset(dataset, "test"),
            "val_fraction": suite.run.val_fraction, "roles": {r: suite.role(dataset, r) for r in ("ood", "hash")},
            "files": as_dict(suite.datasets.get(dataset)) if suite.datasets.get(dataset) and suite.datasets[dataset].format else None,
            "role_files": {r: as_dict(suite.datasets.get(suite.role(dataset, r))) for r in ("ood", "hash") if suite.role(dataset, r) in suite.datasets}}


def victim_key(suite: Suite, dataset: str, arch: str, chain: list[str], seed: int) -> str:
    """Hash of a victim: data, arch, seed, and each defense of the chain with its config and recipe
    (and, for a tunable output defense, the benign-accuracy tolerance that picks its setting)."""
    links = []
    for name in chain:
        link = {"defense": name, "config": as_dict(suite.defenses[name].config), "recipe": as_dict(suite.victim_recipe(dataset, name))}
        defense = DEFENSES.get(name)
        if suite.run.match_benign is not None and getattr(defense, "tunable", None):
            link["match_benign"] = [suite.run.match_benign, list(defense.tunable_grid)]
        links.append(link)
    return digest({"v": RESULT_VERSION, "data": data_identity(suite, dataset), "arch": arch, "seed": seed, "chain": links})


def cell_key(suite: Suite, cell: Cell) -> str:
    chain = suite.chain(cell.defense)
    attack = suite.attacks[cell.attack]
    identity = {k: v for k, v in asdict(cell).items() if not (k == "setting" and v is None)}  # unswept keys as before
    return digest({"victim": victim_key(suite, cell.dataset, cell.arch, chain, cell.seed), "cell": identity,
                   "attack": as_dict(attack.config), "recipe": as_dict(attack.recipe),
                   "surrogate": suite.role(cell.dataset, "surrogate")})
