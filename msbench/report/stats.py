"""The numbers behind the report's cells: per-experiment means and 95% confidence intervals over
seeds, and each victim's benign accuracy against the reference's (the collapse check)."""
from __future__ import annotations

import math

import pandas as pd
from msbench.report.labels import is_reference, reference_of
from msbench.report.significance import interval
from msbench.report.runs import KEY, PENDING


def ci95(values) -> float:
    """Half-width of the 95% confidence interval of the mean (Student t, n - 1 degrees of freedom:
    ``significance.interval``); NaN below 2 values."""
    spread = interval(dict(enumerate(pd.Series(values, dtype=float).dropna())))
    return (spread.high - spread.low) / 2 if spread.n >= 2 else float("nan")


def seed_values(results: pd.DataFrame, column: str = "clone_acc") -> dict[tuple, dict[int, float]]:
    """Per experiment (``KEY`` values as a tuple), its finished seeds' values of ``column``: what tests compare."""
    ok = results[(results["status"] == "ok") & results[column].notna()] if not results.empty else results
    out: dict[tuple, dict[int, float]] = {}
    for row in ok[KEY + ["seed", column]].itertuples(index=False):
        out.setdefault(tuple(row[:len(KEY)]), {})[int(row[len(KEY)])] = float(row[len(KEY) + 1])
    return out


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Per experiment (dataset, arch, defense, attack, label mode): mean, sample std and 95% CI
    half-width (Student t) over the seeds that finished (the clone accuracy's interval also as its
    bounds, NaN below two seeds), and how many seeds finished, failed, pend.

    Rows whose every seed failed or pends keep ``n_ok = 0`` and NaN means, so tables can say so.
    """
    columns = KEY + ["clone_mean", "clone_std", "clone_ci", "clone_ci_low", "clone_ci_high", "rel_mean", "rel_std",
                     "rel_ci", "benign_mean", "benign_std",
                     "benign_ci", "fidelity_mean", "queries", "budget", "n_ok", "n_failed", "n_pending"]
    if results.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for key, group in results.groupby(KEY, sort=False, dropna=False):
        ok = group[group["status"] == "ok"]
        pending = int((group["status"] == PENDING).sum())
        clone = interval(dict(enumerate(ok["clone_acc"].dropna())))
        rows.append({**dict(zip(KEY, key)),
                     "clone_mean": ok["clone_acc"].mean(), "clone_std": ok["clone_acc"].std(ddof=1),
                     "clone_ci": (clone.high - clone.low) / 2, "clone_ci_low": clone.low, "clone_ci_high": clone.high,
                     "rel_mean": ok["relative_perf"].mean(), "rel_std": ok["relative_perf"].std(ddof=1),
                     "rel_ci": ci95(ok["relative_perf"]),
                     "benign_mean": ok["benign_acc"].mean(), "benign_std": ok["benign_acc"].std(ddof=1),
                     "benign_ci": ci95(ok["benign_acc"]),
                     "fidelity_mean": ok["fidelity"].mean(),
                     "queries": pd.to_numeric(ok["queries"], errors="coerce").mean(),
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
        values = per_seed[(per_seed["dataset"] == dataset) & (per_seed["arch"] == arch)
                          & (per_seed["defense"] == defense)]
        pending = set(group.loc[group["status"] == PENDING, "seed"]) - set(values["seed"])
        rows.append({"dataset": dataset, "arch": arch, "defense": defense, "benign_mean": values["benign_acc"].mean(),
                     "benign_std": values["benign_acc"].std(ddof=1), "benign_ci": ci95(values["benign_acc"]),
                     "n": len(values), "n_pending": len(pending)})
    return pd.DataFrame(rows, columns=columns)


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
    present = set(summary["defense"])
    rows = []
    for r in summary.itertuples():
        reference = is_reference(r.defense)
        ref = means.get((r.dataset, r.arch, reference_of(r.defense, present)), float("nan"))
        drop = ref - r.benign_mean if finite(ref) and finite(r.benign_mean) else float("nan")
        # the drop is compared to 9 decimals, so 99.3 - 98.3 (1.0000000000000142 in floats) is a drop of exactly 1.0
        within = None if reference or not finite(drop) else bool(round(drop - tolerance, 9) <= 0)
        rows.append({"dataset": r.dataset, "arch": r.arch, "defense": r.defense, "benign_mean": r.benign_mean,
                     "reference_mean": ref, "drop": drop, "within": within, "reference": reference})
    return pd.DataFrame(rows, columns=columns)


def collapsed_victims(results: pd.DataFrame, tolerance: float) -> set[tuple[str, str, str]]:
    """(dataset, arch, defense) of every victim whose benign accuracy is more than ``tolerance`` below Vanilla's."""
    check = benign_check(results, tolerance)
    return {(r.dataset, r.arch, r.defense) for r in check.itertuples() if r.within is False}


def finite(value) -> bool:
    try:
        return value is not None and not pd.isna(value) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
