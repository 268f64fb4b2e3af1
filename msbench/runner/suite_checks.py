"""Checks of single suite values, each raising a SuiteError that names the file, the key and what was expected.

``msbench.runner.suite`` calls them while it reads a file; a stage that reads a section of its own
(``[timing]``, ``[sweep]``) can call them for the same messages.
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable

from msbench.config import SuiteError, build
from msbench.data import DatasetSpec, file_dataset, union_dataset
from msbench.defenses.chain import chain_problem
from msbench.registry import DATASETS, DEFENSES, Registry, UnknownPluginError
from msbench.runner.suite_schema import DatasetOptions, RunOptions
from msbench.training import Recipe


NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def device_problem(name: str) -> str | None:
    """Why ``name`` is not a device msbench can run on (syntax only; availability is checked at run time)."""
    if not DEVICE_PATTERN.fullmatch(name):
        return f"expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {name!r}"
    return None


def check_run(run: RunOptions, file: str) -> None:
    """The ``[run]`` table's values: a device msbench knows, subsets, a validation fraction that
    ``match_benign`` can tune on."""
    problem = device_problem(run.device)
    if problem:
        raise SuiteError(file, "run.device", problem)
    for key in ("train_subset", "test_subset"):
        check_subset(getattr(run, key), file, f"run.{key}")
    if not (0 <= run.val_fraction < 1):
        raise SuiteError(file, "run.val_fraction", f"expected a fraction in [0, 1), got {run.val_fraction}")
    if run.match_benign is not None:
        if not (math.isfinite(run.match_benign) and run.match_benign >= 0):
            raise SuiteError(file, "run.match_benign",
                             f"expected a finite number of points >= 0, got {run.match_benign}")
        if run.val_fraction == 0:
            raise SuiteError(file, "run.val_fraction", "expected > 0: run.match_benign tunes on the validation split")


def check_subset(value: int | None, file: str, key: str) -> None:
    """A subset size: a positive number of images, or None for all of them."""
    if value is not None and value < 1:
        raise SuiteError(file, key, f"expected a positive number of images (or no key for all), got {value}")


def check_unique(values: list[Any], file: str, key: str) -> None:
    """Each value once (names compared without case): a repeated entry would run its cells twice."""
    seen: dict[Any, int] = {}
    for i, value in enumerate(values):
        normal = value.lower() if isinstance(value, str) else value
        if normal in seen:
            raise SuiteError(file, f"{key}[{i}]",
                             f"{value!r} is listed twice (also {key}[{seen[normal]}]); expected each once")
        seen[normal] = i


def plugin_name(registry: Registry, name: str, file: str, key: str) -> str:
    """A registered plugin's name, lower-cased; an unknown one is refused with the nearest registered name."""
    try:
        registry.get(name)
    except UnknownPluginError as unknown:
        raise SuiteError(file, key, str(unknown)) from None
    return name.lower()


def check_composition(composition: str, file: str, key: str) -> None:
    """A defense composition (``ini+mad``): each link registered, the links in an order that deploys."""
    for part in composition.split("+"):
        plugin_name(DEFENSES, part.strip(), file, key)
    problem = chain_problem(composition)
    if problem:
        raise SuiteError(file, key, problem)


def table(raw: dict[str, Any], key: str, file: str) -> dict[str, Any]:
    """``raw[key]`` as a table (empty when absent)."""
    return table_value(raw.get(key, {}), file, key)


def table_value(value: Any, file: str, key: str) -> dict[str, Any]:
    """``value`` when it is a table; anything else is refused, naming ``key``."""
    if not isinstance(value, dict):
        raise SuiteError(file, key, f"expected a table, got {value!r}")
    return value


def check_recipe(recipe: Recipe, file: str, key: str) -> None:
    """A training recipe's values: positive counts, finite rates (its schedule and augmentation are
    closed vocabularies, checked when the table is read)."""
    for name in ("epochs", "batch_size", "step_size"):
        if getattr(recipe, name) < 1:
            raise SuiteError(file, f"{key}.{name}", f"expected a positive integer, got {getattr(recipe, name)}")
    for name, low, strict in (("lr", 0, True), ("gamma", 0, True), ("momentum", 0, False), ("weight_decay", 0, False)):
        value = getattr(recipe, name)
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise SuiteError(file, f"{key}.{name}",
                             f"expected a finite number {'>' if strict else '>='} {low}, got {value}")


def file_spec(name: str, options: DatasetOptions, file: str, key: str) -> DatasetSpec:
    """The spec of a dataset a suite defines from files (``format``, ``like``, its splits' paths)."""
    if not options.like:
        raise SuiteError(file, f"{key}.like",
                         "a file dataset needs 'like': the registered dataset whose shape and normalisation it shares")
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
            raise SuiteError(file, f"{key}.{split}",
                             "expected a table {images = \"...\", labels = \"...\"} of IDX paths")
    return file_dataset(name, options.format, options.like, options.train, options.test, options.num_classes,
                        options.note)


def union_specs(options_of: dict[str, DatasetOptions], specs: dict[str, DatasetSpec],
                spec_of: Callable[[str, str], DatasetSpec],
            file: str) -> None:
    """``[datasets.<name>] union = [...]``: each union's spec from its members (known datasets of one
    shape, a union defined above it included), added to ``specs``."""
    for name, options in options_of.items():
        if options.union is None:
            continue
        key = f"datasets.{name}.union"
        if options.format is not None:
            raise SuiteError(file, key, "a dataset is defined by its files (format) or as a union, not both")
        if not options.union:
            raise SuiteError(file, key, "expected a non-empty list of dataset names")
        check_unique(options.union, file, key)
        members = []
        for i, member in enumerate(options.union):
            if member == name:
                raise SuiteError(file, f"{key}[{i}]", f"a union cannot contain itself ('{name}')")
            members.append(spec_of(member, f"{key}[{i}]"))
            if members[-1].shape != members[0].shape:
                raise SuiteError(file, f"{key}[{i}]", f"'{member}' has images of shape {members[-1].shape}, "
                                                      f"'{members[0].name}' {members[0].shape}: a union's members "
                                                      f"share one shape")
        specs[name] = union_dataset(name, members, options.note)


def union_members(suite_options: dict[str, DatasetOptions], name: str) -> set[str]:
    """Every dataset a union contains, unions within it unfolded; {} for a dataset that is no union."""
    members = (suite_options.get(name) or DatasetOptions()).union or []
    return set(members).union(*(union_members(suite_options, m) for m in members)) if members else set()
