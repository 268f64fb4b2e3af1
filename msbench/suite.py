"""Suites: a TOML file validated into typed settings before any work starts.

See docs/suites.md for the format. Every error is a SuiteError naming the file, the key path and
what was expected; misspelt plugin names get the nearest registered name as a suggestion.
"""
from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msbench.attacks  # noqa: F401  (registers the built-in plugins before names are checked)
import msbench.defenses  # noqa: F401
import msbench.models  # noqa: F401
from msbench.config import SuiteError, as_dict, build, coerce, unknown_key
from msbench.defenses import OutputDefense
from msbench.data import ROLES, DataError, DatasetSpec, MissingDataError, default_data_root, file_dataset, load_split
from msbench.oracle import LABEL_MODES
from msbench.plugin_config import plugin_config
from msbench.plugin_modules import import_plugins
from msbench.registry import ARCHITECTURES, ATTACKS, DATASETS, DEFENSES, UnknownPluginError
from msbench.timing.schema import TimingOptions
from msbench.training import CLONE_RECIPE, Recipe


@dataclass
class Matrix:
    """The cross product a suite runs: every dataset x arch x defense x attack x label mode x seed."""

    datasets: list[str]
    archs: list[str]
    defenses: list[str]
    attacks: list[str]
    label_modes: list[str] = field(default_factory=lambda: ["soft", "hard"])
    seeds: list[int] = field(default_factory=lambda: [0])


@dataclass
class RunOptions:
    device: str = "auto"  # "auto", "cpu", "cuda" or "cuda:N"
    train_subset: int | None = None  # victim training images per dataset (None: all)
    test_subset: int | None = None  # test images for benign / clone accuracy (None: all)
    val_fraction: float = 0.1  # of the training subset, held out for benign-accuracy matching
    match_benign: float | None = None  # points: tune output defenses to stay this close to their base victim


@dataclass
class DatasetOptions:
    """Per-dataset settings: role datasets, subsets, and (with ``format``) a file dataset definition."""

    ood: str | None = None
    hash: str | None = None
    surrogate: str | None = None
    train_subset: int | None = None
    test_subset: int | None = None
    format: str | None = None  # "idx" or "npz": defines a new dataset read from files
    like: str | None = None  # registered dataset whose shape and normalisation it shares
    train: Any = None  # npz path, or {images, labels} idx paths, relative to the data root
    test: Any = None
    num_classes: int | None = None
    note: str = ""
    victim: dict[str, Any] | None = None  # recipe fields overriding the victims' recipe on this dataset


@dataclass
class PluginSettings:
    """A defense's or attack's Config, plus an optional training-recipe override."""

    config: Any
    recipe: Recipe


@dataclass
class Suite:
    name: str
    path: Path
    description: str
    matrix: Matrix
    run: RunOptions
    victim: Recipe
    clone: Recipe
    defenses: dict[str, PluginSettings]
    attacks: dict[str, PluginSettings]
    datasets: dict[str, DatasetOptions]
    specs: dict[str, DatasetSpec]  # every dataset the suite touches, registered or file-defined
    plugins: list[str]
    raw: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)  # sections added by later stages (timing, report)

    # -- queries the runner needs -------------------------------------------------------------
    def chain(self, composition: str) -> list[str]:
        return resolve_chain(composition)

    def spec(self, name: str) -> DatasetSpec:
        return self.specs[name]

    def role(self, dataset: str, role: str) -> str | None:
        options = self.datasets.get(dataset, DatasetOptions())
        return getattr(options, role) or self.specs[dataset].roles.get(role)

    def victim_recipe(self, dataset: str, defense: str) -> Recipe:
        """A defense's victim recipe on a dataset: the defense's, then the dataset's overrides."""
        overrides = self.datasets.get(dataset, DatasetOptions()).victim or {}
        return self.defenses[defense].recipe.with_(**overrides)

    def subset(self, dataset: str, which: str) -> int | None:
        options = self.datasets.get(dataset, DatasetOptions())
        return getattr(options, f"{which}_subset") or getattr(self.run, f"{which}_subset")

    def resolved(self) -> dict[str, Any]:
        """The suite with every default filled in: what the run directory records."""
        return {
            "name": self.name, "description": self.description, "matrix": as_dict(self.matrix),
            "run": as_dict(self.run), "victim": as_dict(self.victim), "clone": as_dict(self.clone),
            "defenses": {k: {"config": as_dict(v.config), "recipe": as_dict(v.recipe)} for k, v in self.defenses.items()},
            "attacks": {k: {"config": as_dict(v.config), "recipe": as_dict(v.recipe)} for k, v in self.attacks.items()},
            "datasets": {k: as_dict(v) for k, v in self.datasets.items()}, "plugins": self.plugins,
            **{k: as_dict(v) for k, v in self.extra.items()},
        }


TOP_LEVEL = {"name", "description", "plugins", "matrix", "run", "victim", "clone", "defenses", "attacks", "datasets"}
EXTRA_SECTIONS: dict[str, type] = {"timing": TimingOptions}
"""Further top-level tables (``timing``, ``report``) registered by the stages that read them.
A section class may define ``validate(self, suite)``, raising SuiteError, to check it against the suite."""


def resolve_chain(composition: str) -> list[str]:
    """``ini+mad`` -> ["ini", "mad"]; ``mad`` -> ["vanilla", "mad"] through MAD's default base."""
    names = [part.strip().lower() for part in composition.split("+")]
    head = DEFENSES.get(names[0])
    while issubclass(head, OutputDefense):
        names.insert(0, head.default_base)
        head = DEFENSES.get(names[0])
    return names


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file; raises SuiteError on the first problem found."""
    path = Path(path)
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
    return parse_suite(raw, file, path)


NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def device_problem(name: str) -> str | None:
    """Why ``name`` is not a device msbench can run on (syntax only; availability is checked at run time)."""
    if not DEVICE_PATTERN.fullmatch(name):
        return f"expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {name!r}"
    return None


def _check_run(run: RunOptions, file: str) -> None:
    problem = device_problem(run.device)
    if problem:
        raise SuiteError(file, "run.device", problem)
    for key in ("train_subset", "test_subset"):
        _check_subset(getattr(run, key), file, f"run.{key}")
    if not (0 <= run.val_fraction < 1):
        raise SuiteError(file, "run.val_fraction", f"expected a fraction in [0, 1), got {run.val_fraction}")
    if run.match_benign is not None:
        if not (math.isfinite(run.match_benign) and run.match_benign >= 0):
            raise SuiteError(file, "run.match_benign", f"expected a finite number of points >= 0, got {run.match_benign}")
        if run.val_fraction == 0:
            raise SuiteError(file, "run.val_fraction", "expected > 0: run.match_benign tunes on the validation split")


def _check_subset(value: int | None, file: str, key: str) -> None:
    if value is not None and value < 1:
        raise SuiteError(file, key, f"expected a positive number of images (or no key for all), got {value}")


def _check_unique(values: list[Any], file: str, key: str) -> None:
    seen: dict[Any, int] = {}
    for i, value in enumerate(values):
        normal = value.lower() if isinstance(value, str) else value
        if normal in seen:
            raise SuiteError(file, f"{key}[{i}]", f"{value!r} is listed twice (also {key}[{seen[normal]}]); expected each once")
        seen[normal] = i


def _plugin_name(registry, name: str, file: str, key: str) -> str:
    try:
        registry.get(name)
    except UnknownPluginError as unknown:
        raise SuiteError(file, key, str(unknown)) from None
    return name.lower()


def parse_suite(raw: dict[str, Any], file: str = "<suite>", path: Path | None = None) -> Suite:
    for key in raw:
        if key not in TOP_LEVEL and key not in EXTRA_SECTIONS:
            raise unknown_key(file, "", key, sorted(TOP_LEVEL | set(EXTRA_SECTIONS)))
    plugins = coerce(raw.get("plugins", []), list[str], file, "plugins")
    for i, module in enumerate(plugins):  # from the suite file's folder first, then sys.path
        try:
            import_plugins([module], path.parent if path else None)
        except Exception as failure:  # a plugin may fail to import in any way: name it, not a traceback
            raise SuiteError(file, f"plugins[{i}]", f"cannot import plugin '{module}' ({type(failure).__name__}: {failure})") from None

    if "matrix" not in raw:
        raise SuiteError(file, "matrix", "missing table: a suite must name its datasets, archs, defenses and attacks")
    matrix = build(Matrix, raw["matrix"], file, "matrix")
    run = build(RunOptions, raw.get("run", {}), file, "run")
    victim = build(Recipe, raw.get("victim", {}), file, "victim", base=Recipe())
    clone = build(Recipe, raw.get("clone", {}), file, "clone", base=CLONE_RECIPE)
    _check_run(run, file)
    for recipe, key in ((victim, "victim"), (clone, "clone")):
        _check_recipe(recipe, file, key)

    specs: dict[str, DatasetSpec] = {}
    dataset_options: dict[str, DatasetOptions] = {}
    for name, table in _table(raw, "datasets", file).items():
        key = f"datasets.{name}"
        options = build(DatasetOptions, _table_value(table, file, key), file, key)
        for which in ("train_subset", "test_subset"):
            _check_subset(getattr(options, which), file, f"{key}.{which}")
        if options.num_classes is not None and options.num_classes < 2:
            raise SuiteError(file, f"{key}.num_classes", f"expected at least 2 classes, got {options.num_classes}")
        if options.format is not None:
            specs[name] = _file_spec(name, options, file, key)
        if options.victim is not None:
            _check_recipe(build(Recipe, options.victim, file, f"{key}.victim", base=victim), file, f"{key}.victim")
        dataset_options[name] = options

    def spec_of(name: str, key: str) -> DatasetSpec:
        if name not in specs:
            try:
                specs[name] = DATASETS.get(name)
            except UnknownPluginError as unknown:
                close = DATASETS.suggest(name) or next(iter(k for k in specs if k.startswith(name[:3])), None)
                hint = f"; did you mean '{close}'?" if close else ""
                raise SuiteError(file, key, f"unknown dataset '{name}'{hint}") from unknown
        return specs[name]

    for i, name in enumerate(matrix.datasets):
        spec_of(name, f"matrix.datasets[{i}]")
    for name in dataset_options:
        spec_of(name, f"datasets.{name}")
    for i, arch in enumerate(matrix.archs):
        _plugin_name(ARCHITECTURES, arch, file, f"matrix.archs[{i}]")
    for i, mode in enumerate(matrix.label_modes):
        if mode not in LABEL_MODES:
            raise SuiteError(file, f"matrix.label_modes[{i}]", f"expected 'soft' or 'hard', got '{mode}'")
    for key in ("datasets", "archs", "defenses", "attacks", "label_modes", "seeds"):
        if not getattr(matrix, key):
            raise SuiteError(file, f"matrix.{key}", "expected a non-empty list")
        _check_unique([v.replace(" ", "") if isinstance(v, str) else v for v in getattr(matrix, key)], file, f"matrix.{key}")
    for i, seed in enumerate(matrix.seeds):
        if seed < 0:
            raise SuiteError(file, f"matrix.seeds[{i}]", f"expected a non-negative integer, got {seed}")

    used_defenses: set[str] = set()
    for i, composition in enumerate(matrix.defenses):
        key = f"matrix.defenses[{i}]"
        for part in composition.split("+"):
            _plugin_name(DEFENSES, part.strip(), file, key)
        chain = resolve_chain(composition)
        for position, name in enumerate(chain):
            output = issubclass(DEFENSES.get(name), OutputDefense)
            if (position == 0) == output:
                kind = "an output" if output else "a training"
                where = "first" if position == 0 else "after '+'"
                raise SuiteError(file, key, f"'{name}' is {kind} defense and cannot come {where} in '{composition}'")
        used_defenses.update(chain)
    for i, name in enumerate(matrix.attacks):
        _plugin_name(ATTACKS, name, file, f"matrix.attacks[{i}]")

    defenses = _plugin_settings(raw, "defenses", DEFENSES, used_defenses, victim, file)
    attacks = _plugin_settings(raw, "attacks", ATTACKS, {a.lower() for a in matrix.attacks}, clone, file)

    # role datasets (given or defaulted) must name known datasets
    for dataset in matrix.datasets:
        options = dataset_options.get(dataset, DatasetOptions())
        for role in ROLES:
            explicit = getattr(options, role)
            other = explicit or specs[dataset].roles.get(role)
            if other:
                spec_of(other, f"datasets.{dataset}.{role}" + ("" if explicit else " (default)"))

    extra = {section: build(cls, _table(raw, section, file), file, section) for section, cls in EXTRA_SECTIONS.items()}
    name = coerce(raw.get("name", path.stem if path else "suite"), str, file, "name")
    if not NAME_PATTERN.fullmatch(name) or name in (".", ".."):
        raise SuiteError(file, "name", f"expected a plain folder name (letters, digits, '.', '_', '+', '-'; "
                                       f"it names runs/<name> and reports/<name>), got {name!r}")
    description = coerce(raw.get("description", ""), str, file, "description")
    suite = Suite(name, path or Path(file), description, matrix, run, victim, clone, defenses, attacks,
                  dataset_options, specs, plugins, raw, extra)
    for section in extra.values():
        if hasattr(section, "validate"):
            section.validate(suite)
    return suite


def _table(raw: dict[str, Any], key: str, file: str) -> dict[str, Any]:
    return _table_value(raw.get(key, {}), file, key)


def _table_value(value: Any, file: str, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SuiteError(file, key, f"expected a table, got {value!r}")
    return value


def _check_recipe(recipe: Recipe, file: str, key: str) -> None:
    if recipe.schedule not in ("step", "cosine", "constant"):
        raise SuiteError(file, f"{key}.schedule", f"expected 'step', 'cosine' or 'constant', got '{recipe.schedule}'")
    if recipe.augment not in ("auto", "none", "crop_flip"):
        raise SuiteError(file, f"{key}.augment", f"expected 'auto', 'none' or 'crop_flip', got '{recipe.augment}'")
    for name in ("epochs", "batch_size", "step_size"):
        if getattr(recipe, name) < 1:
            raise SuiteError(file, f"{key}.{name}", f"expected a positive integer, got {getattr(recipe, name)}")
    for name, low, strict in (("lr", 0, True), ("gamma", 0, True), ("momentum", 0, False), ("weight_decay", 0, False)):
        value = getattr(recipe, name)
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise SuiteError(file, f"{key}.{name}", f"expected a finite number {'>' if strict else '>='} {low}, got {value}")


def _plugin_settings(raw: dict[str, Any], section: str, registry, used: set[str], recipe: Recipe, file: str) -> dict[str, PluginSettings]:
    tables = _table(raw, section, file)
    settings = {}
    for name, table in tables.items():
        _plugin_name(registry, name, file, f"{section}.{name}")
        _table_value(table, file, f"{section}.{name}")
    for name in used | {n.lower() for n in tables}:
        table = dict(tables.get(name, {}))
        key = f"{section}.{name}"
        own_recipe = build(Recipe, _table_value(table.pop("recipe", {}), file, f"{key}.recipe"), file, f"{key}.recipe", base=recipe)
        _check_recipe(own_recipe, file, f"{key}.recipe")
        settings[name] = PluginSettings(plugin_config(registry, name, table, file, key), own_recipe)
    return settings


def _file_spec(name: str, options: DatasetOptions, file: str, key: str) -> DatasetSpec:
    if options.format not in ("idx", "npz"):
        raise SuiteError(file, f"{key}.format", f"expected 'idx' or 'npz', got '{options.format}'")
    if not options.like:
        raise SuiteError(file, f"{key}.like", "a file dataset needs 'like': the registered dataset whose shape and normalisation it shares")
    try:
        DATASETS.get(options.like)
    except UnknownPluginError as unknown:
        raise SuiteError(file, f"{key}.like", str(unknown)) from None
    if options.train is None and options.test is None:
        raise SuiteError(file, key, "a file dataset needs 'train' or 'test' files")
    for split in ("train", "test"):
        files = getattr(options, split)
        if files is None:
            continue
        if options.format == "npz" and not isinstance(files, str):
            raise SuiteError(file, f"{key}.{split}", "expected the path of an .npz file")
        if options.format == "idx" and not (isinstance(files, dict) and isinstance(files.get("images"), str)):
            raise SuiteError(file, f"{key}.{split}", "expected a table {images = \"...\", labels = \"...\"} of IDX paths")
    return file_dataset(name, options.format, options.like, options.train, options.test, options.num_classes, options.note)


def check_data(suite: Suite, root: Path) -> None:
    """Load every split the suite will read, so missing files fail before any training."""
    needed: list[tuple[str, str, str]] = []
    for dataset in suite.matrix.datasets:
        needed += [(dataset, "train", f"matrix.datasets ({dataset})"), (dataset, "test", f"matrix.datasets ({dataset})")]
        roles_used = set()
        for composition in suite.matrix.defenses:
            for name in resolve_chain(composition):
                roles_used.update(getattr(DEFENSES.get(name), "roles", ()))
        for attack in suite.matrix.attacks:
            roles_used.update(getattr(ATTACKS.get(attack), "roles", ()))
        for role in sorted(roles_used):
            other = suite.role(dataset, role)
            if other is None:
                raise SuiteError(str(suite.path), f"datasets.{dataset}.{role}", "this suite's plugins need this role dataset; none is set")
            needed.append((other, "train", f"datasets.{dataset}.{role}"))
    for name, split, key in needed:
        try:
            load_split(suite.spec(name), root, split)
        except MissingDataError as missing:
            raise SuiteError(str(suite.path), key, f"{name}: {missing}") from None
        except DataError as bad:  # name the data file first, then where the suite asks for it
            raise DataError(bad.file, bad.key, f"{bad.message} ({name} {split} split, read for {key} of {suite.path})") from None
        except OSError as failure:
            raise SuiteError(str(suite.path), key, f"{name}: cannot read {failure.filename or 'its files'} ({failure.strerror})") from None


__all__ = ["Suite", "SuiteError", "load_suite", "parse_suite", "check_data", "resolve_chain", "default_data_root", "EXTRA_SECTIONS"]

import msbench.sweep  # noqa: E402,F401  (registers the [sweep] section)
