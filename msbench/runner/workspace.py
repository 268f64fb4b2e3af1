"""A run's workspace: the suite, where its data and artifacts live, the device, and what is built from them.

Everything a cell or a victim reads about the run comes from here: the victim's data splits (the
same subsets for every seed), role datasets shaped like the victim's inputs, a model factory and a
defense's ``VictimContext``. The victims themselves are kept by ``ws.victims``
(``msbench.runner.victims``); one cell's attack and record are made by ``msbench.runner.evaluate.run_cell``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from msbench.config import SuiteError
from msbench.compute import Compute
from msbench.data import ImageData, load_split
from msbench.defenses import VictimContext
from msbench.isolation import TorchState, snapshot
from msbench.models import build_model
from msbench.registry import DEFENSES
from msbench.runner.suite_checks import device_problem
from msbench.runner.suite_schema import Suite
from msbench.runner.victims import VictimCache

SUBSET_SEED = 0  # data subsets and the validation split are the same for every seed of a suite


def requested_device(device: str | None, suite: Suite) -> tuple[str, str]:
    """The device a run, plan or timing asks for, and who asked (for a one-line error): ``--device`` when
    given, else the suite's ``run.device``. The one place that default is applied; the name travels
    to each worker, which resolves it on its own machine (``resolve_device``: ``auto`` finds its GPU)."""
    return (device, "--device") if device else (suite.run.device, f"{suite.path}: run.device")


def resolve_device(name: str) -> torch.device:
    """``auto`` as the GPU where this process has one, else the CPU; any other name as it is."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_device(name: str, where: str) -> None:
    """Refuse, before any work, a device this machine does not have (``cuda`` without a GPU)."""
    problem = device_problem(name)
    if problem is None and name != "auto":
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            problem = f"'{name}' is not available on this machine (no CUDA GPU); use 'cpu' or 'auto'"
        elif device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
            problem = f"'{name}' is not available: this machine has {torch.cuda.device_count()} CUDA device(s)"
        elif device.type == "mps" and not torch.backends.mps.is_available():
            problem = f"'{name}' is not available on this machine; use 'cpu' or 'auto'"
    if problem:
        file, _, key = where.rpartition(": ")
        raise SuiteError(file or "msbench", key, problem)


@dataclass
class VictimSplits:
    """A victim's data: what it trains on, the validation split benign matching tunes on, the test split."""

    train: ImageData
    val: ImageData
    test: ImageData


@dataclass
class Workspace:
    """Per-run state: the suite, where data and artifacts live, the device, and the victims loaded so far."""

    suite: Suite
    data_root: Path
    run_dir: Path
    device: torch.device
    victims: VictimCache = field(init=False, repr=False)
    torch_state: TorchState = field(init=False, repr=False)  # what every cell starts from (``msbench.isolation``)

    def __post_init__(self) -> None:
        self.victims = VictimCache(self)
        self.torch_state = snapshot()

    @property
    def compute(self) -> Compute:
        """The run's precision and memory layout on its device (``msbench.compute``)."""
        return Compute(self.suite.run.precision, self.suite.run.channels_last, self.device.type)

    def splits(self, dataset: str) -> VictimSplits:
        """The victim's train, validation and test splits: fixed subsets, the same for every seed."""
        spec = self.suite.spec(dataset)
        train = load_split(spec, self.data_root, "train").subset(self.suite.subset(dataset, "train"), SUBSET_SEED)
        train, val = train.split(self.suite.run.val_fraction, SUBSET_SEED)
        test = load_split(spec, self.data_root, "test").subset(self.suite.subset(dataset, "test"), SUBSET_SEED)
        return VictimSplits(train, val, test)

    def role_data(self, dataset: str, role: str) -> ImageData:
        """A role dataset's training split, shaped like the victim's inputs."""
        name = self.suite.role(dataset, role)
        return load_split(self.suite.spec(name), self.data_root, "train", shape=self.suite.spec(dataset).shape)

    def model_factory(self, dataset: str, arch: str) -> Callable[[], nn.Module]:
        """A constructor of fresh models of ``arch`` for ``dataset``'s inputs, on the run's device."""
        spec = self.suite.spec(dataset)
        layout = self.compute.layout
        return lambda: layout(build_model(arch, spec.shape, spec.num_classes, spec.mean, spec.std).to(self.device))

    def victim_context(self, dataset: str, arch: str, defense: str, seed: int) -> VictimContext:
        """What a defense builds and trains its victim from: data, recipe, device, seed, the role
        datasets it declares (and only those: its victim key covers exactly these), a model factory."""
        spec = self.suite.spec(dataset)
        splits = self.splits(dataset)
        recipe = self.suite.victim_recipe(dataset, defense)
        declared = DEFENSES.get(defense).roles
        roles = {role: (lambda role=role: self.role_data(dataset,
                                                         role)) for role in declared if self.suite.role(dataset, role)}
        augment = spec.augment if recipe.augment == "auto" else recipe.augment
        return VictimContext(spec, arch, splits.train, splits.val, recipe, self.device, seed, roles,
                             self.model_factory(dataset, arch), augment)
