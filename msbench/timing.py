"""The inference-cost stage: how much each defense slows the deployed API down (InI paper, Sec. 5.3).

Each defense composition's deployed victim is called on a batch of inputs ``repeats`` times after
``warmup`` calls, under ``torch.no_grad()`` and with ``torch.cuda.synchronize()`` around the timed
loop on a GPU, and the total is reported beside the undefended model's (``slowdown``) and beside
the paper's cost model of the defense (Table 4). Victims are trained ones: AM's gate and EDM's
routing depend on the trained weights, so timing an untrained model would measure another cost.

Where the suite's matrix trains victims on the timed (dataset, arch), those cached victims are
reused. Otherwise (timing ResNet-18 while the attacks use a small CNN, say) victims are trained
with the short recipe of the ``[timing]`` section (``epochs``, ``train_subset``) through a derived
suite whose run directory is ``<run dir>/timing_victims``; each row records which it was.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pandas as pd
import torch

from msbench.config import SuiteError, as_dict

if TYPE_CHECKING:  # imported lazily at run time: suite.py imports this module
    from msbench.workspace import Workspace
    from msbench.suite import Suite

INPUT_KINDS = ("random", "id", "ood")
VICTIM_SOURCES = ("auto", "suite", "short")
TIMING_VICTIMS = "timing_victims"  # sub-folder of the run directory for short-recipe victims
NO_TIMING = ("no [timing] section, so nothing is chosen to time: add one naming the defenses, archs, batch sizes "
             "and repeats to measure (docs/performance.md; suites/quick.toml has one)")
RANDOM_POOL = 1024  # distinct random images cycled through by the timed calls
COLUMNS = ["defense", "arch", "dataset", "input", "batch_size", "repeats", "warmup", "total_seconds", "ms_per_query",
           "ms_per_image", "slowdown", "cost_model", "implementation", "victim_source", "victim_recipe", "victim_trained",
           "benign_acc", "seed", "device", "threads", "torch", "msbench", "plan_key"]


@dataclass
class TimingOptions:
    """The ``[timing]`` table of a suite. ``None`` fields default to the suite's matrix."""

    archs: list[str] | None = None  # default: the matrix's archs
    dataset: str | None = None  # default: the matrix's first dataset
    defenses: list[str] | None = None  # compositions; default: the matrix's ("vanilla" is always timed)
    batch_sizes: list[int] = field(default_factory=lambda: [1, 128])
    repeats: int = 2000  # timed calls per measurement (the paper's 2000)
    warmup: int = 10  # untimed calls first (allocator, cuDNN autotuning, lazy init)
    inputs: list[str] = field(default_factory=lambda: ["random"])  # "random", "id" (test images), "ood" (ood role)
    with_run: bool = True  # false: `msbench run` skips this stage; `msbench time` runs it
    victims: str = "auto"  # "auto": the suite's victims where the matrix has the arch, else short; "suite"; "short"
    epochs: int = 1  # short recipe: epochs of every defense's training recipe
    batch_size: int | None = None  # short recipe: training batch size (None: each recipe's own); small batches
    # take more SGD steps per image, which is what a deep victim trained on few images needs
    train_subset: int | None = 5000  # short recipe: victim training images (None: the suite's)
    test_subset: int | None = 2000  # short recipe: test images for the victims' benign accuracy (None: the suite's)
    threads: int | None = None  # CPU threads while timing (None: torch's default); 1 is steadiest on a shared machine
    overrides: dict[str, Any] = field(default_factory=dict)  # [timing.overrides.<defense>]: settings over the suite's
    # for the short-recipe victims only (a deeper timing arch may need other weights than the matrix's small model)

    def validate(self, suite: "Suite") -> None:
        """Check names against the suite and the registries; raises SuiteError naming ``timing.<key>``."""
        from msbench.defenses import OutputDefense
        from msbench.registry import ARCHITECTURES, DEFENSES, UnknownPluginError
        from msbench.defenses.chain import resolve_chain

        file = str(suite.path)

        def known(registry: Any, name: str, key: str) -> None:
            try:
                registry.get(name)
            except UnknownPluginError as unknown:
                raise SuiteError(file, key, str(unknown)) from None

        for i, arch in enumerate(self.archs or []):
            known(ARCHITECTURES, arch, f"timing.archs[{i}]")
        if self.dataset is not None and self.dataset not in suite.matrix.datasets:
            raise SuiteError(file, "timing.dataset", f"expected one of the matrix's datasets ({', '.join(suite.matrix.datasets)}), got '{self.dataset}'")
        for i, composition in enumerate(self.defenses or []):
            key = f"timing.defenses[{i}]"
            for part in composition.split("+"):
                known(DEFENSES, part.strip(), key)
            for position, name in enumerate(resolve_chain(composition)):
                output = issubclass(DEFENSES.get(name), OutputDefense)
                if (position == 0) == output:
                    kind = "an output" if output else "a training"
                    raise SuiteError(file, key, f"'{name}' is {kind} defense and cannot come {'first' if position == 0 else 'after +'} in '{composition}'")
        for key in ("archs", "defenses", "batch_sizes", "inputs"):
            if getattr(self, key) is not None and not getattr(self, key):
                raise SuiteError(file, f"timing.{key}", "expected a non-empty list")
        for i, size in enumerate(self.batch_sizes):
            if size < 1:
                raise SuiteError(file, f"timing.batch_sizes[{i}]", f"expected a positive integer, got {size}")
        for i, kind in enumerate(self.inputs):
            if kind not in INPUT_KINDS:
                raise SuiteError(file, f"timing.inputs[{i}]", f"expected one of {', '.join(INPUT_KINDS)}, got '{kind}'")
            if kind == "ood" and suite.role(self.dataset or suite.matrix.datasets[0], "ood") is None:
                raise SuiteError(file, f"timing.inputs[{i}]", "'ood' inputs need an ood role dataset; none is set")
        for name, table in self.overrides.items():
            key = f"timing.overrides.{name}"
            known(DEFENSES, name, key)
            override_config(suite, name, table, file)
        if self.victims not in VICTIM_SOURCES:
            raise SuiteError(file, "timing.victims", f"expected one of {', '.join(VICTIM_SOURCES)}, got '{self.victims}'")
        for key, least in (("repeats", 1), ("warmup", 0), ("epochs", 0), ("batch_size", 1), ("train_subset", 1), ("test_subset", 1), ("threads", 1)):
            value = getattr(self, key)
            if value is not None and value < least:
                raise SuiteError(file, f"timing.{key}", f"expected an integer >= {least}, got {value}")


def override_config(suite: "Suite", name: str, table: Any, file: str) -> Any:
    """Defense ``name``'s config with ``[timing.overrides.<name>]`` over the suite's (or the default)."""
    from msbench.registry import DEFENSES
    from msbench.suite_checks import plugin_config

    key = f"timing.overrides.{name}"
    if not isinstance(table, dict):
        raise SuiteError(file, key, f"expected a table of {name}'s settings, got {table!r}")
    base = suite.defenses[name].config if name in suite.defenses else DEFENSES.get(name).Config()
    return plugin_config(DEFENSES, name, table, file, key, base=base)


def _register() -> None:
    # importlib, not ``from msbench import suite``: during suite.py's own import (it imports this
    # module at its end) the package attribute is not set yet, but sys.modules has the module.
    importlib.import_module("msbench.suite").EXTRA_SECTIONS.setdefault("timing", TimingOptions)


_register()


# -- the cost model (paper Table 4) ----------------------------------------------------------------
PAPER_COST: dict[str, tuple[str, str]] = {
    "vanilla": ("M_f", "M_f"),
    "ini": ("M_f", "M_f"),
    "oe": ("M_f", "M_f"),
    "mad": ("M_f + C M_b + S", "M_f + B(C M_b + S)"),
    "am": ("2 M_f", "2 M_f"),
    "edm": ("M_f + M_h", "n M_f + M_h"),
}
"""(single query, batch query) formulas of the paper's Table 4, for the official implementations."""

FAST_COST: dict[str, tuple[str, str]] = {
    "mad": ("2 M_f + S", "2 M_f + S"),  # closed-form Jacobian: victim and surrogate forwards, no backward
    "edm": ("M_f + M_h", "M_f + M_h"),  # each sample routed to its member only
    "am": ("(1 + r) M_f", "(1 + r) M_f"),  # the misinformation model runs on the share r of inputs the gate opens
}
"""The same for msbench's ``implementation = "fast"`` forms, where they change the formula."""


def defense_cost(defense: Any, batch_size: int) -> str:
    """One defense's formula: its ``cost_model`` attribute if it declares one, else the tables above.

    ``cost_model`` may be a string, a dict with ``single`` and ``batch`` strings, or a method
    ``cost_model(batch_size) -> str`` (the instance's config is at hand there).
    """
    declared = getattr(defense, "cost_model", None)
    if callable(declared):
        return str(declared(batch_size))
    if isinstance(declared, dict):
        return str(declared["batch" if batch_size > 1 else "single"])
    if isinstance(declared, str):
        return declared
    name = getattr(defense, "registered_name", "")
    fast = getattr(getattr(defense, "config", None), "implementation", None) == "fast"
    pair = (FAST_COST if fast and name in FAST_COST else PAPER_COST).get(name)
    return pair[batch_size > 1] if pair else "?"


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


# -- measuring ------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(predict: Callable[[torch.Tensor], Any], batch: Callable[[int], torch.Tensor], repeats: int, warmup: int,
               device: torch.device) -> float:
    """Seconds for ``repeats`` calls ``predict(batch(i))`` after ``warmup`` untimed calls.

    Inputs are made before the clock starts (``batch`` slices a pool already on the device), so
    only the deployed API is timed; CUDA work is awaited before reading the clock at both ends.
    """
    with torch.no_grad():
        for i in range(warmup):
            predict(batch(i))
        synchronize(device)
        started = time.perf_counter()
        for i in range(repeats):
            predict(batch(i))
        synchronize(device)
        return time.perf_counter() - started


def cycling(pool: torch.Tensor, batch_size: int) -> Callable[[int], torch.Tensor]:
    """Call ``i`` gets the ``i``-th consecutive ``batch_size`` slice of the pool, wrapping round.

    Slices are views, so no copy lands inside the timed loop; a pool smaller than one batch is
    tiled first. Distinct inputs matter for defenses whose cost depends on the input (AM's gate).
    """
    if len(pool) < batch_size:
        pool = pool.repeat((batch_size + len(pool) - 1) // len(pool), 1, 1, 1)
    count = len(pool) // batch_size
    return lambda i: pool[(i % count) * batch_size:(i % count + 1) * batch_size]


def input_pool(ws: "Workspace", dataset: str, kind: str, seed: int) -> torch.Tensor:
    """The images the timed calls cycle through, as floats in [0, 1] on the workspace's device."""
    if kind == "random":
        shape = ws.suite.spec(dataset).shape
        generator = torch.Generator().manual_seed(seed)
        return torch.rand((RANDOM_POOL, *shape), generator=generator).to(ws.device)
    data = ws.splits(dataset).test if kind == "id" else ws.role_data(dataset, "ood").subset(ws.suite.subset(dataset, "test"), seed)
    return data.floats(device=ws.device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


# -- the plan ----------------------------------------------------------------------------------------
@dataclass
class Plan:
    options: TimingOptions
    archs: list[str]
    dataset: str
    defenses: list[str]  # compositions, "vanilla" first
    seed: int


def timing_options(suite: "Suite") -> TimingOptions:
    return suite.extra.get("timing") or TimingOptions()


def make_plan(suite: "Suite") -> Plan:
    options = timing_options(suite)
    compositions = [c.lower() for c in (options.defenses or suite.matrix.defenses)]
    defenses = ["vanilla"] + [c for c in dict.fromkeys(compositions) if c != "vanilla"]
    return Plan(options, [a.lower() for a in (options.archs or suite.matrix.archs)],
                options.dataset or suite.matrix.datasets[0], defenses, suite.matrix.seeds[0])


def _with_settings(suite: "Suite", plan: Plan) -> "Suite":
    """The suite plus default settings for defenses only the timing stage uses."""
    from msbench.registry import DEFENSES
    from msbench.defenses.chain import resolve_chain
    from msbench.suite_schema import PluginSettings

    defenses = dict(suite.defenses)
    for composition in plan.defenses:
        for name in resolve_chain(composition):
            if name not in defenses:
                defenses[name] = PluginSettings(DEFENSES.get(name).Config(), suite.victim)
    matrix = dataclasses.replace(suite.matrix, datasets=[plan.dataset], archs=plan.archs, defenses=plan.defenses)
    return dataclasses.replace(suite, defenses=defenses, matrix=matrix)


def short_suite(suite: "Suite", plan: Plan) -> "Suite":
    """The derived suite that trains timing victims: every defense's recipe cut to ``epochs`` (and
    ``batch_size`` where set), its settings changed by ``[timing.overrides]``, training (and test)
    data cut to the ``[timing]`` subsets."""
    from msbench.suite import DatasetOptions, PluginSettings

    options = plan.options
    base = _with_settings(suite, plan)
    short = {"epochs": options.epochs, **({"batch_size": options.batch_size} if options.batch_size else {})}
    subsets = {"train_subset": options.train_subset or suite.subset(plan.dataset, "train"),
               "test_subset": options.test_subset or suite.subset(plan.dataset, "test")}
    datasets = dict(base.datasets)
    dataset_options = dataclasses.replace(datasets.get(plan.dataset, DatasetOptions()), **subsets)
    if dataset_options.victim:  # per-dataset recipe overrides must not undo the short recipe
        dataset_options = dataclasses.replace(dataset_options, victim={**dataset_options.victim, **short})
    datasets[plan.dataset] = dataset_options
    configs = {name.lower(): override_config(suite, name.lower(), table, str(suite.path)) for name, table in options.overrides.items()}
    defenses = {name: PluginSettings(configs.get(name, s.config), s.recipe.with_(**short)) for name, s in base.defenses.items()}
    return dataclasses.replace(base, name=f"{suite.name}-{TIMING_VICTIMS}", datasets=datasets, defenses=defenses,
                               run=dataclasses.replace(suite.run, **subsets), victim=suite.victim.with_(**short))


def plan_key(suite: "Suite", plan: Plan, device_label: str) -> str:
    """Hash of what determines a timing table: the settings, each timed victim's key, the device, torch."""
    from msbench.cells import digest, victim_key

    derived = {"suite": _with_settings(suite, plan), "timing": short_suite(suite, plan)}
    victims = {}
    for arch in plan.archs:
        source = derived["suite" if uses_suite_victims(suite, plan, arch) else "timing"]
        for composition in plan.defenses:
            victims[f"{arch}/{composition}"] = victim_key(source, plan.dataset, arch, source.chain(composition), plan.seed)
    settings = {"archs": plan.archs, "dataset": plan.dataset, "defenses": plan.defenses, **as_dict(plan.options)}
    return digest({"settings": settings, "victims": victims, "device": device_label, "torch": torch.__version__})


def uses_suite_victims(suite: "Suite", plan: Plan, arch: str) -> bool:
    if plan.options.victims == "auto":
        return arch in [a.lower() for a in suite.matrix.archs]
    return plan.options.victims == "suite"


def recipe_label(ws: "Workspace", dataset: str, chain: list[str], source: str) -> str:
    recipes = [ws.suite.victim_recipe(dataset, name) for name in chain]
    epochs = sorted({recipe.epochs for recipe in recipes})
    batches = sorted({recipe.batch_size for recipe in recipes})
    subset = ws.suite.subset(dataset, "train")
    return (f"{source}: epochs={'/'.join(map(str, epochs))}, batch_size={'/'.join(map(str, batches))}, "
            f"train_subset={subset if subset else 'all'}")


# -- the stage ---------------------------------------------------------------------------------------
def time_suite(suite: "str | Path | Suite", data_root: str | Path | None = None, out: str | Path | None = None,
               device: str | None = None, echo: Callable[[str], Any] = print, figure: bool = True,
               reuse: bool = False) -> pd.DataFrame:
    """Time every defense composition x arch x batch size x input kind; writes ``<run dir>/timing.csv``.

    The suite must have a ``[timing]`` section (else SuiteError, before any work): timing costs
    from seconds to hours depending on what is timed, so what to time is the suite's explicit choice.
    Returns the table (one row per measurement, ``slowdown`` relative to Vanilla of the same arch,
    batch size and input kind) and prints it with the cost model beside each measurement. With
    ``reuse`` (what ``run_suite`` asks), an existing table measured with the same settings, victims,
    device and torch version is returned instead of measuring again.
    """
    from msbench.data import MissingDataError, default_data_root, load_split
    from msbench.progress import progress
    from msbench.io import write_atomic
    from msbench.version import __version__
    from msbench.workspace import Workspace, resolve_device
    from msbench.suite import Suite, check_data, load_suite

    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    if "timing" not in suite.raw:
        raise SuiteError(str(suite.path), "", NO_TIMING)
    plan = make_plan(suite)
    options = plan.options
    root = Path(data_root) if data_root else default_data_root()
    run_dir = Path(out) if out else Path("runs") / suite.name
    dev = resolve_device(device or suite.run.device)
    full = _with_settings(suite, plan)
    check_data(dataclasses.replace(full, matrix=dataclasses.replace(full.matrix, attacks=[])), root)
    if "ood" in options.inputs:
        ood = suite.role(plan.dataset, "ood")
        try:
            load_split(suite.spec(ood), root, "train")
        except MissingDataError as missing:
            raise SuiteError(str(suite.path), "timing.inputs", f"{ood}: {missing}") from None

    device_label = device_name(dev)
    key = plan_key(suite, plan, device_label)
    table = run_dir / "timing.csv"
    if reuse and table.exists():
        previous = pd.read_csv(table)
        if len(previous) and "plan_key" in previous and (previous["plan_key"] == key).all():
            echo(f"{suite.name}: timing is up to date ({table})")
            return previous

    workspaces: dict[str, Workspace] = {}

    def workspace(arch: str) -> tuple[Workspace, str]:
        source = "suite" if uses_suite_victims(suite, plan, arch) else "timing"
        if source not in workspaces:
            if source == "suite":
                workspaces[source] = Workspace(full, root, run_dir, dev)
            else:
                derived = short_suite(suite, plan)
                write_atomic(run_dir / TIMING_VICTIMS / "suite.json", json.dumps(derived.resolved(), indent=1, default=str))
                workspaces[source] = Workspace(derived, root, run_dir / TIMING_VICTIMS, dev)
        return workspaces[source], source

    echo(f"{suite.name}: timing {len(plan.defenses)} defenses x {len(plan.archs)} archs x {len(options.batch_sizes)} batch sizes"
         f" x {len(options.inputs)} inputs, {options.repeats} calls each, on {dev}")
    rows: list[dict[str, Any]] = []
    stamp = {"seed": plan.seed, "device": device_label, "torch": torch.__version__, "msbench": __version__, "plan_key": key}
    total = len(plan.archs) * len(plan.defenses) * len(options.inputs) * len(options.batch_sizes)
    with progress(total=total, desc="timing", unit="measurement", leave=True) as bar:
        for arch in plan.archs:
            ws, source = workspace(arch)
            rows += measure_arch(ws, source, arch, plan, bar, stamp)
    frame = with_slowdown(pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "slowdown"]))
    write_atomic(table, frame.to_csv(index=False))
    if figure:
        _plot(frame, run_dir / "inference_time", echo)
    echo(timing_summary(frame))
    echo(f"timing table: {run_dir / 'timing.csv'}")
    return frame


def measure_arch(ws: "Workspace", source: str, arch: str, plan: Plan, bar: Any, stamp: dict[str, Any]) -> list[dict[str, Any]]:
    """Load (or train) one arch's victims, then time each on every input kind and batch size."""
    from msbench.registry import DEFENSES

    options = plan.options
    victims = {}
    for composition in plan.defenses:
        bar.set_description(f"victim {plan.dataset}/{arch}/{composition}")
        chain = ws.suite.chain(composition)
        try:
            module, info = ws.victims.get(plan.dataset, arch, chain, plan.seed)
        except Exception as failure:  # one defense that cannot be built must not cost the others' timings
            bar.write(f"timing: {arch}/{composition} skipped: {type(failure).__name__}: {failure}")
            continue
        victims[composition] = (module, info, chain, [DEFENSES.get(name)(ws.suite.defenses[name].config) for name in chain])
    rows = []
    threads = torch.get_num_threads()
    if options.threads:
        torch.set_num_threads(options.threads)
    try:
        for kind in options.inputs:
            pool = input_pool(ws, plan.dataset, kind, plan.seed)
            for batch_size in options.batch_sizes:
                batch = cycling(pool, batch_size)
                for composition, (module, info, chain, parts) in victims.items():
                    bar.set_description(f"time {arch}/{composition}/{kind}/B={batch_size}")
                    seconds = time_calls(module, batch, options.repeats, options.warmup, ws.device)
                    rows.append({
                        "defense": composition, "arch": arch, "dataset": plan.dataset, "input": kind,
                        "batch_size": batch_size, "repeats": options.repeats, "warmup": options.warmup,
                        "total_seconds": seconds, "ms_per_query": 1000 * seconds / options.repeats,
                        "ms_per_image": 1000 * seconds / (options.repeats * batch_size),
                        "cost_model": chain_cost(parts, batch_size),
                        "implementation": ",".join(f"{p.registered_name}={p.config.implementation}" for p in parts
                                                   if hasattr(p.config, "implementation")),
                        "victim_source": source, "victim_recipe": recipe_label(ws, plan.dataset, chain, source),
                        "victim_trained": all(ws.suite.victim_recipe(plan.dataset, name).epochs > 0 for name in chain),
                        "benign_acc": info.get("benign_acc"), "threads": torch.get_num_threads(), **stamp})
                    bar.update(1)
    finally:
        torch.set_num_threads(threads)
    return rows


def with_slowdown(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``slowdown``: total time over Vanilla's for the same arch, dataset, input and batch size."""
    keys = ["arch", "dataset", "input", "batch_size"]
    vanilla = frame.loc[frame["defense"] == "vanilla", keys + ["total_seconds"]].rename(columns={"total_seconds": "_vanilla"})
    merged = frame.merge(vanilla, on=keys, how="left", validate="many_to_one")
    merged["slowdown"] = merged["total_seconds"] / merged["_vanilla"]
    return merged[COLUMNS]


def _plot(frame: pd.DataFrame, stem: Path, echo: Callable[[str], Any]) -> None:
    try:
        from msbench.report.figures import plot_inference_time
    except ImportError:
        return
    plot_inference_time(frame, stem)
    echo(f"figure: {stem}.png, {stem}.pdf")


def timing_summary(frame: pd.DataFrame) -> str:
    """The console table: each measurement with the cost model beside it."""
    if frame.empty:
        return "(no timings)"
    shown = frame[["arch", "input", "batch_size", "defense", "total_seconds", "ms_per_query", "slowdown", "cost_model"]]
    return shown.to_string(index=False, float_format=lambda v: f"{v:.3f}")
