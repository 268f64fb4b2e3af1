"""What a timing run measures: the plan (archs, dataset, compositions, seed), where its victims come
from, and the key that tells whether an earlier timing table still holds.

Where the suite's matrix trains victims on the timed (dataset, arch), those cached victims are
reused. Otherwise (timing ResNet-18 while the attacks use a small CNN, say) victims are trained
with the short recipe of the ``[timing]`` section (``epochs``, ``train_subset``) through a derived
suite whose run directory is ``<run dir>/timing_victims``; each row records which it was.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from msbench.runner.cells import digest, victim_key
from msbench.config import as_dict
from msbench.defenses import reference_defense
from msbench.registry import DEFENSES
from msbench.runner.suite_schema import DatasetOptions, PluginSettings
from msbench.timing.schema import TimingOptions, override_config

if TYPE_CHECKING:
    from msbench.runner.suite_schema import Suite
    from msbench.runner.workspace import Workspace

TIMING_VICTIMS = "timing_victims"  # sub-folder of the run directory for short-recipe victims


@dataclass
class Plan:
    options: TimingOptions
    archs: list[str]
    dataset: str
    defenses: list[str]  # compositions, the reference (Vanilla) first
    seed: int


def timing_options(suite: "Suite") -> TimingOptions:
    return suite.extra.get("timing") or TimingOptions()


def make_plan(suite: "Suite") -> Plan:
    """The suite's ``[timing]`` choices with the matrix's defaults; the reference defense is timed first
    whatever the suite lists, since every slowdown is relative to it."""
    options = timing_options(suite)
    reference = reference_defense()
    compositions = [c.lower() for c in (options.defenses or suite.matrix.defenses)]
    defenses = [reference] + [c for c in dict.fromkeys(compositions) if c != reference]
    return Plan(options, [a.lower() for a in (options.archs or suite.matrix.archs)],
                options.dataset or suite.matrix.datasets[0], defenses, suite.matrix.seeds[0])


def with_settings(suite: "Suite", plan: Plan) -> "Suite":
    """The suite plus default settings for defenses only the timing stage uses."""
    defenses = dict(suite.defenses)
    for composition in plan.defenses:
        for name in suite.chain(composition):
            if name not in defenses:
                defenses[name] = PluginSettings(DEFENSES.get(name).Config(), suite.victim)
    matrix = dataclasses.replace(suite.matrix, datasets=[plan.dataset], archs=plan.archs, defenses=plan.defenses)
    return dataclasses.replace(suite, defenses=defenses, matrix=matrix)


def short_suite(suite: "Suite", plan: Plan) -> "Suite":
    """The derived suite that trains timing victims: every defense's recipe cut to ``epochs`` (and
    ``batch_size`` where set), its settings changed by ``[timing.overrides]``, training (and test)
    data cut to the ``[timing]`` subsets."""
    options = plan.options
    base = with_settings(suite, plan)
    short = {"epochs": options.epochs, **({"batch_size": options.batch_size} if options.batch_size else {})}
    subsets = {"train_subset": options.train_subset or suite.subset(plan.dataset, "train"),
               "test_subset": options.test_subset or suite.subset(plan.dataset, "test")}
    datasets = dict(base.datasets)
    dataset_options = dataclasses.replace(datasets.get(plan.dataset, DatasetOptions()), **subsets)
    if dataset_options.victim:  # per-dataset recipe overrides must not undo the short recipe
        dataset_options = dataclasses.replace(dataset_options, victim={**dataset_options.victim, **short})
    datasets[plan.dataset] = dataset_options
    configs = {name.lower(): override_config(suite, name.lower(), table, str(suite.path)) for name,
               table in options.overrides.items()}
    defenses = {name: PluginSettings(configs.get(name, s.config), s.recipe.with_(**short)) for name,
                s in base.defenses.items()}
    return dataclasses.replace(base, name=f"{suite.name}-{TIMING_VICTIMS}", datasets=datasets, defenses=defenses,
                               run=dataclasses.replace(suite.run, **subsets), victim=suite.victim.with_(**short))


def plan_key(suite: "Suite", plan: Plan, device_label: str) -> str:
    """Hash of what determines a timing table: the settings, each timed victim's key, the device, torch."""
    derived = {"suite": with_settings(suite, plan), "timing": short_suite(suite, plan)}
    victims = {}
    for arch in plan.archs:
        source = derived["suite" if uses_suite_victims(suite, plan, arch) else "timing"]
        for composition in plan.defenses:
            victims[f"{arch}/{composition}"] = victim_key(source, plan.dataset, arch, source.chain(composition),
                                                          plan.seed)
    settings = {"archs": plan.archs, "dataset": plan.dataset, "defenses": plan.defenses, **as_dict(plan.options)}
    return digest({"settings": settings, "victims": victims, "device": device_label, "torch": torch.__version__})


def uses_suite_victims(suite: "Suite", plan: Plan, arch: str) -> bool:
    """Whether ``arch``'s victims are the suite's own (cached by its run) rather than short-recipe ones."""
    if plan.options.victims == "auto":
        return arch in [a.lower() for a in suite.matrix.archs]
    return plan.options.victims == "suite"


def recipe_label(ws: "Workspace", dataset: str, chain: list[str], source: str) -> str:
    """How a timed victim was trained, as its row records it (``suite: epochs=5, batch_size=128, ...``)."""
    recipes = [ws.suite.victim_recipe(dataset, name) for name in chain]
    epochs = sorted({recipe.epochs for recipe in recipes})
    batches = sorted({recipe.batch_size for recipe in recipes})
    subset = ws.suite.subset(dataset, "train")
    return (f"{source}: epochs={'/'.join(map(str, epochs))}, batch_size={'/'.join(map(str, batches))}, "
            f"train_subset={subset if subset else 'all'}")


__all__ = ["TIMING_VICTIMS", "Plan", "timing_options", "make_plan", "with_settings", "short_suite", "plan_key",
           "uses_suite_victims", "recipe_label"]
