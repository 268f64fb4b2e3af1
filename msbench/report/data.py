"""A report's input: the tables of one or more run directories, concatenated.

The report reads only what a run wrote to disk (``results.csv``, ``curves.csv``, ``timing.csv``,
``suite.json``), so it renders the same from a finished run, a run copied from a cluster, or
several runs combined (e.g. one run per dataset).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from msbench.results import CURVE_COLUMNS, RESULT_COLUMNS

TIMING_COLUMNS = ["defense", "arch", "dataset", "input", "batch_size", "repeats", "total_seconds", "ms_per_query",
                  "slowdown", "cost_model", "device", "torch"]

PAPER_DEFENSES = ["vanilla", "mad", "am", "edm", "ini", "ini+mad", "ini+am"]
"""The InI paper's defenses in its table order; any other defense follows them alphabetically."""

_DEFENSE_LABELS = {"vanilla": "Vanilla", "mad": "MAD", "am": "AM", "edm": "EDM", "ini": "InI"}
_DATASET_LABELS = {"mnist": "MNIST", "fashionmnist": "FashionMNIST", "kmnist": "KMNIST", "cifar10": "CIFAR-10",
                   "cifar100": "CIFAR-100", "svhn": "SVHN", "tinyimagenet": "TinyImageNet", "emnist": "EMNIST",
                   "emnist-letters": "EMNIST-letters"}
_ATTACK_LABELS = {"knockoff": "KnockoffNets", "jbda": "JBDA"}
_MODE_LABELS = {"soft": "soft-label", "hard": "hard-label"}


def defense_label(name: str) -> str:
    """``ini+mad`` -> ``InI + MAD``; unknown parts keep their registered name."""
    return " + ".join(_DEFENSE_LABELS.get(part, part) for part in str(name).split("+"))


def dataset_label(name: str) -> str:
    return _DATASET_LABELS.get(str(name), str(name))


def attack_label(name: str) -> str:
    return _ATTACK_LABELS.get(str(name), str(name))


def mode_label(name: str) -> str:
    return _MODE_LABELS.get(str(name), str(name))


def order_defenses(names) -> list[str]:
    """Paper order first (vanilla, mad, am, edm, ini, ini+mad, ini+am), then the rest sorted."""
    present = list(dict.fromkeys(str(n) for n in names))
    paper = [d for d in PAPER_DEFENSES if d in present]
    return paper + sorted(d for d in present if d not in PAPER_DEFENSES)


def in_order(values) -> list:
    """Unique values in order of first appearance (the suites' matrix order survives the CSV)."""
    return list(dict.fromkeys(v for v in values if not (isinstance(v, float) and pd.isna(v))))


@dataclass
class RunTables:
    """The concatenated tables of the runs a report covers; empty frames where a table is absent."""

    run_dirs: list[Path]
    results: pd.DataFrame
    curves: pd.DataFrame
    timing: pd.DataFrame
    suites: list[dict[str, Any]] = field(default_factory=list)  # suite.json per run directory ({} if absent)
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
        return self.results[self.results["status"] != "ok"]

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


def load_runs(run_dirs: list[Path] | Path) -> RunTables:
    """Read and concatenate the tables of ``run_dirs``.

    A cell present in several runs (same ``cell_id``) is kept once, from the last run named, so a
    re-run listed after the original supersedes it.
    """
    dirs = [Path(run_dirs)] if isinstance(run_dirs, (str, Path)) else [Path(d) for d in run_dirs]
    if not dirs:
        raise ValueError("render_report needs at least one run directory")
    results, curves, timing, suites = [], [], [], []
    for run_dir in dirs:
        if not run_dir.is_dir():
            raise FileNotFoundError(f"{run_dir}: no such run directory")
        found = False
        for name, columns, sink in (("results", RESULT_COLUMNS, results), ("curves", CURVE_COLUMNS, curves),
                                    ("timing", TIMING_COLUMNS, timing)):
            frame = _read_csv(run_dir / f"{name}.csv", columns)
            if frame is not None:
                found = True
                sink.append(frame.assign(run=run_dir.name))
        suite_path = run_dir / "suite.json"
        suites.append(json.loads(suite_path.read_text()) if suite_path.exists() else {})
        if not found:
            raise FileNotFoundError(f"{run_dir}: none of results.csv, curves.csv, timing.csv is there (is it a run directory?)")
    result_frame = _concat(results, RESULT_COLUMNS + ["run"])
    if not result_frame.empty:
        result_frame["status"] = result_frame["status"].fillna("failed")
        result_frame["error"] = result_frame["error"].astype(object).fillna("")
        result_frame = result_frame.drop_duplicates("cell_id", keep="last") if result_frame["cell_id"].notna().all() else result_frame
    swept = result_frame["setting"].notna() if "setting" in result_frame else pd.Series(False, index=result_frame.index)
    sweep_frame, result_frame = result_frame[swept], result_frame[~swept]
    curve_frame = _concat(curves, CURVE_COLUMNS + ["run"])
    if not curve_frame.empty:
        curve_frame = curve_frame.drop_duplicates(CURVE_COLUMNS[:7], keep="last")
    return RunTables(dirs, result_frame.reset_index(drop=True), curve_frame.reset_index(drop=True),
                     _concat(timing, TIMING_COLUMNS + ["run"]), suites, sweep_frame.reset_index(drop=True))


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, arch, defense, attack, label mode): mean and sample std over the seeds that finished.

    Rows whose every seed failed keep ``n_ok = 0`` and NaN means, so tables can show ``--``.
    """
    keys = ["dataset", "arch", "defense", "attack", "label_mode"]
    columns = keys + ["clone_mean", "clone_std", "rel_mean", "rel_std", "benign_mean", "benign_std",
                      "fidelity_mean", "n_ok", "n_failed"]
    if results.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for key, group in results.groupby(keys, sort=False, dropna=False):
        ok = group[group["status"] == "ok"]
        rows.append({**dict(zip(keys, key)),
                     "clone_mean": ok["clone_acc"].mean(), "clone_std": ok["clone_acc"].std(ddof=1),
                     "rel_mean": ok["relative_perf"].mean(), "rel_std": ok["relative_perf"].std(ddof=1),
                     "benign_mean": ok["benign_acc"].mean(), "benign_std": ok["benign_acc"].std(ddof=1),
                     "fidelity_mean": ok["fidelity"].mean(), "n_ok": len(ok), "n_failed": len(group) - len(ok)})
    return pd.DataFrame(rows, columns=columns)


def benign_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Benign accuracy per victim (dataset, arch, defense): one value per seed, then mean and std.

    Every cell of a victim repeats its benign accuracy, so each (dataset, arch, defense, seed) counts once.
    """
    columns = ["dataset", "arch", "defense", "benign_mean", "benign_std", "n"]
    if results.empty:
        return pd.DataFrame(columns=columns)
    ok = results[(results["status"] == "ok") & results["benign_acc"].notna()]
    per_seed = ok.drop_duplicates(["dataset", "arch", "defense", "seed"])
    rows = []
    for (dataset, arch, defense), _ in results.groupby(["dataset", "arch", "defense"], sort=False):
        values = per_seed[(per_seed["dataset"] == dataset) & (per_seed["arch"] == arch) & (per_seed["defense"] == defense)]["benign_acc"]
        rows.append({"dataset": dataset, "arch": arch, "defense": defense, "benign_mean": values.mean(),
                     "benign_std": values.std(ddof=1), "n": len(values)})
    return pd.DataFrame(rows, columns=columns)
