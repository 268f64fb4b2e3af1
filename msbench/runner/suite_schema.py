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
from msbench.defenses.chain import resolve_chain
from msbench.oracle import LabelMode
from msbench.training import Recipe


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
            **{k: as_dict(v) for k, v in self.extra.items()},
        }
