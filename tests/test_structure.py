"""The package's shape, checked: no import cycles, modules of one job, lines of at most 120
characters, one training loop, and report and timing code that name no plugin (every plugin
declares how it is shown and costed).

These are the rules of docs/ARCHITECTURE.md in executable form; a change that breaks one fails here
with the offending module named, not in a review months later.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from msbench.registry import DEFENSES

PACKAGE = Path(__file__).resolve().parents[1] / "msbench"
MAX_LINES = 300
TRAINING_LOOP = "msbench/training.py"


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (``msbench.defenses.mad``; a package by its own name)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported(name: str, path: Path, known: set[str], type_checking: bool = False) -> set[str]:
    """The package modules ``name`` imports anywhere in its file (module level or inside a function;
    ``if TYPE_CHECKING:`` blocks excepted, as they never run, unless ``type_checking``: a type checker
    follows them). ``from a import b`` counts as importing ``a.b`` when that is a module, else ``a``.
    ``importlib.import_module("msbench.x")`` with a literal name counts too."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node) and not type_checking:
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                targets.add(full if full in known else base)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            targets.add(node.args[0].value)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {t for t in targets if t in known and t != name}


def import_graph(type_checking: bool = False) -> dict[str, set[str]]:
    found = modules()
    return {name: imported(name, path, set(found), type_checking) for name, path in found.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for root in sorted(graph):
        if state.get(root):
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            for child in stack[-1]:
                if state.get(child) == 1:
                    return path[path.index(child):] + [child]
                if not state.get(child):
                    state[child] = 1
                    path.append(child)
                    stack.append(iter(sorted(graph[child])))
                    break
            else:
                state[path.pop()] = 2
                stack.pop()
    return None


def test_find_cycle_finds_a_cycle_and_only_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle_in_the_package() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


ANNOTATION_CYCLES: set[tuple[str, str]] = set()
"""(module, what its TYPE_CHECKING block imports): a cycle left on purpose, each said why (none now)."""


def test_no_import_cycle_even_through_annotation_imports() -> None:
    """An ``if TYPE_CHECKING:`` import names the module that defines the type, not one that re-exports
    it from further up, so the annotations follow the layers too and a type checker sees no cycle."""
    graph, runs = import_graph(type_checking=True), import_graph()
    stale = sorted(f"{a} -> {b}" for a, b in ANNOTATION_CYCLES if b not in graph[a] - runs[a])
    assert not stale, "no longer an annotation import, drop from ANNOTATION_CYCLES: " + ", ".join(stale)
    for a, b in ANNOTATION_CYCLES:
        graph[a] = graph[a] - {b}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle through a TYPE_CHECKING import: " + " -> ".join(cycle)


@pytest.mark.parametrize("name", sorted(modules()))
def test_module_has_at_most_300_lines(name: str) -> None:
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines (at most {MAX_LINES}: split it by job)"


MAX_WIDTH = 120
WIDTH_PENDING: frozenset[str] = frozenset()  # modules exempt while being edited elsewhere (none now)


def test_no_line_is_wider_than_120_characters() -> None:
    """A line a reader can see whole, in a diff and side by side; a wider one is wrapped where it
    breaks naturally (after a comma, between two string literals), never by changing what it does."""
    offenders = []
    for path in modules().values():
        relative = path.relative_to(PACKAGE.parent).as_posix()
        if relative in WIDTH_PENDING:
            continue
        offenders += [f"{relative}:{number}: {len(line)} characters"
                      for number, line in enumerate(path.read_text().splitlines(), 1) if len(line) > MAX_WIDTH]
    assert not offenders, f"lines over {MAX_WIDTH} characters:\n" + "\n".join(offenders)


OPTIMISER_LOOP = re.compile(r"torch\.optim\b|\.step\(\)|\bdescend\(")


def test_one_training_loop() -> None:
    """Optimisers are made and stepped only in training.py: every trainer (victims, clones, a
    defense's auxiliary models, an attack's generator or restorer) supplies its step to that loop."""
    offenders = []
    for name, path in modules().items():
        relative = path.relative_to(PACKAGE.parent).as_posix()
        if relative == TRAINING_LOOP:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if OPTIMISER_LOOP.search(code):
                offenders.append(f"{relative}:{number}: {line.strip()}")
    assert not offenders, "an optimiser outside msbench/training.py:\n" + "\n".join(offenders)


def _string_constants(path: Path) -> set[str]:
    return {node.value for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Constant)
            and isinstance(node.value, str)}


@pytest.mark.parametrize("folder", ["report", "timing"])
def test_report_and_timing_code_name_no_defense(folder: str) -> None:
    """Labels, colours, paper order, the reference row and cost formulas come from the plugins, so a
    new defense is shown and costed like the built-in ones with nothing added here."""
    paths = [p for name, p in modules().items() if name.startswith(f"msbench.{folder}")]
    assert paths, f"msbench/{folder} not found"
    names = set(DEFENSES.names())
    offenders = sorted(f"{p.relative_to(PACKAGE.parent)}: '{s}'" for p in paths for s in _string_constants(p) & names)
    assert not offenders, "defense names in report or timing code:\n" + "\n".join(offenders)


PLUGIN_PACKAGES = ("msbench.attacks", "msbench.defenses", "msbench.models", "msbench.data", "msbench.detection")
RUNNER_REEXPORTS = {"msbench.defenses"}  # the victim checkpoint functions, importable from their old home
ABOVE_THE_STAGES = {"msbench", "msbench.cli", "msbench.__main__", "msbench.report_options"}


def test_the_stages_live_in_runner_and_what_they_use_never_imports_them() -> None:
    """The pipeline (suite -> cells -> workspace -> victims -> evaluate -> results -> run) is the
    ``msbench.runner`` package; plugins and the utilities beside it do not reach up into it, so each
    reads alone. Callers of the stages (CLI, executors, timing, report) may."""
    graph = import_graph()
    top_level = {n for n in graph if n.count(".") == 1 and n not in ABOVE_THE_STAGES
                 and not any(n == p for p in PLUGIN_PACKAGES + ("msbench.runner", "msbench.report", "msbench.timing",
                                                                "msbench.executors"))}
    below = {n for n in graph if n.startswith(PLUGIN_PACKAGES) and n not in RUNNER_REEXPORTS} | top_level
    offenders = sorted(f"{n} imports {t}" for n in below for t in graph[n] if t.startswith("msbench.runner"))
    assert not offenders, "a plugin or utility imports a pipeline stage:\n" + "\n".join(offenders)
    flat = {"suite", "cells", "workspace", "victims", "evaluate", "results", "run"} & {
        n.split(".")[1] for n in top_level}
    assert not flat, f"pipeline stages outside msbench/runner/: {sorted(flat)}"


def test_the_benchmark_scripts_import_what_exists() -> None:
    """Benchmarks are not collected by the default test run: their imports of msbench are checked here."""
    import importlib.util

    missing = []
    for path in sorted((PACKAGE.parent / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("msbench"):
                module = importlib.import_module(node.module)
                missing += [f"{path.name}: {node.module}.{a.name}" for a in node.names
                            if not hasattr(module, a.name) and importlib.util.find_spec(
                                f"{node.module}.{a.name}") is None]
    assert not missing, "benchmark imports that do not exist:\n" + "\n".join(missing)
