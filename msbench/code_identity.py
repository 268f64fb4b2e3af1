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

VICTIM_STAGE = ("msbench.runner.victims", "msbench.runner.workspace")
CELL_STAGE = VICTIM_STAGE + ("msbench.runner.evaluate",)


def locate(name: str) -> Path | None:
    """The source file of an imported module, None for one without a Python source (built-ins)."""
    module = sys.modules.get(name) or importlib.import_module(name)
    file = getattr(module, "__file__", None)
    return Path(file) if file and file.endswith(".py") else None


def _defining_modules(package: str, name: str) -> set[str]:
    """The module that defines ``name`` as ``from package import name`` finds it (a submodule, a class,
    a function), else ``package`` itself (a constant defined there). Where ``package`` cannot be
    imported now (a plugin's helper, off ``sys.path``), both candidates: ``package`` and the
    submodule ``package.name``, whichever exists."""
    try:
        value = getattr(importlib.import_module(package), name)
    except (ImportError, AttributeError):
        return {package, f"{package}.{name}"}
    if inspect.ismodule(value):
        return {value.__name__}
    defined = getattr(value, "__module__", None) if (inspect.isclass(value) or inspect.isfunction(value)) else None
    return {defined if isinstance(defined, str) else package}


def imported_modules(name: str, tree: ast.AST, is_package: bool = False) -> set[str]:
    """The modules a module's syntax tree imports (anywhere in it, functions included), by full name."""
    found: set[str] = set()
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importing module's package
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - (node.level - 1)] + ([base] if base else []))
            for alias in node.names:
                found.update({base} if alias.name == "*" else _defining_modules(base, alias.name))
    return found


@functools.lru_cache(maxsize=1024)
def _parsed(name: str, path: Path, version: tuple[int, int] | int) -> tuple[frozenset[str], bytes]:
    """One version of a source file (see ``_version``), parsed once: the modules it imports, and its code,
    the syntax tree without docstrings (comments are not in it), so editing a comment or a docstring
    recomputes nothing."""
    tree = ast.parse(path.read_text())
    imports = frozenset(imported_modules(name, tree, path.name == "__init__.py"))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            body[0] = ast.Pass()
    return imports, ast.dump(tree).encode()


def _version(name: str, path: Path) -> tuple[int, int] | int:
    """Which version of a file a key hashes: for a module this process imported from it, the version it
    imported (read once and remembered, so an edit during a run does not re-key what the old code
    computes), else the file as it is now (mtime and size)."""
    module = sys.modules.get(name)
    if module is not None and getattr(module, "__file__", None) and Path(module.__file__) == path:
        return id(module)
    return _stamp(path)


def _stamp(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_mtime_ns, status.st_size


def closure(roots: Iterable[str], find: Locate = locate) -> dict[str, Path]:
    """Every module reachable from ``roots`` by imports that is msbench's own (``msbench`` itself, the API
    facade, excepted: each name is followed to the module defining it) or a file under a root's
    folder, with its source file."""
    roots = list(roots)
    folders = {path.parent for root in roots if not root.startswith("msbench") and (path := find(root)) is not None}
    seen: dict[str, Path] = {}
    stack = list(roots)
    while stack:
        name = stack.pop()
        # the package's facade re-exports the API: a name is followed to its module
        if name in seen or name == "msbench":
            continue
        try:
            path = find(name)
        except ImportError:  # not importable now: a plugin's own helper, in its folder (the suite's, off sys.path now)
            path = next((f for folder in folders if (f := _in_folder(folder, name)) is not None), None)
        ours = path is not None and (name.startswith("msbench.") or name in roots
                                     or any(path.is_relative_to(folder) for folder in folders))
        if not ours:
            continue
        seen[name] = path
        stack.extend(_parsed(name, path, _version(name, path))[0] - seen.keys())
    return seen


def _in_folder(folder: Path, name: str) -> Path | None:
    """A module's file under ``folder`` (``helpers.util`` -> ``helpers/util.py`` or its package), if there."""
    base = folder.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def source_digest(roots: Iterable[str], find: Locate = locate) -> str:
    """A short hash of the closure's sources, each under its module name (so moving a file counts)."""
    hasher = hashlib.sha256()
    for name, path in sorted(closure(roots, find).items()):
        hasher.update(name.encode() + b"\0" + _parsed(name, path, _version(name, path))[1] + b"\0")
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
