"""A plugin's ``Config`` built from a suite table and checked, for every section that configures a
plugin: ``[defenses.NAME]``, ``[attacks.NAME]`` and ``[timing.overrides.NAME]``.

Its own module so that the sections parsed outside ``suite.py`` (the timing schema) check a config
exactly as the suite does without importing the suite module.
"""
from __future__ import annotations

from typing import Any

from msbench.config import SuiteError, build
from msbench.registry import Registry


def plugin_config(registry: Registry, name: str, table: dict[str, Any], file: str, key: str, base: Any = None) -> Any:
    """A plugin's ``Config`` from a suite table (over ``base``'s values when given), checked by the
    plugin's ``check_config`` so a bad value fails at load time, naming its key."""
    plugin = registry.get(name)
    config = build(plugin.Config, table, file, key, base=base)
    budget = getattr(config, "budget", None)
    if isinstance(budget, int) and budget < 1:
        raise SuiteError(file, f"{key}.budget", f"expected a positive number of queries, got {budget}")
    problem = plugin.check_config(config)
    if problem:
        raise SuiteError(file, f"{key}.{problem[0]}", problem[1])
    return config
