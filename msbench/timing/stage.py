"""The inference-cost stage: how much each defense slows the deployed API down (InI paper, Sec. 5.3).

Each defense composition's deployed victim is timed (``measure``) on a batch of inputs, and the
total is reported beside the undefended reference's (``slowdown``) and beside the cost model of
the defense (``cost``, the paper's Table 4). Victims are trained ones: AM's gate and EDM's routing
depend on the trained weights, so timing an untrained model would measure another cost. Which
victims, and how they are trained, is the ``plan``'s.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch

from msbench.config import SuiteError
from msbench.data import MissingDataError, default_data_root, load_split
from msbench.defenses import reference_defense
from msbench.io import write_atomic
from msbench.progress import progress
from msbench.registry import DEFENSES
from msbench.runner.suite import Suite, check_data, load_suite
from msbench.timing.cost import chain_cost
from msbench.timing.measure import cycling, device_name, input_pool, time_calls
from msbench.timing.plan import (TIMING_VICTIMS, Plan, make_plan, plan_key, recipe_label, short_suite,
                                 uses_suite_victims,
                                 with_settings)
from msbench.timing.summary import timing_summary
from msbench.version import __version__
from msbench.runner.workspace import Workspace, check_device, requested_device, resolve_device

NO_TIMING = ("no [timing] section, so nothing is chosen to time: add one naming the defenses, archs, batch sizes "
             "and repeats to measure (docs/performance.md; suites/quick.toml has one)")
COLUMNS = ["defense", "arch", "dataset", "input", "batch_size", "repeats", "warmup", "total_seconds", "ms_per_query",
           "ms_per_image", "slowdown", "cost_model", "implementation", "victim_source", "victim_recipe",
           "victim_trained",
           "benign_acc", "seed", "device", "threads", "torch", "msbench", "plan_key"]


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
    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    if "timing" not in suite.raw:
        raise SuiteError(str(suite.path), "", NO_TIMING)
    plan = make_plan(suite)
    options = plan.options
    root = Path(data_root) if data_root else default_data_root()
    run_dir = Path(out) if out else Path("runs") / suite.name
    device, asked_by = requested_device(device, suite)
    check_device(device, asked_by)
    dev = resolve_device(device)
    full = with_settings(suite, plan)
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
                write_atomic(run_dir / TIMING_VICTIMS / "suite.json",
                             json.dumps(derived.resolved(), indent=1, default=str))
                workspaces[source] = Workspace(derived, root, run_dir / TIMING_VICTIMS, dev)
        return workspaces[source], source

    echo(f"{suite.name}: timing {len(plan.defenses)} defenses x {len(plan.archs)} archs x {len(options.batch_sizes)} "
         f"batch sizes x {len(options.inputs)} inputs, {options.repeats} calls each, on {dev}")
    rows: list[dict[str, Any]] = []
    stamp = {"seed": plan.seed, "device": device_label, "torch": torch.__version__, "msbench": __version__,
             "plan_key": key}
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


def measure_arch(ws: "Workspace", source: str, arch: str, plan: Plan, bar: Any,
                 stamp: dict[str, Any]) -> list[dict[str, Any]]:
    """Load (or train) one arch's victims, then time each on every input kind and batch size."""
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
        victims[composition] = (module, info, chain,
                                [DEFENSES.get(name)(ws.suite.defenses[name].config) for name in chain])
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
    """Add ``slowdown``: total time over the reference's (Vanilla's) for the same arch, dataset, input
    and batch size."""
    keys = ["arch", "dataset", "input", "batch_size"]
    reference = frame.loc[frame["defense"] == reference_defense(),
                          keys + ["total_seconds"]].rename(columns={"total_seconds": "_reference"})
    merged = frame.merge(reference, on=keys, how="left", validate="many_to_one")
    merged["slowdown"] = merged["total_seconds"] / merged["_reference"]
    return merged[COLUMNS]


def _plot(frame: pd.DataFrame, stem: Path, echo: Callable[[str], Any]) -> None:
    try:
        from msbench.report.figures import plot_inference_time
    except ImportError:
        return
    plot_inference_time(frame, stem)
    echo(f"figure: {stem}.png, {stem}.pdf")


__all__ = ["NO_TIMING", "COLUMNS", "time_suite", "measure_arch", "with_slowdown"]
