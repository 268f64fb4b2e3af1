"""How each plugin a suite names is shown, recorded in the run's ``suite.json`` (``presentation``)
so that the report reads what the run used rather than the plugins installed where it renders.

Written by ``run_suite`` beside the resolved suite, never part of it: no cell or victim key and no
settings id hashes it, and the stages that compute results do not import this module (it imports
every defense), so a defense's label is not code a cached result depends on.
"""
from __future__ import annotations

from typing import Any

from msbench.defenses import OutputDefense, reference_defense
from msbench.defenses.chain import resolve_chain
from msbench.registry import ATTACKS, DEFENSES
from msbench.runner.suite_schema import Suite


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


def presentation(suite: Suite) -> dict[str, dict[str, dict[str, Any]]]:
    """How each plugin the suite names is shown, as the plugins installed now declare it: every defense
    of the matrix and of ``[timing]`` with each link of its chain (``ini+mad``: ini, mad; ``mad``: its
    default base too), the reference defense, and every attack."""
    try:
        reference = [reference_defense()]
    except LookupError:  # no single reference registered: the suite's own names still record
        reference = []
    timed = getattr(suite.extra.get("timing"), "defenses", None) or []  # [timing] may time chains the matrix lacks
    links = [link for composition in suite.matrix.defenses + list(timed) for link in resolve_chain(composition)]
    defenses = dict.fromkeys(reference + links + list(suite.defenses))
    attacks = dict.fromkeys([str(a).lower() for a in suite.matrix.attacks] + list(suite.attacks))
    return {"defenses": {n: defense_presentation(DEFENSES.get(n), n) for n in defenses if n in DEFENSES},
            "attacks": {n: attack_presentation(ATTACKS.get(n), n) for n in attacks if n in ATTACKS}}
