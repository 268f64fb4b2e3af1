"""Importing the plugin modules a suite names (``plugins = ["my_defense"]``).

A suite and the plugin file it names usually sit side by side, and the suite must work from any
working directory, not only with ``PYTHONPATH=.``. So each module is imported with the suite
file's folder searched first; the folder is on ``sys.path`` only while those imports run, so it
cannot shadow another module imported later in the process. A module already imported (a package
installed or on ``PYTHONPATH``, a test's plugin) is used as it is.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType


def import_plugins(modules: list[str], folder: Path | None) -> list[ModuleType]:
    """Import each module, looking in ``folder`` (the suite file's folder) before ``sys.path``.

    Raises ImportError (the caller names the suite key) when one cannot be imported.
    """
    if folder is None:
        return [importlib.import_module(module) for module in modules]
    entry = str(Path(folder).resolve())
    importlib.invalidate_caches()  # a plugin file written since the folder was last searched
    sys.path.insert(0, entry)
    try:
        return [importlib.import_module(module) for module in modules]
    finally:
        sys.path.remove(entry)  # the first occurrence: the one inserted above


def import_plugin_file(path: Path) -> ModuleType:
    """Import one plugin file by path (``msbench check-plugin FILE``), under its stem as module name,
    with its folder searched first for its own imports."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such plugin file")
    return import_plugins([path.stem], path.parent)[0]
