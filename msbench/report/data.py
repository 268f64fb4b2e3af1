"""A report's input: the tables of one or more run directories, combined with care.

The report reads only what a run wrote to disk (``results.csv``, ``curves.csv``, ``timing.csv``,
``suite.json``), so it renders the same from a finished run, a run copied from a cluster, or
several runs combined (e.g. one run per dataset). Combining merges only cells run with identical
settings (see ``load_runs``); the suite's matrix says which cells are still pending.

How a defense or attack is shown (label, colour, paper order) is declared by its plugin class
(``label``, ``color``, ``paper_order``) and read from the registry by name; a name no installed
plugin declares (a third-party plugin not imported here) shows as its registry name.
"""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from scipy import stats

from msbench.cells import digest
from msbench.defenses import OutputDefense
from msbench.registry import ATTACKS, DEFENSES, Registry
from msbench.results import CURVE_COLUMNS, RESULT_COLUMNS

TIMING_COLUMNS = ["defense", "arch", "dataset", "input", "batch_size", "repeats", "total_seconds", "ms_per_query",
                  "slowdown", "cost_model", "device", "torch"]

REFERENCE = "vanilla"
"""The undefended victim: the reference row every defense's benign accuracy is compared with."""
DEFAULT_TOLERANCE = 1.0
"""Points of benign accuracy a defense may lose against Vanilla and still be called best, when no
suite sets ``run.match_benign`` (the quick and full suites set 1.0)."""
PENDING = "pending"
"""Status of a planned cell (suite.json's matrix) that no record holds yet."""
VARIANT = "@"
"""``vanilla@runA``: a defense kept apart by run because two runs ran it with different settings."""
KEY = ["dataset", "arch", "defense", "attack", "label_mode"]
"""One experiment; its seeds are its repetitions."""

_DATASET_LABELS = {"mnist": "MNIST", "fashionmnist": "FashionMNIST", "kmnist": "KMNIST", "cifar10": "CIFAR-10",
                   "cifar100": "CIFAR-100", "svhn": "SVHN", "tinyimagenet": "TinyImageNet", "emnist": "EMNIST",
                   "emnist-letters": "EMNIST-letters"}
_MODE_LABELS = {"soft": "soft-label", "hard": "hard-label"}


def _plugin(registry: Registry, name: str):
    """The registered class, or None for a name no imported plugin declares."""
    try:
        return registry.get(name) if name in registry else None
    except Exception:  # a broken third-party entry point must not stop a report
        return None


def split_variant(name: str) -> tuple[str, str]:
    """``vanilla@runA`` -> (``vanilla``, ``runA``); a plain name -> (name, "")."""
    base, _, run = str(name).partition(VARIANT)
    return base, run


def _part_label(part: str) -> str:
    plugin = _plugin(DEFENSES, part)
    return (plugin.label if plugin else "") or part


def defense_label(name: str) -> str:
    """``ini+mad`` -> ``InI + MAD`` (each plugin's ``label``); ``vanilla@runA`` -> ``Vanilla (runA)``."""
    base, run = split_variant(name)
    label = " + ".join(_part_label(part) for part in base.split("+"))
    return f"{label} ({run})" if run else label


def dataset_label(name: str) -> str:
    return _DATASET_LABELS.get(str(name), str(name))


def attack_label(name: str) -> str:
    plugin = _plugin(ATTACKS, str(name))
    return (plugin.label if plugin else "") or str(name)


def mode_label(name: str) -> str:
    return _MODE_LABELS.get(str(name), str(name))


def paper_rank(name: str) -> tuple[int, ...] | None:
    """Paper position of a defense: each link's ``paper_order`` (``ini+mad`` -> (4, 1)); None unless every link has one."""
    plugins = [_plugin(DEFENSES, part) for part in split_variant(name)[0].split("+")]
    ranks = [plugin.paper_order if plugin else None for plugin in plugins]
    return None if any(r is None for r in ranks) else tuple(ranks)


def is_paper_defense(name: str) -> bool:
    return paper_rank(name) is not None


def order_defenses(names) -> list[str]:
    """Paper order first (Vanilla, MAD, AM, EDM, InI, InI + MAD, InI + AM), then the rest sorted by name."""
    present = list(dict.fromkeys(str(n) for n in names if not (isinstance(n, float) and pd.isna(n))))

    def key(name: str):
        rank = paper_rank(name)
        return (0, rank, "", name) if rank is not None else (1, (), split_variant(name)[0], name)

    return sorted(present, key=key)


def order_attacks(names) -> list[str]:
    """Attacks with a ``paper_order`` first in that order, then the rest in the order given (the suite's)."""
    present = list(dict.fromkeys(str(n) for n in names if not (isinstance(n, float) and pd.isna(n))))
    plugins = {n: _plugin(ATTACKS, n) for n in present}
    rank = {n: plugin.paper_order if plugin else None for n, plugin in plugins.items()}
    return sorted(present, key=lambda n: (rank[n] is None, rank[n] if rank[n] is not None else present.index(n)))


def is_pool_attack(name: str) -> bool:
    """An attack that queries a pool of natural images (it uses the ``surrogate`` role), e.g. KnockoffNets.

    Its hard-label mode receives only the top-1 class: no defense that keeps every answer's argmax
    can change what it learns from, so its clone accuracy is a bound such defenses cannot push down.
    """
    plugin = _plugin(ATTACKS, str(name))
    return plugin is not None and "surrogate" in plugin.roles


def in_order(values) -> list:
    """Unique values in order of first appearance (the suites' matrix order survives the CSV)."""
    return list(dict.fromkeys(v for v in values if not (isinstance(v, float) and pd.isna(v))))


def ci95(values) -> float:
    """Half-width of the 95% confidence interval of the mean (Student t, n - 1 degrees of freedom); NaN below 2 values."""
    values = pd.Series(values, dtype=float).dropna()
    n = len(values)
    if n < 2:
        return float("nan")
    return float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n))


@dataclass
class Progress:
    """How far the runs got: cells of the suites' matrices, and how many of each status."""

    planned: int
    finished: int
    failed: int
    pending: int
    known: bool  # False when no suite.json holds a matrix (planned = what the tables hold)

    @property
    def partial(self) -> bool:
        return self.pending > 0

    def sentence(self) -> str:
        if not self.partial:
            return f"{self.planned} cells: {self.finished} finished, {self.failed} failed."
        return (f"Partial run: {self.planned} cells planned, {self.finished} finished, {self.failed} failed, "
                f"{self.pending} pending.")


@dataclass
class RunTables:
    """The combined tables of the runs a report covers; empty frames where a table is absent.

    ``results`` holds one row per planned cell: ``status`` is ``ok``, ``failed`` or ``pending``
    (planned in a suite.json matrix, no record yet).
    """

    run_dirs: list[Path]
    results: pd.DataFrame
    curves: pd.DataFrame
    timing: pd.DataFrame
    suites: list[dict[str, Any]] = field(default_factory=list)  # suite.json per run directory ({} if absent)
    kept_apart: list[str] = field(default_factory=list)  # one line per defense kept apart by run, and why
    sweep: pd.DataFrame = field(default_factory=pd.DataFrame)  # trade-off sweep cells (``setting`` set), kept out of ``results``

    @property
    def name(self) -> str:
        """The suites' names joined by ``+`` (run folder names where suite.json is missing)."""
        names = [s.get("name") or d.name for s, d in zip(self.suites, self.run_dirs)]
        return "+".join(dict.fromkeys(names)) or "report"

    @property
    def ok(self) -> pd.DataFrame:
        return self.results[self.results["status"] == "ok"]

    @property
    def failed(self) -> pd.DataFrame:
        return self.results[~self.results["status"].isin(["ok", PENDING])]

    @property
    def pending(self) -> pd.DataFrame:
        return self.results[self.results["status"] == PENDING]

    @property
    def recorded(self) -> pd.DataFrame:
        """The cells some record holds (finished or failed), without the pending ones."""
        return self.results[self.results["status"] != PENDING]

    @property
    def tolerance(self) -> float:
        """Points of benign accuracy below Vanilla's within which a defense may be called best: the
        strictest ``run.match_benign`` of the suites, else ``DEFAULT_TOLERANCE``."""
        values = [float(s["run"]["match_benign"]) for s in self.suites
                  if isinstance(s.get("run"), dict) and s["run"].get("match_benign") is not None]
        return min(values) if values else DEFAULT_TOLERANCE

    @property
    def progress(self) -> Progress:
        results = self.results
        known = any(isinstance(s.get("matrix"), dict) for s in self.suites)
        if results.empty:
            return Progress(0, 0, 0, 0, known)
        return Progress(len(results), int((results["status"] == "ok").sum()), len(self.failed), len(self.pending), known)

    def defenses(self) -> list[str]:
        """Every defense of any table, in report order: the key of the fixed colour per defense."""
        swept = list(self.sweep["defense"]) if "defense" in self.sweep else []
        return order_defenses(list(self.results["defense"]) + list(self.curves["defense"]) + list(self.timing["defense"]) + swept)


def _read_csv(path: Path, columns: list[str]) -> pd.DataFrame | None:
    if not path.exists():
        return None
    frame = pd.read_csv(path, keep_default_na=True)
    for column in columns:  # tolerate tables written by older or newer versions
        if column not in frame.columns:
            frame[column] = pd.NA
    return frame


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)


def _chain(defense: str) -> list[str]:
    """``mad`` -> [vanilla, mad] (an output defense over its default base), ``ini+mad`` -> [ini, mad]."""
    parts = str(defense).split("+")
    first = _plugin(DEFENSES, parts[0])
    if first is not None and issubclass(first, OutputDefense):
        parts = [first.default_base] + parts
    return parts


def settings_id(suite: dict[str, Any], dataset: str, arch: str, defense: str, attack: str) -> str | None:
    """Hash of the settings behind one experiment (everything of suite.json a cell depends on except its
    seed and label mode): data subsets and roles, each defense link's config and recipe, the attack's.
    None when the run has no suite.json to tell."""
    if not suite.get("matrix"):
        return None
    datasets = suite.get("datasets") or {}
    entry = datasets.get(dataset) or {}
    roles = {role: entry.get(role) for role in ("ood", "hash", "surrogate")}
    run = {k: v for k, v in (suite.get("run") or {}).items() if k != "device"}
    return digest({"run": run, "dataset": entry, "roles": {r: datasets.get(n) for r, n in roles.items() if n},
                   "arch": arch, "defenses": [(n, (suite.get("defenses") or {}).get(n)) for n in _chain(defense)],
                   "attack": (suite.get("attacks") or {}).get(attack)})


def planned_cells(suite: dict[str, Any]) -> pd.DataFrame:
    """The cells of a suite.json's matrix (dataset, arch, defense, attack, label mode, seed), as the runner expands them."""
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
    for (dataset, arch, defense), group in results.assign(ident=ident).groupby(["dataset", "arch", "defense"], sort=False):
        clash = group.groupby(["attack", "label_mode"])["ident"].nunique()
        if clash.max() < 2:
            continue
        runs = in_order(group["run"])
        shown = [names[r] for r in runs]
        if len(set(shown)) < len(shown):
            raise ValueError(f"cannot combine runs {', '.join(runs)}: {dataset}/{arch}/{defense} was run with different "
                             f"settings in runs of the same name ({shown[0]}); rename a run directory or report them apart")
        attack, mode = clash[clash >= 2].index[0]
        reasons.append(f"{defense_label(defense)} on {dataset_label(dataset)} ({arch}) differs in settings between runs "
                       f"{', '.join(shown)} (e.g. {attack_label(attack)} {mode_label(mode)}); shown apart by run name")
        renamed |= {(r, dataset, arch, defense) for r in runs}
    if renamed:
        def rename(row):
            return f"{row['defense']}{VARIANT}{names[row['run']]}" if (row["run"], row["dataset"], row["arch"], row["defense"]) in renamed else row["defense"]
        results = results.assign(defense=results.apply(rename, axis=1))
    return results, renamed, reasons


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
    """
    dirs = [Path(run_dirs)] if isinstance(run_dirs, (str, Path)) else [Path(d) for d in run_dirs]
    if not dirs:
        raise ValueError("render_report needs at least one run directory")
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
                    frame["settings"] = [settings_id(suite, *key) for key in zip(frame["dataset"], frame["arch"], frame["defense"], frame["attack"])]
                    planned = planned_cells(suite)
                    if not planned.empty:
                        frame = pd.concat([frame, planned.assign(status=PENDING, run=run, error="",
                                                                 settings=[settings_id(suite, *k) for k in zip(planned["dataset"], planned["arch"], planned["defense"], planned["attack"])])],
                                          ignore_index=True)
                sink.append(frame)
        if not found:
            raise FileNotFoundError(f"{run_dir}: none of results.csv, curves.csv, timing.csv is there (is it a run directory?)")
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
                                      for r, ds, a, d in zip(curve_frame["run"], curve_frame["dataset"], curve_frame["arch"], curve_frame["defense"])]
        curve_frame = curve_frame.drop_duplicates(CURVE_COLUMNS[:7], keep="last")
    return RunTables(dirs, result_frame.reset_index(drop=True), curve_frame.reset_index(drop=True),
                     _concat(timing, TIMING_COLUMNS + ["run"]), suites, reasons, sweep_frame.reset_index(drop=True))


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Per experiment (dataset, arch, defense, attack, label mode): mean, sample std and 95% CI
    half-width (Student t) over the seeds that finished, and how many seeds finished, failed, pend.

    Rows whose every seed failed or pends keep ``n_ok = 0`` and NaN means, so tables can say so.
    """
    columns = KEY + ["clone_mean", "clone_std", "clone_ci", "rel_mean", "rel_std", "rel_ci", "benign_mean", "benign_std",
                     "benign_ci", "fidelity_mean", "queries", "budget", "n_ok", "n_failed", "n_pending"]
    if results.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for key, group in results.groupby(KEY, sort=False, dropna=False):
        ok = group[group["status"] == "ok"]
        pending = int((group["status"] == PENDING).sum())
        rows.append({**dict(zip(KEY, key)),
                     "clone_mean": ok["clone_acc"].mean(), "clone_std": ok["clone_acc"].std(ddof=1), "clone_ci": ci95(ok["clone_acc"]),
                     "rel_mean": ok["relative_perf"].mean(), "rel_std": ok["relative_perf"].std(ddof=1), "rel_ci": ci95(ok["relative_perf"]),
                     "benign_mean": ok["benign_acc"].mean(), "benign_std": ok["benign_acc"].std(ddof=1), "benign_ci": ci95(ok["benign_acc"]),
                     "fidelity_mean": ok["fidelity"].mean(), "queries": pd.to_numeric(ok["queries"], errors="coerce").mean(),
                     "budget": pd.to_numeric(group["budget"], errors="coerce").max(),
                     "n_ok": len(ok), "n_failed": len(group) - len(ok) - pending, "n_pending": pending})
    return pd.DataFrame(rows, columns=columns)


def benign_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Benign accuracy per victim (dataset, arch, defense): one value per seed, then mean, std and 95% CI.

    Every cell of a victim repeats its benign accuracy, so each (dataset, arch, defense, seed) counts once.
    ``n_pending`` counts seeds with no finished cell yet but some cell pending.
    """
    columns = ["dataset", "arch", "defense", "benign_mean", "benign_std", "benign_ci", "n", "n_pending"]
    if results.empty:
        return pd.DataFrame(columns=columns)
    ok = results[(results["status"] == "ok") & results["benign_acc"].notna()]
    per_seed = ok.drop_duplicates(["dataset", "arch", "defense", "seed"])
    rows = []
    for (dataset, arch, defense), group in results.groupby(["dataset", "arch", "defense"], sort=False):
        values = per_seed[(per_seed["dataset"] == dataset) & (per_seed["arch"] == arch) & (per_seed["defense"] == defense)]
        pending = set(group.loc[group["status"] == PENDING, "seed"]) - set(values["seed"])
        rows.append({"dataset": dataset, "arch": arch, "defense": defense, "benign_mean": values["benign_acc"].mean(),
                     "benign_std": values["benign_acc"].std(ddof=1), "benign_ci": ci95(values["benign_acc"]),
                     "n": len(values), "n_pending": len(pending)})
    return pd.DataFrame(rows, columns=columns)


def reference_of(defense: str) -> str:
    """The Vanilla row a defense is compared with: ``vanilla@run`` for a defense kept apart by run."""
    _, run = split_variant(defense)
    return f"{REFERENCE}{VARIANT}{run}" if run else REFERENCE


def benign_check(results: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """Per victim (dataset, arch, defense): its benign accuracy against Vanilla's on the same dataset and arch.

    ``within`` is True when the mean benign accuracy is at most ``tolerance`` points below Vanilla's
    (only such defenses may be called best); False marks a victim whose benign accuracy dropped
    further (``collapsed`` in the tables and figures); NaN (None) when either side is unknown.
    ``reference`` marks Vanilla itself.
    """
    summary = benign_summary(results)
    columns = ["dataset", "arch", "defense", "benign_mean", "reference_mean", "drop", "within", "reference"]
    if summary.empty:
        return pd.DataFrame(columns=columns)
    means = {(r.dataset, r.arch, r.defense): r.benign_mean for r in summary.itertuples()}
    rows = []
    for r in summary.itertuples():
        is_reference = split_variant(r.defense)[0] == REFERENCE
        ref = means.get((r.dataset, r.arch, reference_of(r.defense)), float("nan"))
        drop = ref - r.benign_mean if _finite(ref) and _finite(r.benign_mean) else float("nan")
        within = None if is_reference or not _finite(drop) else bool(drop <= tolerance + 1e-9)
        rows.append({"dataset": r.dataset, "arch": r.arch, "defense": r.defense, "benign_mean": r.benign_mean,
                     "reference_mean": ref, "drop": drop, "within": within, "reference": is_reference})
    return pd.DataFrame(rows, columns=columns)


def collapsed_victims(results: pd.DataFrame, tolerance: float) -> set[tuple[str, str, str]]:
    """(dataset, arch, defense) of every victim whose benign accuracy is more than ``tolerance`` below Vanilla's."""
    check = benign_check(results, tolerance)
    return {(r.dataset, r.arch, r.defense) for r in check.itertuples() if r.within is False}


def _finite(value) -> bool:
    try:
        return value is not None and not pd.isna(value) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
