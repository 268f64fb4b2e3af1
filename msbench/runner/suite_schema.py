"""The typed suite: each section of a suite file as a dataclass, and the queries the runner asks of it.

``msbench.runner.suite`` reads a file into these types (checking every value); everything after that
(cells, victims, timing, the report's suite.json) reads only these.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from msbench.config import as_dict
from msbench.data import DatasetSpec
from msbench.defenses import OutputDefense, reference_defense
from msbench.defenses.chain import resolve_chain
from msbench.oracle import LabelMode
from msbench.registry import ATTACKS, DEFENSES
from msbench.training import Recipe


def defense_presentation(plugin: type, name: str) -> dict[str, Any]:
    """How reports show a defense, as its class declares it: label (its registry name where it declares
    none), colour, paper position, whether it is the reference row or the ablation reference, and for an
    output defense its default base and its colour over another defense's victim (None otherwise)."""
    output = issubclass(plugin, OutputDefense)
    return {"label": plugin.label or name, "color": plugin.color, "paper_order": plugin.paper_order,
            "reference": bool(plugin.reference), "ablation_reference": bool(plugin.ablation_reference),
            "default_base": plugin.default_base if output else None,
            "color_over_base": plugin.color_over_base if output else None}


def attack_presentation(plugin: type, name: str) -> dict[str, Any]:
    """How reports show an attack: label, colour, paper position, and its roles (a pool attack reads
    ``surrogate``)."""
    return {"label": plugin.label or name, "color": plugin.color, "paper_order": plugin.paper_order,
            "roles": list(plugin.roles)}


@dataclass
class Matrix:
    """The cross product a suite runs: every dataset x arch x defense x attack x label mode x seed."""

    datasets: list[str]
    archs: list[str]
    defenses: list[str]
    attacks: list[str]
    label_modes: list[LabelMode] = field(default_factory=lambda: ["soft", "hard"])
    seeds: list[int] = field(default_factory=lambda: [0])


@dataclass
class RunOptions:
    device: str = "auto"  # "auto", "cpu", "cuda" or "cuda:N"
    train_subset: int | None = None  # victim training images per dataset (None: all)
    test_subset: int | None = None  # test images for benign / clone accuracy (None: all)
    val_fraction: float = 0.1  # of the training subset, held out for benign-accuracy matching
    match_benign: float | None = None  # points: tune output defenses to stay this close to their base victim
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: training steps under autocast (msbench.compute)
    channels_last: bool = False  # convolutional models in NHWC memory layout


@dataclass
class DatasetOptions:
    """Per-dataset settings: role datasets, subsets, and (with ``format``) a file dataset definition."""

    ood: str | None = None
    hash: str | None = None
    surrogate: str | None = None
    train_subset: int | None = None
    test_subset: int | None = None
    format: Literal["idx", "npz"] | None = None  # defines a new dataset read from files
    like: str | None = None  # registered dataset whose shape and normalisation it shares
    train: Any = None  # npz path, or {images, labels} idx paths, relative to the data root
    test: Any = None
    num_classes: int | None = None
    note: str = ""
    victim: dict[str, Any] | None = None  # recipe fields overriding the victims' recipe on this dataset
    union: list[str] | None = None  # defines a new dataset: its members' images, one after another


@dataclass
class PluginSettings:
    """A defense's or attack's Config, plus an optional training-recipe override."""

    config: Any
    recipe: Recipe


@dataclass
class Suite:
    name: str
    path: Path
    description: str
    matrix: Matrix
    run: RunOptions
    victim: Recipe
    clone: Recipe
    defenses: dict[str, PluginSettings]
    attacks: dict[str, PluginSettings]
    datasets: dict[str, DatasetOptions]
    specs: dict[str, DatasetSpec]  # every dataset the suite touches, registered or file-defined
    plugins: list[str]
    raw: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)  # sections added by later stages (timing, report)

    # -- queries the runner needs -------------------------------------------------------------
    def chain(self, composition: str) -> list[str]:
        return resolve_chain(composition)

    def spec(self, name: str) -> DatasetSpec:
        return self.specs[name]

    def role(self, dataset: str, role: str) -> str | None:
        options = self.datasets.get(dataset, DatasetOptions())
        return getattr(options, role) or self.specs[dataset].roles.get(role)

    def victim_recipe(self, dataset: str, defense: str) -> Recipe:
        """A defense's victim recipe on a dataset: the defense's, then the dataset's overrides."""
        overrides = self.datasets.get(dataset, DatasetOptions()).victim or {}
        return self.defenses[defense].recipe.with_(**overrides)

    def subset(self, dataset: str, which: str) -> int | None:
        options = self.datasets.get(dataset, DatasetOptions())
        return getattr(options, f"{which}_subset") or getattr(self.run, f"{which}_subset")

    def resolved(self) -> dict[str, Any]:
        """The suite with every default filled in: what the run directory records."""
        return {
            "name": self.name, "description": self.description, "matrix": as_dict(self.matrix),
            "run": as_dict(self.run), "victim": as_dict(self.victim), "clone": as_dict(self.clone),
            "defenses": {k: {"config": as_dict(v.config), "recipe": as_dict(v.recipe)} for k,
                         v in self.defenses.items()},
            "attacks": {k: {"config": as_dict(v.config), "recipe": as_dict(v.recipe)} for k, v in self.attacks.items()},
            "datasets": {k: as_dict(v) for k, v in self.datasets.items()}, "plugins": self.plugins,
            "file": str(self.path),  # as given (relative where it was): where the report looks for the plugins
            "presentation": self.presentation(),
            **{k: as_dict(v) for k, v in self.extra.items()},
        }

    def presentation(self) -> dict[str, dict[str, dict[str, Any]]]:
        """How each plugin the suite names is shown, as the plugins installed now declare it: every defense
        of the matrix and of ``[timing]`` with each link of its chain (``ini+mad``: ini, mad; ``mad``: its
        default base too), the reference defense, and every attack. The report reads this, not the plugins
        installed where it renders. No cell or victim key and no settings id hashes it (a job's in-process
        workspace key hashes the whole resolved suite: the same for the same suite and plugins)."""
        try:
            reference = [reference_defense()]
        except LookupError:  # no single reference registered: the suite's own names still record
            reference = []
        timed = getattr(self.extra.get("timing"), "defenses", None) or []  # [timing] may time chains the matrix lacks
        links = [link for composition in self.matrix.defenses + list(timed) for link in resolve_chain(composition)]
        defenses = dict.fromkeys(reference + links + list(self.defenses))
        attacks = dict.fromkeys([str(a).lower() for a in self.matrix.attacks] + list(self.attacks))
        return {"defenses": {n: defense_presentation(DEFENSES.get(n), n) for n in defenses if n in DEFENSES},
                "attacks": {n: attack_presentation(ATTACKS.get(n), n) for n in attacks if n in ATTACKS}}
