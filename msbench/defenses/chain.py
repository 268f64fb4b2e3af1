"""Defense chains: a composition such as ``ini+mad`` as the list of defenses that make its victim.

A training defense makes a model; an output defense wraps one. So a chain is one training defense
followed by output defenses, and a composition that names only an output defense (``mad``) stands
on that defense's ``default_base`` (``vanilla+mad``), the victim the paper wraps it around.
"""
from __future__ import annotations

from msbench.defenses.base import OutputDefense
from msbench.registry import DEFENSES


def resolve_chain(composition: str) -> list[str]:
    """``ini+mad`` -> ["ini", "mad"]; ``mad`` -> ["vanilla", "mad"] through MAD's default base."""
    names = [part.strip().lower() for part in composition.split("+")]
    head = DEFENSES.get(names[0])
    while issubclass(head, OutputDefense):
        names.insert(0, head.default_base)
        head = DEFENSES.get(names[0])
    return names


def chain_problem(composition: str) -> str | None:
    """Why a composition's chain cannot be built (a training defense after ``+``, an output defense
    first), or None. Its names must be registered defenses. The one check of a chain's order: the
    suite's matrix and its ``[timing]`` section both call it, so they refuse a chain in the same words."""
    for position, name in enumerate(resolve_chain(composition)):
        output = issubclass(DEFENSES.get(name), OutputDefense)
        if (position == 0) == output:
            kind = "an output" if output else "a training"
            where = "first" if position == 0 else "after '+'"
            return f"'{name}' is {kind} defense and cannot come {where} in '{composition}'"
    return None
