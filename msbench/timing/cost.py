"""The cost model column of the timing table: each defense's formula as its plugin declares it.

Formulas use the InI paper's Table 4 notation (``M_f`` one forward of the victim's model); a plugin
states its own in ``Defense.cost_model``, so a new defense is costed with nothing added here.
"""
from __future__ import annotations

from typing import Any


def defense_cost(defense: Any, batch_size: int) -> str:
    """One defense's formula from its ``cost_model``: a string, a dict with ``single`` and ``batch``
    strings, or a method ``cost_model(batch_size) -> str`` (the instance's config is at hand there)."""
    declared = defense.cost_model
    if callable(declared):
        return str(declared(batch_size))
    if isinstance(declared, dict):
        return str(declared["batch" if batch_size > 1 else "single"])
    return str(declared)


def chain_cost(defenses: list[Any], batch_size: int) -> str:
    """A composition's formula: its parts joined by `` | `` from the inside out.

    An output defense's formula counts its base's forward as ``M_f``, so a base whose own formula
    is the bare ``M_f`` (Vanilla, InI under MAD) adds nothing and is left out: ``ini+mad`` reads as
    MAD's formula, ``edm+am`` as ``M_f + M_h | 2 M_f``.
    """
    parts = [defense_cost(d, batch_size) for d in defenses]
    if len(parts) > 1 and parts[0] == "M_f":
        parts = parts[1:]
    return " | ".join(parts)


__all__ = ["defense_cost", "chain_cost"]
