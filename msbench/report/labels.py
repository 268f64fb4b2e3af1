"""How the report shows and orders what it tabulates: labels, paper order, the reference row.

How a defense or attack is shown (label, colour, paper order) and which defense is the reference row
(or the one ablations stand beside) is what the runs recorded: ``presentation`` in each run's
suite.json, written at run time from the plugin classes' attributes (``label``, ``color``,
``paper_order``, ``reference``, ``ablation_reference``, an output defense's ``default_base`` and
``color_over_base``, an attack's ``roles``; ``runner.presentation``). So a report
rendered where a plugin is not installed, or where its label changed since, shows what the run showed.

The recorded presentation is module state: ``load_runs`` installs its runs' sections with
``use_recorded`` once per report, replacing the previous report's (a later run's entry wins over an
earlier run's), and ``RunTables.presentation`` keeps it. A plugin no installed section records (a run
recorded before suite.json had the section) is read from the live registry by name, as reports did
then; a name neither knows (a third-party plugin not imported here) shows as its registry name.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from msbench.defenses import reference_defense
from msbench.registry import ATTACKS, DEFENSES, Registry
from msbench.runner.presentation import attack_presentation, defense_presentation

VARIANT = "@"
"""``vanilla@runA``: a defense kept apart by run because two runs ran it with different settings."""
_DATASET_LABELS = {"mnist": "MNIST", "fashionmnist": "FashionMNIST", "kmnist": "KMNIST", "cifar10": "CIFAR-10",
                   "cifar100": "CIFAR-100", "svhn": "SVHN", "tinyimagenet": "TinyImageNet", "emnist": "EMNIST",
                   "emnist-letters": "EMNIST-letters"}
_MODE_LABELS = {"soft": "soft-label", "hard": "hard-label"}
KINDS = {"defenses": (DEFENSES, defense_presentation), "attacks": (ATTACKS, attack_presentation)}
_recorded: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in KINDS}


def plugin_class(registry: Registry, name: str):
    """The registered class, or None for a name no imported plugin declares."""
    try:
        return registry.get(name) if name in registry else None
    except Exception:  # a broken third-party entry point must not stop a report
        return None


def recorded_presentation(suites) -> dict[str, dict[str, dict[str, Any]]]:
    """The ``presentation`` sections of ``suites`` (suite.json dicts) as one: a later suite's entry for a
    plugin replaces an earlier one's; a suite without the section adds nothing."""
    merged: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in KINDS}
    for suite in suites:
        section = suite.get("presentation") if isinstance(suite, dict) else None
        for kind in KINDS:
            entries = section.get(kind) if isinstance(section, dict) else None
            if isinstance(entries, dict):
                merged[kind].update({str(n): e for n, e in entries.items() if isinstance(e, dict)})
    return merged


def use_recorded(presentation: dict[str, Any] | None) -> None:
    """Make ``presentation`` ({"defenses": {name: {...}}, "attacks": ...}) what the labels below read,
    replacing whatever an earlier report installed; None or {}: the live registry alone."""
    global _recorded
    _recorded = {kind: dict(((presentation or {}).get(kind)) or {}) for kind in KINDS}


def shown(kind: str, name: str, presentation: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """How the plugin ``name`` of ``kind`` ("defenses" or "attacks") is shown: its entry in
    ``presentation`` (default: the recorded one installed), else what the installed plugin declares,
    else None."""
    table = (_recorded if presentation is None else presentation).get(kind)
    entry = table.get(name) if isinstance(table, dict) else None
    if isinstance(entry, dict):
        return entry
    registry, describe = KINDS[kind]
    plugin = plugin_class(registry, name)
    try:
        return describe(plugin, name) if plugin is not None else None
    except (TypeError, AttributeError):  # a registered entry that is no plugin class: its name stands in
        return None


def _attribute(kind: str, name: str, key: str, default: Any = None) -> Any:
    entry = shown(kind, str(name))
    return default if entry is None or entry.get(key) is None else entry[key]


def split_variant(name: str) -> tuple[str, str]:
    """``vanilla@runA`` -> (``vanilla``, ``runA``); a plain name -> (name, "")."""
    base, _, run = str(name).partition(VARIANT)
    return base, run


def _part_label(part: str) -> str:
    return _attribute("defenses", part, "label") or part


def defense_label(name: str) -> str:
    """``ini+mad`` -> ``InI + MAD`` (each link's ``label``); ``vanilla@runA`` -> ``Vanilla (runA)``."""
    base, run = split_variant(name)
    label = " + ".join(_part_label(part) for part in base.split("+"))
    return f"{label} ({run})" if run else label


def dataset_label(name: str) -> str:
    return _DATASET_LABELS.get(str(name), str(name))


def attack_label(name: str) -> str:
    return _attribute("attacks", name, "label") or str(name)


def mode_label(name: str) -> str:
    return _MODE_LABELS.get(str(name), str(name))


def paper_rank(name: str) -> tuple[int, ...] | None:
    """Paper position of a defense: each link's ``paper_order`` (``ini+mad`` -> (4, 1)); None unless
    every link has one."""
    ranks = [_attribute("defenses", part, "paper_order") for part in split_variant(name)[0].split("+")]
    return None if any(r is None for r in ranks) else tuple(ranks)


def is_paper_defense(name: str) -> bool:
    return paper_rank(name) is not None


def order_defenses(names) -> list[str]:
    """Paper order first (Vanilla, MAD, AM, EDM, InI, InI + MAD, InI + AM), then the rest sorted by name."""
    present = list(dict.fromkeys(str(n) for n in names if not (isinstance(n, float) and pd.isna(n))))

    def key(name: str):
        rank = paper_rank(name)
        return (0, rank, "", name) if rank is not None else (1, (), split_variant(name)[0], name)

    return sorted(present, key=key)


def order_attacks(names) -> list[str]:
    """Attacks with a ``paper_order`` first in that order, then the rest in the order given (the suite's)."""
    present = list(dict.fromkeys(str(n) for n in names if not (isinstance(n, float) and pd.isna(n))))
    rank = {n: _attribute("attacks", n, "paper_order") for n in present}
    return sorted(present, key=lambda n: (rank[n] is None, rank[n] if rank[n] is not None else present.index(n)))


def is_pool_attack(name: str) -> bool:
    """An attack that queries a pool of natural images (it uses the ``surrogate`` role), e.g. KnockoffNets.

    Its hard-label mode receives only the top-1 class: no defense that keeps every answer's argmax
    can change what it learns from, so its clone accuracy is a bound such defenses cannot push down.
    """
    return "surrogate" in _attribute("attacks", name, "roles", ())


def in_order(values) -> list:
    """Unique values in order of first appearance (the suites' matrix order survives the CSV)."""
    return list(dict.fromkeys(v for v in values if not (isinstance(v, float) and pd.isna(v))))


def reference_of(defense: str, present=None) -> str:
    """The Vanilla row a defense is compared with: ``vanilla@run`` for a defense kept apart by run, unless
    ``present`` (the defense names of the tables) lacks it because that run's Vanilla was merged with
    the others' (only the defense's own settings differed): then the merged ``vanilla``."""
    _, run = split_variant(defense)
    reference = reference_name()
    if run and (present is None or f"{reference}{VARIANT}{run}" in present):
        return f"{reference}{VARIANT}{run}"
    return reference


def is_reference(name: str) -> bool:
    """True for the reference row (Vanilla) and its copies kept apart by run (``vanilla@runA``)."""
    return split_variant(name)[0] == reference_name()


def is_ablation_reference(name: str) -> bool:
    """True for the defense whose ablations the further-defenses table stands beside (InI, its plugin
    declaring ``ablation_reference``), and its copies kept apart by run; a composition is not."""
    return bool(_attribute("defenses", split_variant(name)[0], "ablation_reference", False))


def reference_name() -> str:
    """The reference defense (Vanilla): the one the runs recorded as ``reference``, else the registry's."""
    recorded = [name for name, entry in _recorded["defenses"].items() if entry.get("reference")]
    return recorded[-1] if recorded else reference_defense()


def defense_colour(defense: str) -> str | None:
    """A single defense's ``color``; a stack (``ini+mad``) takes its outer link's ``color_over_base``."""
    parts = split_variant(defense)[0].split("+")
    return _attribute("defenses", parts[0], "color") if len(parts) == 1 else _attribute(
        "defenses", parts[-1], "color_over_base")
