"""Code identity: the hash of every source file a cached result was computed by.

A victim or a cell is reused only if the code that computed it is unchanged. That code is more
than a plugin's own file: InI's victims run ``pcgrad.py``, every trainer runs ``training.py``,
every model comes from ``models/``. So a key hashes the *import closure* of what ran: the plugin's
module and every module it imports, transitively, restricted to msbench's own modules and the
plugin's sibling files (site-packages and the standard library are versioned elsewhere: the
record names torch's version). The closure follows what a module imports, read from its source
(``ast``), and resolves ``from package import name`` to the module that *defines* ``name``, so
``from msbench.defenses import OutputDefense`` depends on ``defenses/base.py`` and not on every
defense the package registers. The report, the plan and the CLI are outside every closure, so
changing them recomputes nothing.

The framework's part of a key is the closure of the stage that ran: ``victims`` and ``workspace``
(training, data, models, the checkpoint format) for a victim, and ``evaluate`` (oracle, distortion,
the attack contract) on top for a cell.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import inspect
import sys
from pathlib import Path
from typing import Callable, Iterable

Locate = Callable[[str], Path | None]  # a module's name -> its source file (None: not ours to hash)

VICTIM_STAGE = ("msbench.victims", "msbench.workspace")
CELL_STAGE = VICTIM_STAGE + ("msbench.evaluate",)


def locate(name: str) -> Path | None:
    """The source file of an imported module, None for one without a Python source (built-ins)."""
    module = sys.modules.get(name) or importlib.import_module(name)
    file = getattr(module, "__file__", None)
    return Path(file) if file and file.endswith(".py") else None


def _defining_module(package: str, name: str) -> str:
    """The module that defines ``name`` as ``from package import name`` finds it (a submodule, a class,
    a function), else ``package`` itself (a constant defined there)."""
    try:
        value = getattr(importlib.import_module(package), name)
    except (ImportError, AttributeError):
        return f"{package}.{name}"
    if inspect.ismodule(value):
        return value.__name__
    defined = getattr(value, "__module__", None) if (inspect.isclass(value) or inspect.isfunction(value)) else None
    return defined if isinstance(defined, str) else package


def imported_modules(name: str, source: str, is_package: bool = False) -> set[str]:
    """The modules a module's source imports (anywhere in it, functions included), by full name."""
    found: set[str] = set()
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importing module's package
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - (node.level - 1)] + ([base] if base else []))
            found.update(_defining_module(base, alias.name) for alias in node.names if alias.name != "*")
    return found


@functools.lru_cache(maxsize=1024)
def _file_imports(name: str, path: Path, stamp: tuple[int, int]) -> frozenset[str]:
    """``imported_modules`` of one file, parsed once per version of it (``stamp``: mtime and size)."""
    return frozenset(imported_modules(name, path.read_text(), path.name == "__init__.py"))


@functools.lru_cache(maxsize=1024)
def _file_bytes(path: Path, stamp: tuple[int, int]) -> bytes:
    return path.read_bytes()


def _stamp(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_mtime_ns, status.st_size


def closure(roots: Iterable[str], find: Locate = locate) -> dict[str, Path]:
    """Every module reachable from ``roots`` by imports that is msbench's own or a sibling file of a
    root, with its source file."""
    roots = list(roots)
    folders = {path.parent for root in roots if (path := find(root)) is not None and not root.startswith("msbench")}
    seen: dict[str, Path] = {}
    stack = list(roots)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        try:
            path = find(name)
        except ImportError:
            continue
        if path is None or not (name == "msbench" or name.startswith("msbench.") or name in roots or path.parent in folders):
            continue
        seen[name] = path
        stack.extend(_file_imports(name, path, _stamp(path)) - seen.keys())
    return seen


def source_digest(roots: Iterable[str], find: Locate = locate) -> str:
    """A short hash of the closure's sources, each under its module name (so moving a file counts)."""
    hasher = hashlib.sha256()
    for name, path in sorted(closure(roots, find).items()):
        hasher.update(name.encode() + b"\0" + _file_bytes(path, _stamp(path)) + b"\0")
    return hasher.hexdigest()[:16]


def code_identity(plugin: type, find: Locate = locate) -> str:
    """``version:<v>`` when the class itself declares ``version`` (its author vouches for it), else the
    hash of its module's import closure (its qualified name where it has no source file, e.g. a class
    made at a prompt)."""
    version = vars(plugin).get("version")
    if version is not None:
        return f"version:{version}"
    try:
        if find(plugin.__module__) is None:
            raise OSError
        return "source:" + source_digest([plugin.__module__], find)
    except (OSError, ImportError):
        return f"name:{plugin.__module__}.{plugin.__qualname__}"


def stage_identity(stage: tuple[str, ...], extra: Iterable[str] = (), find: Locate = locate) -> str:
    """The hash of a stage's framework code (``VICTIM_STAGE``, ``CELL_STAGE``) with ``extra`` modules
    (the architecture's and the datasets' modules)."""
    return source_digest([*stage, *extra], find)
