"""How the report shows and orders what it tabulates: labels, paper order, the reference row.

How a defense or attack is shown (label, colour, paper order) and which defense is the reference
row (or the one ablations stand beside) is declared by its plugin class (``label``, ``color``,
``paper_order``, ``reference``, ``ablation_reference``) and read from the registry by name; a name
no installed plugin declares (a third-party plugin not imported here) shows as its registry name.
"""
from __future__ import annotations

import pandas as pd

from msbench.defenses import reference_defense
from msbench.registry import ATTACKS, DEFENSES, Registry

VARIANT = "@"
"""``vanilla@runA``: a defense kept apart by run because two runs ran it with different settings."""
_DATASET_LABELS = {"mnist": "MNIST", "fashionmnist": "FashionMNIST", "kmnist": "KMNIST", "cifar10": "CIFAR-10",
                   "cifar100": "CIFAR-100", "svhn": "SVHN", "tinyimagenet": "TinyImageNet", "emnist": "EMNIST",
                   "emnist-letters": "EMNIST-letters"}
_MODE_LABELS = {"soft": "soft-label", "hard": "hard-label"}


def plugin_class(registry: Registry, name: str):
    """The registered class, or None for a name no imported plugin declares."""
    try:
        return registry.get(name) if name in registry else None
    except Exception:  # a broken third-party entry point must not stop a report
        return None


def split_variant(name: str) -> tuple[str, str]:
    """``vanilla@runA`` -> (``vanilla``, ``runA``); a plain name -> (name, "")."""
    base, _, run = str(name).partition(VARIANT)
    return base, run


def _part_label(part: str) -> str:
    plugin = plugin_class(DEFENSES, part)
    return (plugin.label if plugin is not None else "") or part


def defense_label(name: str) -> str:
    """``ini+mad`` -> ``InI + MAD`` (each plugin's ``label``); ``vanilla@runA`` -> ``Vanilla (runA)``."""
    base, run = split_variant(name)
    label = " + ".join(_part_label(part) for part in base.split("+"))
    return f"{label} ({run})" if run else label


def dataset_label(name: str) -> str:
    return _DATASET_LABELS.get(str(name), str(name))


def attack_label(name: str) -> str:
    plugin = plugin_class(ATTACKS, str(name))
    return (plugin.label if plugin is not None else "") or str(name)


def mode_label(name: str) -> str:
    return _MODE_LABELS.get(str(name), str(name))


def paper_rank(name: str) -> tuple[int, ...] | None:
    """Paper position of a defense: each link's ``paper_order`` (``ini+mad`` -> (4, 1)); None unless
    every link has one."""
    plugins = [plugin_class(DEFENSES, part) for part in split_variant(name)[0].split("+")]
    ranks = [plugin.paper_order if plugin is not None else None for plugin in plugins]
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
    plugins = {n: plugin_class(ATTACKS, n) for n in present}
    rank = {n: plugin.paper_order if plugin is not None else None for n, plugin in plugins.items()}
    return sorted(present, key=lambda n: (rank[n] is None, rank[n] if rank[n] is not None else present.index(n)))


def is_pool_attack(name: str) -> bool:
    """An attack that queries a pool of natural images (it uses the ``surrogate`` role), e.g. KnockoffNets.

    Its hard-label mode receives only the top-1 class: no defense that keeps every answer's argmax
    can change what it learns from, so its clone accuracy is a bound such defenses cannot push down.
    """
    plugin = plugin_class(ATTACKS, str(name))
    return plugin is not None and "surrogate" in plugin.roles


def in_order(values) -> list:
    """Unique values in order of first appearance (the suites' matrix order survives the CSV)."""
    return list(dict.fromkeys(v for v in values if not (isinstance(v, float) and pd.isna(v))))


def reference_of(defense: str, present=None) -> str:
    """The Vanilla row a defense is compared with: ``vanilla@run`` for a defense kept apart by run, unless
    ``present`` (the defense names of the tables) lacks it because that run's Vanilla was merged with
    the others' (only the defense's own settings differed): then the merged ``vanilla``."""
    _, run = split_variant(defense)
    reference = reference_defense()
    if run and (present is None or f"{reference}{VARIANT}{run}" in present):
        return f"{reference}{VARIANT}{run}"
    return reference


def is_reference(name: str) -> bool:
    """True for the reference row (Vanilla) and its copies kept apart by run (``vanilla@runA``)."""
    return split_variant(name)[0] == reference_defense()


def is_ablation_reference(name: str) -> bool:
    """True for the defense whose ablations the further-defenses table stands beside (InI, its plugin
    declaring ``ablation_reference``), and its copies kept apart by run; a composition is not."""
    plugin = plugin_class(DEFENSES, split_variant(name)[0])
    return plugin is not None and plugin.ablation_reference
