"""The inference-cost stage (``msbench time``): how much each defense slows the deployed API down.

- ``schema``: the suite's ``[timing]`` section (``TimingOptions``), checked at load time;
- ``cost``: each composition's cost formula, as its plugins declare it;
- ``measure``: the timed loop and the inputs it cycles through;
- ``plan``: what is timed, on which victims, and the key of a table still valid;
- ``stage``: ``time_suite``, the stage itself, writing ``<run dir>/timing.csv``;
- ``summary``: the console table.

The public names below are loaded on first use, not on import: ``msbench.suite`` imports
``msbench.timing.schema`` (which runs this file first) while the suite module is itself being
imported, and the plan and the stage import the suite, so they cannot be imported from here then.
"""
from __future__ import annotations

from typing import Any

_EXPORTS = {
    "schema": ("TimingOptions", "override_config", "INPUT_KINDS", "VICTIM_SOURCES"),
    "cost": ("defense_cost", "chain_cost"),
    "measure": ("RANDOM_POOL", "synchronize", "time_calls", "cycling", "input_pool", "device_name"),
    "plan": ("TIMING_VICTIMS", "Plan", "timing_options", "make_plan", "with_settings", "short_suite", "plan_key",
             "uses_suite_victims", "recipe_label"),
    "stage": ("NO_TIMING", "COLUMNS", "time_suite", "measure_arch", "with_slowdown"),
    "summary": ("timing_summary",),
}
__all__ = [name for names in _EXPORTS.values() for name in names]


def __getattr__(name: str) -> Any:
    """``msbench.timing.time_suite`` and the other public names, from the submodule that defines them."""
    if name not in __all__:  # submodule names fall through to the import system
        raise AttributeError(f"module 'msbench.timing' has no attribute '{name}'")
    from msbench.timing import cost, measure, plan, schema, stage, summary

    modules = {"schema": schema, "cost": cost, "measure": measure, "plan": plan, "stage": stage, "summary": summary}
    value = next(getattr(modules[module], name) for module, names in _EXPORTS.items() if name in names)
    globals()[name] = value
    return value
