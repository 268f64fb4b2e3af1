"""The verdict: per defense, the worst case over every attack and label mode of the runs.

Model-stealing defenses evaluated only against the attacks their authors chose look stronger than
they are; RobustBench ranks by the worst case of a fixed strong battery. ``worst_case`` does the
same with a run's tables: for each defense x dataset x architecture (x budget where one attack was
run at several budgets), the attack setting whose clone got closest to the victim, beside the
victim's benign accuracy. Leaderboard order: the defenses whose benign accuracy stays within the
suite's tolerance of Vanilla's, lowest worst-case clone accuracy first; then Vanilla, the
reference; then the victims whose benign accuracy collapsed, and those with nothing to compare.
"""
from __future__ import annotations

import pandas as pd

from msbench.report.labels import in_order, is_pool_attack, order_attacks, order_defenses
from msbench.report.runs import RunTables
from msbench.report.stats import benign_check, benign_summary, summarise

RANKED, REFERENCE_ROW, COLLAPSED, UNCHECKED = "ranked", "reference", "collapsed", "unchecked"
COLUMNS = ["dataset", "arch", "budget", "rank", "standing", "defense", "benign_mean", "benign_ci", "benign_drop",
           "clone_mean", "clone_ci", "rel_mean", "rel_ci", "attack", "label_mode", "queries", "n_seeds",
           "settings_finished", "settings_total", "complete", "label_only_bound"]
"""``standing``: ranked | reference | collapsed (benign accuracy more than the tolerance below Vanilla's)
| unchecked (no Vanilla, or no benign accuracy, to compare with). ``complete``: every attack setting
of the group finished, so the worst case cannot rise with cells still pending or failed.
``label_only_bound``: the worst attack is a pool attack's hard-label mode."""


def budget_split(summary: pd.DataFrame) -> bool:
    """True when some attack was run at several budgets on one dataset and arch: then each budget is its own verdict."""
    if summary.empty:
        return False
    budgets = summary.dropna(subset=["budget"]).groupby(["dataset", "arch", "attack"])["budget"].nunique()
    return bool(len(budgets) and budgets.max() > 1)


def worst_case(tables: RunTables) -> pd.DataFrame:
    """The worst-case table as a DataFrame, one row per defense, grouped by (dataset, arch[, budget]) in
    leaderboard order (see the module docstring and ``COLUMNS``)."""
    results = tables.results
    summary = summarise(results)
    if summary.empty:
        return pd.DataFrame(columns=COLUMNS)
    check = benign_check(results, tables.tolerance).set_index(["dataset", "arch", "defense"])
    benign = benign_summary(results).set_index(["dataset", "arch", "defense"])
    split = budget_split(summary)
    keys = ["dataset", "arch"] + (["budget"] if split else [])
    out = []
    for group_key, group in summary.groupby(keys, sort=False, dropna=False):
        dataset, arch = group_key[0], group_key[1]
        rows = []
        for defense in order_defenses(group["defense"]):
            settings = group[group["defense"] == defense]
            attack_order = order_attacks(settings["attack"])
            settings = settings.assign(_order=[attack_order.index(a) for a in settings["attack"]]).sort_values("_order", kind="stable")
            finished = settings[settings["n_ok"] > 0]
            worst = finished.loc[finished["clone_mean"].idxmax()] if not finished.empty else None
            victim = (dataset, arch, defense)
            within = check.loc[victim, "within"] if victim in check.index else None
            is_reference = bool(check.loc[victim, "reference"]) if victim in check.index else False
            standing = REFERENCE_ROW if is_reference else RANKED if within is True else COLLAPSED if within is False else UNCHECKED
            rows.append({"dataset": dataset, "arch": arch, "budget": group_key[2] if split else float("nan"),
                         "rank": pd.NA, "standing": standing, "defense": defense,
                         "benign_mean": benign.loc[victim, "benign_mean"] if victim in benign.index else float("nan"),
                         "benign_ci": benign.loc[victim, "benign_ci"] if victim in benign.index else float("nan"),
                         "benign_drop": check.loc[victim, "drop"] if victim in check.index else float("nan"),
                         "clone_mean": worst["clone_mean"] if worst is not None else float("nan"),
                         "clone_ci": worst["clone_ci"] if worst is not None else float("nan"),
                         "rel_mean": worst["rel_mean"] if worst is not None else float("nan"),
                         "rel_ci": worst["rel_ci"] if worst is not None else float("nan"),
                         "attack": worst["attack"] if worst is not None else "",
                         "label_mode": worst["label_mode"] if worst is not None else "",
                         "queries": worst["queries"] if worst is not None else float("nan"),
                         "n_seeds": int(worst["n_ok"]) if worst is not None else 0,
                         "settings_finished": len(finished), "settings_total": len(settings),
                         "complete": bool(((settings["n_pending"] == 0) & (settings["n_ok"] > 0)).all()),
                         "label_only_bound": worst is not None and worst["label_mode"] == "hard" and is_pool_attack(worst["attack"])})
        frame = pd.DataFrame(rows, columns=COLUMNS)
        ranked = frame[frame["standing"] == RANKED].sort_values("clone_mean", kind="stable", na_position="last")
        ranked = ranked.assign(rank=range(1, len(ranked) + 1))
        rest = [frame[frame["standing"] == s].sort_values("clone_mean", kind="stable", na_position="last")
                for s in (REFERENCE_ROW, COLLAPSED, UNCHECKED)]
        out.append(pd.concat([ranked, *rest]))
    frame = pd.concat(out, ignore_index=True)
    frame["rank"] = frame["rank"].astype("Int64")
    return frame[COLUMNS]


def attacks_in(tables: RunTables) -> list[tuple[str, str]]:
    """The (attack, label mode) settings of the runs, in report order."""
    results = tables.results
    if results.empty:
        return []
    order = order_attacks(results["attack"])
    return sorted(in_order(zip(results["attack"], results["label_mode"])), key=lambda k: order.index(k[0]))
