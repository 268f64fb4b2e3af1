"""Reading run directories into one report input, combined with care.

The report reads only what a run wrote to disk (``results.csv``, ``curves.csv``, ``timing.csv``,
``suite.json``), so it renders the same from a finished run, a run copied from a cluster, or
several runs combined (e.g. one run per dataset). Combining merges only cells run with identical
settings (see ``load_runs``); the suite's matrix says which cells are still pending.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pandas as pd

from msbench.runner.cells import digest
from msbench.plugin_modules import import_plugins
from msbench.registry import ATTACKS, DEFENSES, Registry
from msbench.report.labels import (VARIANT, attack_label, dataset_label, defense_label, in_order, is_reference,
                                   mode_label, order_defenses, plugin_class, recorded_presentation, shown,
                                   use_recorded)
from msbench.report.runs import KEY, PENDING, TIMING_COLUMNS, RunTables
from msbench.report.table_check import DTYPES, check_numbers, read_table
from msbench.report.headline import verdict_sentences
from msbench.report.verdict import per_attack, worst_case
from msbench.runner.results import _TEXT, CURVE_COLUMNS, CURVE_DTYPES, RESULT_COLUMNS, RESULT_DTYPES, typed


def _read_csv(path: Path, columns: list[str]) -> pd.DataFrame | None:
    """A run's table as written (None when absent); a number column holding text is an InputError."""
    if not path.exists():
        return None
    frame = read_table(path, keep_default_na=True)
    check_numbers(frame, path, DTYPES[path.stem])
    for column in columns:  # tolerate tables written by older or newer versions
        if column not in frame.columns:
            frame[column] = pd.NA
    return frame


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)


def _chain(defense: str, suite: dict[str, Any] | None = None) -> list[str]:
    """``mad`` -> [vanilla, mad] (an output defense over its default base, as ``suite`` recorded it, else
    as the installed plugin declares it), ``ini+mad`` -> [ini, mad]."""
    parts = str(defense).split("+")
    recorded = (suite or {}).get("presentation")
    entry = shown("defenses", parts[0], recorded if isinstance(recorded, dict) else {})
    base = entry.get("default_base") if entry is not None else None
    return [base] + parts if base else parts


FORMER_DEFAULTS = {"run": {"precision": "fp32", "channels_last": False}, "dataset": {"union": None}}
"""Suite settings added after runs were recorded, with the value those runs used: a suite.json written
before a setting existed lacks it, so a setting at that value is left out of the settings id."""


def _without_former_defaults(section: str, entry: dict[str, Any]) -> dict[str, Any]:
    former = FORMER_DEFAULTS[section]
    return {k: v for k, v in entry.items() if not (k in former and v == former[k])}


def as_recorded(registry: Registry, name: str, entry: Any) -> Any:
    """A plugin's suite.json entry with each Config field it lacks that the plugin declares in
    ``former_defaults`` filled in with the value runs computed with before the field existed, so a run
    recorded then has the settings id of a run that sets that value today."""
    plugin = plugin_class(registry, name)
    former = getattr(plugin, "former_defaults", None) or {}
    if not former or not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
        return entry
    return {**entry, "config": {**former, **entry["config"]}}


def settings_id(suite: dict[str, Any], dataset: str, arch: str, defense: str, attack: str) -> str | None:
    """Hash of the settings behind one experiment (everything of suite.json a cell depends on except its
    seed and label mode): data subsets and roles, each defense link's config and recipe, the attack's.
    None when the run has no suite.json to tell."""
    if not suite.get("matrix"):
        return None
    datasets = {name: _without_former_defaults("dataset", entry) if isinstance(entry, dict) else entry
                for name, entry in (suite.get("datasets") or {}).items()}
    entry = datasets.get(dataset) or {}
    roles = {role: entry.get(role) for role in ("ood", "hash", "surrogate")}
    run = _without_former_defaults("run", {k: v for k, v in (suite.get("run") or {}).items() if k != "device"})
    return digest({"run": run, "dataset": entry, "roles": {r: datasets.get(n) for r, n in roles.items() if n},
                   "arch": arch,
                   "defenses": [(n, as_recorded(DEFENSES, n, (suite.get("defenses") or {}).get(n)))
                                for n in _chain(defense, suite)],
                   "attack": as_recorded(ATTACKS, attack, (suite.get("attacks") or {}).get(attack))})


def planned_cells(suite: dict[str, Any]) -> pd.DataFrame:
    """The cells of a suite.json's matrix (dataset, arch, defense, attack, label mode, seed), as the
    runner expands them."""
    m = suite.get("matrix") or {}
    axes = [m.get(k) or [] for k in ("datasets", "archs", "defenses", "attacks", "label_modes", "seeds")]
    rows = [(d, a, str(f).lower(), str(k).lower(), mode, int(s)) for d, a, f, k, mode, s in itertools.product(*axes)]
    return pd.DataFrame(rows, columns=KEY + ["seed"])


def _keep_apart(results: pd.DataFrame, names: dict[str, str]) -> tuple[pd.DataFrame, set, list[str]]:
    """Rename the defense of every victim (dataset, arch, defense) whose experiments differ in settings
    between runs to ``defense@run``; returns the frame, the renamed (run, dataset, arch, defense) and reasons."""
    renamed: set[tuple[str, str, str, str]] = set()
    reasons: list[str] = []
    if results.empty or results["run"].nunique() < 2:
        return results, renamed, reasons
    ident = results["settings"].where(results["settings"].notna(), "unknown:" + results["run"].astype(str))
    for (dataset, arch, defense), group in results.assign(ident=ident).groupby(
            ["dataset", "arch", "defense"], sort=False):
        clash = group.groupby(["attack", "label_mode"])["ident"].nunique()
        if clash.max() < 2:
            continue
        runs = in_order(group["run"])
        shown = [names[r] for r in runs]
        if len(set(shown)) < len(shown):
            raise ValueError(f"cannot combine runs {', '.join(runs)}: {dataset}/{arch}/{defense} was run with "
                             f"different settings in runs of the same name ({shown[0]}); rename a run directory or "
                             f"report them apart")
        attack, mode = clash[clash >= 2].index[0]
        reasons.append(f"{defense_label(defense)} on {dataset_label(dataset)} ({arch}) differs in settings between "
                       f"runs {', '.join(shown)} (e.g. {attack_label(attack)} {mode_label(mode)}); shown apart by run "
                       f"name")
        renamed |= {(r, dataset, arch, defense) for r in runs}
    # a defense is judged against its own run's Vanilla: where that Vanilla is kept apart, so is
    # every defense of the run on that dataset and arch (else it would have no reference at all)
    references = {(r, dataset, arch) for r, dataset, arch, defense in renamed if is_reference(defense)}
    for run, dataset, arch in sorted(references):
        others = set(results.loc[(results["run"] == run) & (results["dataset"] == dataset) & (results["arch"] == arch),
                                 "defense"])
        followers = {d for d in others if (run, dataset, arch, d) not in renamed}
        if followers:
            reasons.append(f"{', '.join(defense_label(d) for d in order_defenses(followers))} on "
                           f"{dataset_label(dataset)} ({arch}) compared with the Vanilla of run {names[run]}, shown "
                           f"with its name")
            renamed |= {(run, dataset, arch, d) for d in followers}
    if renamed:
        def rename(row):
            return f"{row['defense']}{VARIANT}{names[row['run']]}" if (row["run"], row["dataset"], row["arch"],
                                                                       row["defense"]) in renamed else row["defense"]
        results = results.assign(defense=results.apply(rename, axis=1))
    return results, renamed, reasons


def _import_recorded_plugins(suite: dict[str, Any]) -> None:
    """Import the plugin modules a run recorded (``plugins``, looked for beside its suite file first), so
    their labels, colours and order show; one that cannot be imported here leaves its raw names."""
    modules = [m for m in suite.get("plugins") or [] if isinstance(m, str)]
    if not modules:
        return
    folder = Path(suite["file"]).parent if isinstance(suite.get("file"), str) else None
    for module in modules:
        try:
            import_plugins([module], folder if folder is not None and folder.is_dir() else None)
        except Exception:  # a report must render without the plugin; names stand in for labels
            continue


def load_runs(run_dirs: list[Path] | Path) -> RunTables:
    """Read and combine the tables of ``run_dirs``.

    - A cell present in several runs (same ``cell_id``) is kept once, from the last run named, so a
      re-run listed after the original supersedes it; so is one (experiment, seed) run again with
      the same settings.
    - Seeds are averaged only across cells of identical settings: a victim whose experiments differ
      in settings between runs (suite.json: data, defense links, attack) is kept apart, its defense
      named ``defense@run`` and shown ``Defense (run)``. Runs of the same name that would need this
      are refused with a one-line ValueError.
    - Cells planned by a suite.json matrix without a record are added with status ``pending``.
    - Labels, colours and order are what the runs recorded (suite.json's ``presentation``, a later run's
      entry winning): installed for the labels of ``msbench.report.labels`` (``use_recorded``) in place of
      the previous report's, and kept in ``RunTables.presentation``.
    """
    dirs = [Path(run_dirs)] if isinstance(run_dirs, (str, Path)) else [Path(d) for d in run_dirs]
    if not dirs:
        raise ValueError("render_report needs at least one run directory")
    use_recorded(None)  # nothing of an earlier report's runs shows in this one
    results, curves, timing, suites, names = [], [], [], [], {}
    for index, run_dir in enumerate(dirs):
        if not run_dir.is_dir():
            raise FileNotFoundError(f"{run_dir}: no such run directory")
        suite_path = run_dir / "suite.json"
        try:
            suite = json.loads(suite_path.read_text()) if suite_path.exists() else {}
        except ValueError as bad:
            raise ValueError(f"{suite_path}: not valid JSON ({bad})") from None
        suites.append(suite)
        _import_recorded_plugins(suite)
        run = str(index)  # runs are told apart by position; names are for people
        names[run] = run_dir.name
        found = False
        for name, columns, sink in (("results", RESULT_COLUMNS, results), ("curves", CURVE_COLUMNS, curves),
                                    ("timing", TIMING_COLUMNS, timing)):
            frame = _read_csv(run_dir / f"{name}.csv", columns)
            if frame is not None:
                found = True
                frame = frame.assign(run=run)
                if name == "results":
                    frame["settings"] = [settings_id(suite, *key) for key in zip(frame["dataset"], frame["arch"],
                                                                                 frame["defense"], frame["attack"])]
                    planned = planned_cells(suite)
                    if not planned.empty:
                        frame = pd.concat([frame, planned.assign(status=PENDING, run=run, error="",
                                                                 settings=[settings_id(suite, *k) for k in zip(
                                                                     planned["dataset"], planned["arch"],
                                                                     planned["defense"], planned["attack"])])],
                                          ignore_index=True)
                sink.append(frame)
        if not found:
            raise FileNotFoundError(f"{run_dir}: none of results.csv, curves.csv, timing.csv is there "
                                    f"(is it a run directory?)")
    presentation = recorded_presentation(suites)
    use_recorded(presentation)
    result_frame = _concat(results, RESULT_COLUMNS + ["run", "settings"])
    renamed: set = set()
    reasons: list[str] = []
    if not result_frame.empty:
        result_frame["status"] = result_frame["status"].fillna("failed")
        result_frame["error"] = result_frame["error"].astype(object).fillna("")
        result_frame["seed"] = pd.to_numeric(result_frame["seed"], errors="coerce").astype("Int64")
        recorded = result_frame[result_frame["status"] != PENDING]
        if recorded["cell_id"].notna().all():
            recorded = recorded.drop_duplicates("cell_id", keep="last")
        result_frame = pd.concat([recorded, result_frame[result_frame["status"] == PENDING]], ignore_index=True)
    # trade-off sweep cells (``setting`` set) are extra cells of one experiment: kept out of ``results``
    swept = result_frame["setting"].notna() if "setting" in result_frame else pd.Series(False, index=result_frame.index)
    sweep_frame, result_frame = result_frame[swept], result_frame[~swept]
    if not result_frame.empty:
        result_frame, renamed, reasons = _keep_apart(result_frame, names)
        # one row per (experiment, seed): a record beats a pending plan; a later run beats an earlier one
        result_frame = result_frame.assign(_recorded=result_frame["status"] != PENDING, _order=range(len(result_frame)))
        result_frame = (result_frame.sort_values(["_recorded", "_order"], kind="stable")
                        .drop_duplicates(KEY + ["seed"], keep="last").sort_values("_order", kind="stable")
                        .drop(columns=["_recorded", "_order"]))
    curve_frame = _concat(curves, CURVE_COLUMNS + ["run"])
    if not curve_frame.empty:
        if renamed:
            curve_frame["defense"] = [f"{d}{VARIANT}{names[r]}" if (r, ds, a, d) in renamed else d
                                      for r, ds, a,
                                      d in zip(curve_frame["run"], curve_frame["dataset"], curve_frame["arch"],
                                               curve_frame["defense"])]
        curve_frame = curve_frame.drop_duplicates(CURVE_COLUMNS[:7], keep="last")
    return RunTables(dirs, result_frame.reset_index(drop=True), curve_frame.reset_index(drop=True),
                     _concat(timing, TIMING_COLUMNS + ["run"]), suites, reasons, sweep_frame.reset_index(drop=True),
                     presentation)


def load_results(run_dir: str | Path | list, table: str = "results") -> pd.DataFrame:
    """A run's table (``results``, ``curves`` or ``timing``) as a DataFrame, or one the report computes
    from the tables (several run directories are combined):

    - ``worst_case``: the verdict, per defense x dataset x arch the strongest attack setting with its
      ``n``, ``ci_low``, ``ci_high``, rank (ties shared) and difference from Vanilla
      (``msbench.report.verdict.worst_case``);
    - ``per_attack``: every clone-accuracy table cell with its ``n``, ``ci_low``, ``ci_high``, rank and
      bold within its column, and whether the attack setting is uninformative (``verdict.per_attack``);
    - ``verdict``: the report's opening sentences, one row each (``headline.verdict_sentences``).
    """
    if table == "worst_case":
        return worst_case(load_runs(run_dir))
    if table == "per_attack":
        return per_attack(load_runs(run_dir))
    if table == "verdict":
        return pd.DataFrame({"sentence": verdict_sentences(load_runs(run_dir))})
    path = Path(run_dir) / f"{table}.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such table (has the suite been run with --out {run_dir}?)")
    dtypes = {"results": RESULT_DTYPES, "curves": CURVE_DTYPES}.get(table)
    if dtypes is None:
        frame = read_table(path)
        check_numbers(frame, path, DTYPES.get(table, {}))
        return frame
    frame = read_table(path, dtype={c: "object" for c, t in dtypes.items() if t == _TEXT}, keep_default_na=False,
                       na_values={c: [""] for c, t in dtypes.items() if t != _TEXT})
    check_numbers(frame, path, dtypes)
    return typed(frame.reindex(columns=list(dtypes)), dtypes)
