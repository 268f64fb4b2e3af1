"""Cells: one (dataset, arch, defense, attack, label mode, seed) and the content hashes that key caches.

A key hashes exactly what its result reads, so re-running a suite skips finished cells and a
changed setting recomputes only the cells (and victims) that read it:

- a victim: its dataset's identity (subsets, validation split, the files of a file dataset), the
  arch, the seed, and per defense of its chain the defense's config, recipe, code identity and the
  role datasets *it declares* in ``roles`` (Vanilla's victim does not depend on the OOD set);
- a cell: its victim, the attack's config, recipe, code identity and declared role datasets (only
  KnockoffNets' cells depend on the surrogate set), the label mode and the seed.

Code is part of every key (``msbench.code_identity``): a plugin's ``version`` class attribute when
it declares one, else the hash of its module's import closure (``pcgrad.py`` for InI, ``mad.py``
for ModelGuard-S), and the closure of the stage that ran (training, data, models and checkpoints
for a victim; the oracle, distortion and attack contract on top for a cell). So editing a helper
recomputes exactly the results that ran it, and editing the report recomputes none.
``RESULT_VERSION`` remains for a change of meaning that no source file shows.
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import json
from dataclasses import asdict, dataclass
from typing import Any

from msbench.code_identity import CELL_STAGE, VICTIM_STAGE, code_identity, stage_identity
from msbench.compute import Compute
from msbench.config import as_dict
from msbench.defenses import OutputDefense
from msbench.registry import ARCHITECTURES, ATTACKS, DATASETS, DEFENSES
from msbench.runner.suite_schema import Suite
from msbench.runner.sweep import sweep_options

# bump when a change of meaning invalidates earlier results (2: independent random streams; 3: code closures in keys)
RESULT_VERSION = 3
# what of a file dataset's definition its images depend on
FILE_FIELDS = ("format", "like", "train", "test", "num_classes")


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
    """A short content hash of a JSON-able payload (keys sorted): what cache keys are made of."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def expand(suite: Suite) -> list[Cell]:
    """The matrix's cells, then the ``[sweep]`` cells: one per swept value of each swept composition."""
    m = suite.matrix
    cells = [Cell(d, a, f.lower(), k.lower(), mode, s)
             for d, a, f, k, mode, s in itertools.product(m.datasets, m.archs, m.defenses, m.attacks, m.label_modes,
                                                          m.seeds)]
    sweep = sweep_options(suite)
    if sweep is not None:
        for composition in sweep.defenses:
            values = sweep.values(DEFENSES.get(suite.chain(composition)[-1]))
            cells += [Cell(d, a, composition.lower(), k.lower(), mode, s, float(v))
                      for d, a, v, k, mode, s in itertools.product(sweep.datasets or m.datasets, m.archs, values,
                                                                    sweep.attacks or m.attacks,
                                                                    sweep.label_modes or m.label_modes, m.seeds)]
    return list(dict.fromkeys(cells))


def dataset_files(suite: Suite, name: str | None) -> dict[str, Any] | None:
    """A file dataset's definition (paths, format, shape source), a union's members with theirs; None
    for a registered dataset."""
    options = suite.datasets.get(name) if name else None
    if options is not None and options.union:
        return {"union": [{"name": member, "files": dataset_files(suite, member)} for member in options.union]}
    if options is None or not options.format:
        return None
    return {k: v for k, v in as_dict(options).items() if k in FILE_FIELDS}


def role_identity(suite: Suite, dataset: str, roles: tuple[str, ...]) -> dict[str, Any]:
    """The datasets a plugin's declared roles resolve to on ``dataset``, with their files."""
    return {role: {"name": (name := suite.role(dataset, role)), "files": dataset_files(suite, name)}
            for role in roles}


def data_identity(suite: Suite, dataset: str) -> dict[str, Any]:
    """What of the victim's own data determines it: the dataset, its subsets, the validation split."""
    return {"dataset": dataset, "train_subset": suite.subset(dataset, "train"),
            "test_subset": suite.subset(dataset, "test"), "val_fraction": suite.run.val_fraction,
            "files": dataset_files(suite, dataset)}


def victim_key(suite: Suite, dataset: str, arch: str, chain: list[str], seed: int) -> str:
    """Hash of a victim: data, arch, seed, and each defense of the chain with its config, recipe,
    code and declared role datasets (and, for a tunable output defense, the benign-accuracy
    tolerance that picks its setting)."""
    links = []
    for name in chain:
        defense = DEFENSES.get(name)
        link = {"defense": name, "config": as_dict(suite.defenses[name].config),
                "recipe": as_dict(suite.victim_recipe(dataset, name)),
                "code": code_identity(defense), "roles": role_identity(suite, dataset, tuple(defense.roles))}
        if suite.run.match_benign is not None and issubclass(defense, OutputDefense) and defense.tunable:
            link["match_benign"] = [suite.run.match_benign, list(defense.tunable_grid)]
        links.append(link)
    # {} for fp32, channels-first: keys unchanged
    compute = Compute(suite.run.precision, suite.run.channels_last).non_default()
    return digest({"v": RESULT_VERSION, "data": data_identity(suite, dataset), "arch": arch, "seed": seed,
                   "chain": links, "framework": stage_identity(VICTIM_STAGE, registered_modules(suite, dataset, arch)),
                   **({"compute": compute} if compute else {})})


def registered_modules(suite: Suite, dataset: str, arch: str) -> list[str]:
    """The modules defining the architecture and the datasets a victim reads, as registered (a plugin's
    architecture or dataset is no import of any stage, so its closure is added here)."""
    names = [dataset, *(suite.role(dataset, role) for role in ("ood", "hash", "surrogate"))]
    loaders = [DATASETS.get(name).load for name in dict.fromkeys(names) if name and name in DATASETS.names()]
    return sorted({getattr(thing, "__module__", None) or "" for thing in [ARCHITECTURES.get(arch), *loaders]} - {""})


def cell_key(suite: Suite, cell: Cell) -> str:
    """Hash of a cell: its victim's key, the cell itself, and the attack's config, recipe, code and declared role
    datasets."""
    chain = suite.chain(cell.defense)
    settings = suite.attacks[cell.attack]
    attack = ATTACKS.get(cell.attack)
    identity = {k: v for k, v in asdict(cell).items() if not (k == "setting" and v is None)}  # unswept keys as before
    wrapped = {name: code_identity(ATTACKS.get(name)) for name in attack(settings.config).wrapped()}  # run inside it
    return digest({"victim": victim_key(suite, cell.dataset, cell.arch, chain, cell.seed), "cell": identity,
                   "attack": as_dict(settings.config), "recipe": as_dict(settings.recipe),
                   "code": code_identity(attack),
                   **({"wraps": wrapped} if wrapped else {}),
                   "framework": stage_identity(CELL_STAGE),
                   "roles": role_identity(suite, cell.dataset, tuple(attack.roles))})
