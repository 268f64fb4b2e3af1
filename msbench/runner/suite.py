"""Suites: a TOML file validated into typed settings before any work starts.

See docs/suites.md for the format. Every error is a SuiteError naming the file, the key path and
what was expected; misspelt plugin names get the nearest registered name as a suggestion.
``parse_suite`` reads a suite section by section, one small parser each, in the order its errors
are reported; the types it fills are in ``msbench.runner.suite_schema``, single-value checks in
``msbench.runner.suite_checks``.
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Callable

import msbench.attacks  # noqa: F401  (registers the built-in plugins before names are checked)
import msbench.defenses  # noqa: F401
import msbench.models  # noqa: F401
from msbench.config import Problems, SuiteError, build, coerce, unknown_key
from msbench.data import ROLES, DatasetSpec, default_data_root
from msbench.defenses.chain import resolve_chain
from msbench.plugin_config import plugin_config
from msbench.plugin_modules import import_plugins
from msbench.report_options import ReportOptions
from msbench.registry import ARCHITECTURES, ATTACKS, DATASETS, DEFENSES, Registry, UnknownPluginError
from msbench.runner.suite_checks import (NAME_PATTERN, check_composition, check_recipe, check_run, check_subset,
                                         check_unique, device_problem, file_spec, plugin_name, table, table_value,
                                         union_members, union_specs)
from msbench.runner.suite_data import check_data
from msbench.runner.suite_schema import DatasetOptions, Matrix, PluginSettings, RunOptions, Suite
from msbench.runner.sweep import SweepOptions
from msbench.timing.schema import TimingOptions
from msbench.training import CLONE_RECIPE, Recipe

TOP_LEVEL = {"name", "description", "plugins", "matrix", "run", "victim", "clone", "defenses", "attacks", "datasets"}
MAX_EXTENDS = 32
"""Files an ``extends`` chain may read after the first: a variant of a variant is a few levels; a chain far
deeper is a generated mistake, refused in one line rather than by Python's recursion limit."""
EXTRA_SECTIONS: dict[str, type] = {"timing": TimingOptions, "sweep": SweepOptions, "report": ReportOptions}
"""Further top-level tables (``timing``, ``sweep``, ``report``): the stages that read them own their types.
A section class may define ``validate(self, suite)``, raising SuiteError, to check it against the suite."""


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file; raises SuiteError on the first problem found."""
    path = Path(path)
    return parse_suite(_read_extended(path, ()), str(path), path)


def _read_extended(path: Path, extending: tuple[Path, ...]) -> dict[str, Any]:
    """A suite file's TOML with its ``extends`` chain applied: the base file (a path relative to
    this one) is read first and this file's tables are merged into it key by key, so a variant of
    a suite (more seeds of two defenses, say) states only what differs and cannot drift from it.
    ``extending``: the files already read that extend this one, so a base naming one of them is a cycle."""
    raw = _read_toml(path)
    file = str(path)
    base_name = raw.pop("extends", None)
    if base_name is None:
        return raw
    if not isinstance(base_name, str) or not base_name:
        raise SuiteError(file, "extends", f"expected the path of a suite TOML file, got {base_name!r}")
    if "name" not in raw:
        raise SuiteError(file, "name",
                         "missing: a suite that extends another names itself (its run and report folders)")
    chain, base = (*extending, path.resolve()), (path.parent / base_name).resolve()
    if base in chain:
        raise SuiteError(file, "extends", f"'{base_name}' extends this file again (a cycle)")
    if len(chain) > MAX_EXTENDS:
        raise SuiteError(file, "extends",
                         f"the chain of extends from {chain[0]} is more than {MAX_EXTENDS} suites deep; flatten it")
    if not base.is_file():
        raise SuiteError(file, "extends", f"no such suite file '{base_name}' (relative to {path.parent})")
    return _merged(_read_extended(base, chain), raw)


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override``'s keys: tables merge recursively, any other value replaces."""
    out = dict(base)
    for key, value in override.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read_toml(path: Path) -> dict[str, Any]:
    file = str(path)
    if path.is_dir():
        raise SuiteError(file, "", "is a folder; expected a suite TOML file")
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise SuiteError(file, "", "no such file") from None
    except OSError as failure:
        raise SuiteError(file, "", f"cannot read ({failure.strerror})") from None
    except UnicodeDecodeError:
        raise SuiteError(file, "", "not a text file; expected a suite in TOML (UTF-8)") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as bad:
        raise SuiteError(file, "", f"not valid TOML ({bad})") from None
    if not raw:
        raise SuiteError(file, "", "empty file; expected a suite in TOML with at least a [matrix] table")
    return raw


def parse_suite(raw: dict[str, Any], file: str = "<suite>", path: Path | None = None) -> Suite:
    """A suite from its parsed TOML: every value checked, every plugin and dataset resolved. Every
    problem is found in one pass where the checks do not depend on each other (a bad ``[run]``, a bad
    recipe and an unknown attack are three lines of one error, not three edit-and-rerun cycles)."""
    problems = Problems()
    for key in raw:
        if key not in TOP_LEVEL and key not in EXTRA_SECTIONS:
            problems.found.append(unknown_key(file, "", key, sorted(TOP_LEVEL | set(EXTRA_SECTIONS))))
    plugins = problems.check(lambda: _plugins(raw, file, path), [])
    if problems.found and plugins == [] and raw.get("plugins"):  # without its plugins, its names cannot be checked
        problems.raise_any()
    if "matrix" not in raw:
        problems.raise_any(SuiteError(file, "matrix",
                                      "missing table: a suite must name its datasets, archs, defenses and attacks"))
    matrix = problems.check(lambda: build(Matrix, raw["matrix"], file, "matrix"))
    if matrix is None:  # everything else is checked against the matrix
        problems.raise_any()
    run = problems.check(lambda: build(RunOptions, raw.get("run", {}), file, "run"), RunOptions())
    victim = problems.check(lambda: build(Recipe, raw.get("victim", {}), file, "victim", base=Recipe()), Recipe())
    clone = problems.check(lambda: build(Recipe, raw.get("clone", {}), file, "clone", base=CLONE_RECIPE), CLONE_RECIPE)
    problems.check(lambda: check_run(run, file))
    before = len(problems.found)
    problems.check(lambda: check_recipe(victim, file, "victim"))
    victim = victim if len(problems.found) == before else Recipe()  # a bad value is reported once, not again by every
    before = len(problems.found)                                     # plugin recipe that inherits it
    problems.check(lambda: check_recipe(clone, file, "clone"))
    clone = clone if len(problems.found) == before else CLONE_RECIPE
    specs: dict[str, DatasetSpec] = {}
    before = len(problems.found)
    dataset_options = problems.check(lambda: _datasets(raw, victim, specs, file), {})
    spec_of = _spec_resolver(specs, file)
    problems.check(lambda: union_specs(dataset_options, specs, spec_of, file))
    if len(problems.found) > before:  # a dataset that failed to define would be "unknown" wherever it is named
        problems.raise_any()
    for i, name in enumerate(matrix.datasets):
        problems.check(lambda: spec_of(name, f"matrix.datasets[{i}]"))
    for name in dataset_options:
        problems.check(lambda: spec_of(name, f"datasets.{name}"))
    used_defenses = problems.check(lambda: _check_matrix(matrix, file))
    if used_defenses is None:  # unknown plugin names: their settings cannot be read
        problems.raise_any()
    defenses = problems.check(lambda: _plugin_settings(raw, "defenses", DEFENSES, used_defenses, victim, file), {})
    attacks = problems.check(lambda: _plugin_settings(raw, "attacks", ATTACKS, {a.lower() for a in matrix.attacks},
                                                      clone, file), {})
    if set(matrix.datasets) <= set(specs):
        problems.check(lambda: _check_roles(matrix, dataset_options, specs, spec_of, file))
    extra = {section: problems.check(lambda: build(cls, table(raw, section, file), file, section), cls())
             for section, cls in EXTRA_SECTIONS.items()}
    name = problems.check(lambda: _name(raw, file, path), "suite")
    description = problems.check(lambda: coerce(raw.get("description", ""), str, file, "description"), "")
    problems.raise_any()  # the sections below check against a whole suite
    suite = Suite(name, path or Path(file), description, matrix, run, victim, clone, defenses, attacks, dataset_options,
                  specs, plugins, raw, extra)
    for section in extra.values():
        if hasattr(section, "validate"):
            problems.check(lambda: section.validate(suite))
    problems.raise_any()
    return suite


def _plugins(raw: dict[str, Any], file: str, path: Path | None) -> list[str]:
    """``plugins``: each module imported (from the suite file's folder first, then sys.path), so
    the names it registers are known before the rest of the suite is checked."""
    plugins = coerce(raw.get("plugins", []), list[str], file, "plugins")
    for i, module in enumerate(plugins):
        try:
            import_plugins([module], path.parent if path else None)
        except Exception as failure:  # a plugin may fail to import in any way: name it, not a traceback
            raise SuiteError(file, f"plugins[{i}]",
                             f"cannot import plugin '{module}' ({type(failure).__name__}: {failure})") from None
    return plugins


def _datasets(raw: dict[str, Any], victim: Recipe, specs: dict[str, DatasetSpec],
              file: str) -> dict[str, DatasetOptions]:
    """``[datasets.<name>]``: per-dataset options; a table with ``format`` adds its file dataset to ``specs``."""
    options_of: dict[str, DatasetOptions] = {}
    for name, entry in table(raw, "datasets", file).items():
        key = f"datasets.{name}"
        options = build(DatasetOptions, table_value(entry, file, key), file, key)
        for which in ("train_subset", "test_subset"):
            check_subset(getattr(options, which), file, f"{key}.{which}")
        if options.num_classes is not None and options.num_classes < 2:
            raise SuiteError(file, f"{key}.num_classes", f"expected at least 2 classes, got {options.num_classes}")
        if options.format is not None:
            specs[name] = file_spec(name, options, file, key)
        if options.victim is not None:
            check_recipe(build(Recipe, options.victim, file, f"{key}.victim", base=victim), file, f"{key}.victim")
        options_of[name] = options
    return options_of


def _spec_resolver(specs: dict[str, DatasetSpec], file: str) -> Callable[[str, str], DatasetSpec]:
    """``spec_of(name, key)``: a dataset's spec, the suite's file datasets first, then the registry
    (added to ``specs``, so the suite keeps every dataset it touches); an unknown name is refused at ``key``."""
    def spec_of(name: str, key: str) -> DatasetSpec:
        if name not in specs:
            try:
                specs[name] = DATASETS.get(name)
            except UnknownPluginError as unknown:
                close = DATASETS.suggest(name) or next(iter(k for k in specs if k.startswith(name[:3])), None)
                hint = f"; did you mean '{close}'?" if close else ""
                raise SuiteError(file, key, f"unknown dataset '{name}'{hint}") from unknown
        return specs[name]

    return spec_of


def _check_matrix(matrix: Matrix, file: str) -> set[str]:
    """``[matrix]``'s lists: known archs and plugins, each once, compositions that chain (label
    modes, a closed vocabulary, were checked when the table was read); returns every defense the
    compositions' chains use."""
    for i, arch in enumerate(matrix.archs):
        plugin_name(ARCHITECTURES, arch, file, f"matrix.archs[{i}]")
    for key in ("datasets", "archs", "defenses", "attacks", "label_modes", "seeds"):
        if not getattr(matrix, key):
            raise SuiteError(file, f"matrix.{key}", "expected a non-empty list")
        check_unique([v.replace(" ", "") if isinstance(v, str) else v for v in getattr(matrix, key)], file,
                     f"matrix.{key}")
    for i, seed in enumerate(matrix.seeds):
        if seed < 0:
            raise SuiteError(file, f"matrix.seeds[{i}]", f"expected a non-negative integer, got {seed}")
    used: set[str] = set()
    for i, composition in enumerate(matrix.defenses):
        check_composition(composition, file, f"matrix.defenses[{i}]")
        used.update(resolve_chain(composition))
    for i, name in enumerate(matrix.attacks):
        plugin_name(ATTACKS, name, file, f"matrix.attacks[{i}]")
    return used


def _plugin_settings(raw: dict[str, Any], section: str, registry: Registry, used: set[str], recipe: Recipe,
                     file: str) -> dict[str, PluginSettings]:
    """``[defenses.<name>]`` or ``[attacks.<name>]``: each used or configured plugin's Config and
    recipe (over the suite's victim or clone recipe)."""
    tables = table(raw, section, file)
    settings = {}
    for name, entry in tables.items():
        plugin_name(registry, name, file, f"{section}.{name}")
        table_value(entry, file, f"{section}.{name}")
    for name in used | {n.lower() for n in tables}:
        entry = dict(tables.get(name, {}))
        key = f"{section}.{name}"
        own_recipe = build(Recipe, table_value(entry.pop("recipe", {}), file, f"{key}.recipe"), file, f"{key}.recipe",
                           base=recipe)
        check_recipe(own_recipe, file, f"{key}.recipe")
        settings[name] = PluginSettings(plugin_config(registry, name, entry, file, key), own_recipe)
    return settings


def _check_roles(matrix: Matrix, dataset_options: dict[str, DatasetOptions], specs: dict[str, DatasetSpec],
                 spec_of: Callable[[str, str], DatasetSpec], file: str) -> None:
    """Role datasets, given or defaulted by the dataset, must name known datasets, and a union in a
    role must not contain the victim's own dataset (its test split would reach the attacker or the defense)."""
    for dataset in matrix.datasets:
        options = dataset_options.get(dataset, DatasetOptions())
        for role in ROLES:
            explicit = getattr(options, role)
            other = explicit or specs[dataset].roles.get(role)
            key = f"datasets.{dataset}.{role}" + ("" if explicit else " (default)")
            if other:
                spec_of(other, key)
                if dataset in union_members(dataset_options, other):
                    raise SuiteError(file, key, f"the union '{other}' contains '{dataset}', the victim's own dataset")


def _name(raw: dict[str, Any], file: str, path: Path | None) -> str:
    """The suite's name (default: the file's stem): it names runs/<name> and reports/<name>, so a plain folder name."""
    name = coerce(raw.get("name", path.stem if path else "suite"), str, file, "name")
    if not NAME_PATTERN.fullmatch(name) or name in (".", ".."):
        raise SuiteError(file, "name", f"expected a plain folder name (letters, digits, '.', '_', '+', '-'; "
                                       f"it names runs/<name> and reports/<name>), got {name!r}")
    return name


__all__ = ["Suite", "SuiteError", "Matrix", "RunOptions", "DatasetOptions", "PluginSettings", "load_suite",
           "parse_suite",
           "check_data", "device_problem", "plugin_config", "default_data_root", "EXTRA_SECTIONS"]
