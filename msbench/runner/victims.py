"""The victim cache: each defense chain's deployed model, trained once, kept on disk, a few in memory.

Victims are content-addressed artifacts under ``<run dir>/victims/<victim key>.pt``: trained once
per (dataset, arch, defense chain, seed, settings) and shared by every cell and composition that
needs them. In memory a cache keeps the most recently used few (``MEMORY_LIMIT``); one dropped is
loaded again from its checkpoint, bit for bit the same model, so the limit bounds memory without
changing any result. After every cell the victim is checked against the fingerprint taken when
it was loaded: an attack that changed it voids its cell (``VictimTampered``).
"""
from __future__ import annotations

import copy
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from msbench.runner.cells import victim_key
from msbench.compute import Compute, using
from msbench.config import as_dict
from msbench.data import ImageData
from msbench.runner.checkpoints import load_cached_victim, save_victim
from msbench.defenses import OutputDefense, VictimContext
from msbench.distortion import restart_randomness
from msbench.fingerprint import code_fingerprint, fingerprint
from msbench.oracle import check_probabilities
from msbench.provenance import training_device
from msbench.registry import DEFENSES
from msbench.runner.suite_schema import Suite
from msbench.seeds import derive_seed, seeded
from msbench.training import accuracy, predict_labels


class _Splits(Protocol):
    test: ImageData


class VictimSource(Protocol):
    """What the cache reads of the workspace that makes it (``runner.workspace.Workspace``): the suite,
    where victims are stored, the device and its compute settings, test data, a defense's context."""

    suite: Suite
    run_dir: Path
    device: torch.device

    @property
    def compute(self) -> Compute: ...

    def splits(self, dataset: str) -> _Splits: ...

    def victim_context(self, dataset: str, arch: str, defense: str, seed: int) -> VictimContext: ...

MEMORY_LIMIT = 8  # victims kept in memory: a cell holds its chain's links (at most a few), the rest reload from disk
Victim = tuple[nn.Module, dict[str, Any]]  # the deployed module and its facts (benign accuracy, tuned setting...)


class VictimTampered(RuntimeError):
    """A cell's attack changed the victim it queried; the cell is void and the victim is reloaded."""


class VictimMissing(RuntimeError):
    """A victim to load that has no checkpoint where this cache may not train (a Ray cell task: victims
    are trained by the victim stage, each by exactly one task)."""


class VictimCache:
    """The victims of one workspace: ``get`` trains or loads one, ``check`` verifies it after a cell.
    ``trains = False``: ``get`` only loads, and a victim without a checkpoint raises ``VictimMissing``."""

    def __init__(self, ws: VictimSource, limit: int = MEMORY_LIMIT):
        self.ws = ws
        self.limit = limit
        self.trains = True
        self._code: dict[str, str] = {}  # victim key -> code_fingerprint at its first load
        # key: (module, info, fingerprint)
        self._loaded: OrderedDict[str, tuple[nn.Module, dict[str, Any], str]] = OrderedDict()

    def get(self, dataset: str, arch: str, chain: list[str], seed: int) -> Victim:
        """The deployed model of a defense chain, trained or loaded from the artifact cache."""
        key = victim_key(self.ws.suite, dataset, arch, chain, seed)
        if key in self._loaded:
            self._loaded.move_to_end(key)
            module, info, _ = self._loaded[key]
            return module, info
        with using(self.ws.compute):  # also where an executor trains victims before their cells
            module, info = self._build(dataset, arch, chain, seed, key)
        code = code_fingerprint(module)
        if self._code.setdefault(key, code) != code:  # the first load's, kept for the life of the process
            raise VictimTampered(f"the code of victim {dataset}/{arch}/{'+'.join(chain)}/seed{seed} differs from its "
                                 "first load in this process (a class of it was patched by an earlier cell); run again "
                                 "in a new process")
        self._loaded[key] = (module, info, fingerprint(module))
        while len(self._loaded) > self.limit:
            self._loaded.popitem(last=False)
        return module, info

    def _build(self, dataset: str, arch: str, chain: list[str], seed: int, key: str) -> Victim:
        """Build the chain's last defense (over its base victim) and load its checkpoint, or train it and save one."""
        ws = self.ws
        name = chain[-1]
        defense = DEFENSES.get(name)(ws.suite.defenses[name].config)
        ctx = ws.victim_context(dataset, arch, name, seed)
        base = None
        if isinstance(defense, OutputDefense):
            base, _ = self.get(dataset, arch, chain[:-1], seed)
        with seeded(derive_seed(seed, f"{name}.build")):  # models come from ctx.new_model; this covers any other draw
            module = defense.build(ctx) if base is None else defense.build(base, ctx)
        module.to(ws.device)
        path = ws.run_dir / "victims" / f"{key}.pt"
        # None: absent, corrupt or misplaced (reported, set aside)
        if (info := load_cached_victim(module, path, key)) is not None:
            module.to(ws.device)
        elif not self.trains:
            raise VictimMissing(f"victim {dataset}/{arch}/{'+'.join(chain)}/seed{seed} has no checkpoint {path.name}: "
                                "its victim task did not train it")
        else:
            started = time.perf_counter()
            with seeded(derive_seed(seed, f"{name}.fit")):
                defense.fit(module, ctx)
            seconds = time.perf_counter() - started
            module.eval()
            tuned = self.match_benign(defense, module, base, ctx) if isinstance(defense, OutputDefense) else None
            test = ws.splits(dataset).test
            with torch.no_grad():
                check_probabilities(module(test.floats(slice(0, 256), ws.device)))
            benign = accuracy(predict_labels(module, test.images, ws.device), test.labels)
            info = {"benign_acc": benign, "seconds": seconds, "device": training_device(ws.device), "chain": chain,
                    "dataset": dataset, "arch": arch, "seed": seed, "config": as_dict(defense.config), "tuned": tuned}
            save_victim(module, path, info, key)
        if info.get("tuned"):
            defense.tune(module, info["tuned"]["value"])
        module.eval()
        for parameter in module.parameters():
            parameter.requires_grad_(False)
        return module, info

    def check(self, dataset: str, arch: str, chain: list[str], seed: int) -> None:
        """Raise ``VictimTampered`` if the victim of a chain differs from when it was loaded. Every
        loaded victim that changed (a base victim is shared by the output defenses over it) is
        dropped, so later cells load it again from its checkpoint."""
        key = victim_key(self.ws.suite, dataset, arch, chain, seed)
        if key not in self._loaded or fingerprint(self._loaded[key][0]) == self._loaded[key][2]:
            return
        for other in [k for k, (module, _, taken) in self._loaded.items() if fingerprint(module) != taken]:
            del self._loaded[other]
        raise VictimTampered(f"the attack changed the victim {dataset}/{arch}/{'+'.join(chain)}/seed{seed} "
                             "(its parameters, buffers or settings); this cell's result is void and the victim is "
                             "reloaded for later cells")

    def forget(self) -> None:
        """Drop every victim from memory (their checkpoints stay): later calls load them again."""
        self._loaded.clear()

    @torch.no_grad()
    def match_benign(self, defense: OutputDefense, module: nn.Module, base: nn.Module,
                     ctx: VictimContext) -> dict[str, Any] | None:
        """Pick the strongest setting of the defense's ``tunable`` whose benign accuracy on the
        validation split stays within ``run.match_benign`` points of its base victim's, as the
        paper tunes MAD's epsilon and AM's tau. The wrapper reads the tunable from an attribute of
        the same name at inference, so trying a value costs one pass over the validation split.

        A defense whose module has no such attribute, or answers the same at the grid's strongest
        and weakest values, is refused: setting an attribute nothing reads would tune nothing and
        record a setting that was never applied."""
        tolerance = self.ws.suite.run.match_benign
        if tolerance is None or not defense.tunable or not defense.tunable_grid:
            return None
        device = self.ws.device
        name, grid = defense.tunable, defense.tunable_grid
        x = ctx.val.floats(slice(0, 256), device)
        answers = []
        for value in (grid[0], grid[-1]):
            defense.tune(module, value)
            restart_randomness(module)  # a stochastic defense draws the same noise both times
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                answers.append(module(x))
        if torch.equal(*answers):
            raise ValueError(f"{defense.registered_name}: its answers on the validation images are the same at "
                             f"{name} = {grid[0]} and {name} = {grid[-1]}; the module must read the attribute "
                             f"'{name}' at inference for benign matching to tune it")
        reference = accuracy(predict_labels(base, ctx.val.images, device), ctx.val.labels)
        for value in defense.tunable_grid:  # strongest first
            defense.tune(module, value)
            val_acc = accuracy(predict_labels(module, ctx.val.images, device), ctx.val.labels)
            if reference - val_acc <= tolerance:
                break
        return {"name": defense.tunable, "value": value, "val_acc": val_acc, "base_val_acc": reference}

    def at_setting(self, victim: nn.Module, info: dict[str, Any], defense: str, value: float,
                   test: ImageData) -> Victim:
        """A trade-off sweep's victim: the trained one with its last defense's tunable set to ``value``.

        A shallow copy: it shares the trained modules and changes only the plain attribute the
        wrapper reads at inference, so the cached (matched) victim keeps its own value."""
        plugin = DEFENSES.get(defense)(self.ws.suite.defenses[defense].config)
        tunable = plugin.tunable
        swept = copy.copy(victim)
        plugin.tune(swept, value)
        restart_randomness(swept)
        benign = accuracy(predict_labels(swept, test.images, self.ws.device), test.labels)
        return swept, {**info, "benign_acc": benign, "tuned": {"name": tunable, "value": value, "swept": True}}
