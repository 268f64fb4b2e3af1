"""The verdict: per defense, the worst case over every attack and label mode of the runs, with its uncertainty.

Model-stealing defenses evaluated only against the attacks their authors chose look stronger than
they are; RobustBench ranks by the worst case of a fixed strong battery. ``worst_case`` does the
same with a run's tables: for each defense x dataset x architecture (x budget where one attack was
run at several budgets), the attack setting whose clone got closest to the victim on average over
seeds, beside the victim's benign accuracy, the seeds behind it (``n``) and its 95% interval.
Leaderboard order: the defenses whose benign accuracy stays within the suite's tolerance of
Vanilla's, ranked by ``significance.ranks`` on the worst-case setting's per-seed clone accuracies
(defenses that cannot be separated share a rank); then Vanilla, the reference; then the victims
whose benign accuracy collapsed, and those with nothing to compare. Each defense is also compared
with its Vanilla's worst case (paired by seed where they share seeds, Welch otherwise).
"""
from __future__ import annotations

import pandas as pd

from msbench.report import significance
from msbench.report.detection import KEYS, accounts_for
from msbench.report.informative import is_uninformative, uninformative_settings
from msbench.report.labels import in_order, is_pool_attack, order_attacks, order_defenses, reference_of
from msbench.report.runs import RunTables
from msbench.report.stats import benign_check, benign_summary, seed_values, summarise

RANKED, REFERENCE_ROW, COLLAPSED, UNCHECKED = "ranked", "reference", "collapsed", "unchecked"
COLUMNS = ["dataset", "arch", "budget", "rank", "tied", "indicative", "best", "standing", "defense", "benign_mean",
           "benign_ci", "benign_drop", "clone_mean", "clone_ci", "ci_low", "ci_high", "n", "n_differs", "rel_mean",
           "rel_ci", "attack", "label_mode", "uninformative", "queries", "vs_reference", "vs_reference_low",
           "vs_reference_high", "vs_reference_p", "vs_reference_test", "separable", "settings_finished",
           "settings_total", "complete", "label_only_bound", "accounts_needed"]
"""``standing``: ranked | reference | collapsed (benign accuracy more than the tolerance below Vanilla's)
| unchecked (no Vanilla, or no benign accuracy, to compare with). ``rank``: 1 + the ranked defenses
whose worst case is significantly lower (``tied``: shared; ``indicative``: some comparison had no
test, a one-seed side or no spread, and was decided by the means). ``best``: bold as best (beats another ranked defense,
complete, not from an uninformative attack). ``clone_mean``, ``ci_low``, ``ci_high``, ``n``: the
worst-case clone accuracy over seeds (``clone_ci`` the interval's half-width); ``n_differs``: the
group's rows have different numbers of seeds. ``uninformative``: the worst attack setting steals
too little from Vanilla to judge defenses. ``vs_reference*``: worst case minus Vanilla's, its
interval, p value and test; ``separable``: significant at 5%. ``complete``: every attack setting
of the group finished, so the worst case cannot rise with cells still pending or failed.
``label_only_bound``: the worst attack is a pool attack's hard-label mode. ``accounts_needed``: for a detection
defense, the accounts the worst attacker's whole budget took (its clone is the one kept at its stop); NaN otherwise."""


def budget_split(summary: pd.DataFrame) -> bool:
    """True when some attack was run at several budgets on one dataset and arch: then each budget is its own verdict."""
    if summary.empty:
        return False
    budgets = summary.dropna(subset=["budget"]).groupby(["dataset", "arch", "attack"])["budget"].nunique()
    return bool(len(budgets) and budgets.max() > 1)


def _standing(check: pd.DataFrame, victim: tuple) -> str:
    if victim not in check.index:
        return UNCHECKED
    if bool(check.loc[victim, "reference"]):
        return REFERENCE_ROW
    within = check.loc[victim, "within"]
    return RANKED if within is True else COLLAPSED if within is False else UNCHECKED


def _row(settings: pd.DataFrame, values: dict, flags: dict, victim: tuple, standing: str, benign: pd.DataFrame,
         check: pd.DataFrame, present: set) -> tuple[dict, dict[int, float]]:
    """One defense's worst case (the attack setting of highest mean clone accuracy) and its per-seed values."""
    dataset, arch, defense = victim
    attack_order = order_attacks(settings["attack"])
    settings = settings.assign(_order=[attack_order.index(a) for a in settings["attack"]]).sort_values(
        "_order", kind="stable")
    finished = settings[settings["n_ok"] > 0]
    worst = finished.loc[finished["clone_mean"].idxmax()] if not finished.empty else None
    samples = values.get((dataset, arch, defense, worst["attack"], worst["label_mode"]),
                         {}) if worst is not None else {}
    spread = significance.interval(samples)
    nan = float("nan")
    return {"dataset": dataset, "arch": arch, "rank": pd.NA, "tied": False, "indicative": False, "best": False,
            "standing": standing, "defense": defense,
            "benign_mean": benign.loc[victim, "benign_mean"] if victim in benign.index else nan,
            "benign_ci": benign.loc[victim, "benign_ci"] if victim in benign.index else nan,
            "benign_drop": check.loc[victim, "drop"] if victim in check.index else nan,
            "clone_mean": worst["clone_mean"] if worst is not None else nan,
            "clone_ci": worst["clone_ci"] if worst is not None else nan,
            "ci_low": spread.low, "ci_high": spread.high, "n": spread.n, "n_differs": False,
            "rel_mean": worst["rel_mean"] if worst is not None else nan,
            "rel_ci": worst["rel_ci"] if worst is not None else nan,
            "attack": worst["attack"] if worst is not None else "",
            "label_mode": worst["label_mode"] if worst is not None else "",
            "uninformative": worst is not None and is_uninformative(flags, dataset, arch, worst["attack"],
                                                                    worst["label_mode"],
                                                                    defense, present),
            "queries": worst["queries"] if worst is not None else nan,
            "vs_reference": nan, "vs_reference_low": nan, "vs_reference_high": nan, "vs_reference_p": nan,
            "vs_reference_test": "", "separable": False,
            "settings_finished": len(finished), "settings_total": len(settings),
            "complete": bool(((settings["n_pending"] == 0) & (settings["n_ok"] > 0)).all()),
            "label_only_bound": (worst is not None and worst["label_mode"] == "hard"
                                 and is_pool_attack(worst["attack"]))}, samples


def _judge(rows: list[dict], samples: dict[str, dict[int, float]], present: set) -> pd.DataFrame:
    """Ranks, ties, bold and the comparison with Vanilla for one group's rows; leaderboard order."""
    ranked = [r for r in rows if r["standing"] == RANKED]
    ranks = significance.ranks({r["defense"]: samples[r["defense"]] for r in ranked})
    best = significance.best({r["defense"]: samples[r["defense"]] for r in ranked})
    for r in ranked:
        if r["defense"] in ranks:
            rank = ranks[r["defense"]]
            r.update(rank=rank.rank, tied=rank.tied, indicative=rank.indicative,
                     best=r["defense"] in best and r["complete"] and not r["uninformative"])
    for r in rows:
        reference = reference_of(r["defense"], present)
        if r["standing"] in (REFERENCE_ROW, UNCHECKED) or reference not in samples or not samples[r["defense"]]:
            continue
        c = significance.compare(samples[r["defense"]], samples[reference])
        r.update(vs_reference=c.diff, vs_reference_low=c.low, vs_reference_high=c.high, vs_reference_p=c.p,
                 vs_reference_test=c.test, separable=c.significant)
    compared = {r["n"] for r in rows if r["n"] > 0}
    for r in rows:
        r["n_differs"] = len(compared) > 1
    frame = pd.DataFrame(rows, columns=COLUMNS)
    order = {RANKED: 0, REFERENCE_ROW: 1, COLLAPSED: 2, UNCHECKED: 3}
    frame = frame.assign(_standing=frame["standing"].map(order), _rank=pd.to_numeric(frame["rank"], errors="coerce"))
    return frame.sort_values(["_standing", "_rank", "clone_mean"], kind="stable",
                             na_position="last").drop(columns=["_standing", "_rank"])


def worst_case(tables: RunTables, label_mode: str | None = None) -> pd.DataFrame:
    """The worst-case table as a DataFrame, one row per defense, grouped by (dataset, arch[, budget]) in
    leaderboard order (see the module docstring and ``COLUMNS``); over one label mode's attacks only
    when ``label_mode`` is given (the verdict sentences judge each label mode)."""
    results = tables.results
    if label_mode is not None and not results.empty:
        results = results[results["label_mode"] == label_mode]
    summary = summarise(results)
    if summary.empty:
        return pd.DataFrame(columns=COLUMNS)
    check = benign_check(tables.results, tables.tolerance).set_index(["dataset", "arch", "defense"])
    benign = benign_summary(tables.results).set_index(["dataset", "arch", "defense"])
    values = seed_values(results)
    flags = uninformative_settings(summary if label_mode is None else summarise(tables.results),
                                   tables.uninformative_below)
    split = budget_split(summary)
    keys = ["dataset", "arch"] + (["budget"] if split else [])
    present = set(tables.results["defense"])
    out = []
    for group_key, group in summary.groupby(keys, sort=False, dropna=False):
        dataset, arch = group_key[0], group_key[1]
        rows, samples = [], {}
        for defense in order_defenses(group["defense"]):
            victim = (dataset, arch, defense)
            row, samples[defense] = _row(group[group["defense"] == defense], values, flags, victim,
                                         _standing(check, victim),
                                         benign, check, present)
            row["budget"] = group_key[2] if split else float("nan")
            rows.append(row)
        out.append(_judge(rows, samples, present))
    frame = pd.concat(out, ignore_index=True)
    frame["rank"] = pd.to_numeric(frame["rank"], errors="coerce").astype("Int64")
    accounts = accounts_for(results)
    frame["accounts_needed"] = [accounts.get(k, float("nan")) for k in zip(*(frame[c] for c in KEYS))]
    return frame[COLUMNS]


def attacks_in(tables: RunTables) -> list[tuple[str, str]]:
    """The (attack, label mode) settings of the runs, in report order."""
    results = tables.results
    if results.empty:
        return []
    order = order_attacks(results["attack"])
    return sorted(in_order(zip(results["attack"], results["label_mode"])), key=lambda k: order.index(k[0]))


PER_ATTACK_COLUMNS = ["dataset", "arch", "attack", "label_mode", "defense", "standing", "clone_mean", "ci_low",
                      "ci_high",
                      "n", "n_differs", "rel_mean", "rank", "tied", "indicative", "best", "uninformative"]


def per_attack(tables: RunTables) -> pd.DataFrame:
    """Every clone-accuracy table cell as a row (``PER_ATTACK_COLUMNS``): mean over seeds, its 95% interval and
    ``n``; within each (dataset, arch, attack, label mode) column the ranked defenses' ranks, ties and
    bold (``best``) as the tables show them, and whether the column is uninformative."""
    results = tables.results
    summary = summarise(results)
    if summary.empty:
        return pd.DataFrame(columns=PER_ATTACK_COLUMNS)
    check = benign_check(results, tables.tolerance).set_index(["dataset", "arch", "defense"])
    values = seed_values(results)
    flags = uninformative_settings(summary, tables.uninformative_below)
    present = set(results["defense"])
    out = []
    for (dataset, arch, attack, mode), column in summary.groupby(
            ["dataset", "arch", "attack", "label_mode"], sort=False):
        rows = []
        for r in column.itertuples():
            samples = values.get((dataset, arch, r.defense, attack, mode), {})
            spread = significance.interval(samples)
            rows.append({"dataset": dataset, "arch": arch, "attack": attack, "label_mode": mode, "defense": r.defense,
                         "standing": _standing(check, (dataset, arch, r.defense)), "clone_mean": r.clone_mean,
                         "ci_low": spread.low, "ci_high": spread.high, "n": spread.n, "rel_mean": r.rel_mean,
                         "rank": pd.NA, "tied": False, "indicative": False, "best": False,
                         "uninformative": is_uninformative(flags, dataset, arch, attack, mode, r.defense, present),
                         "_samples": samples})
        ranked = {r["defense"]: r["_samples"] for r in rows if r["standing"] == RANKED and r["_samples"]}
        ranks, best = significance.ranks(ranked), significance.best(ranked)
        counts = {r["n"] for r in rows if r["n"] > 0}
        for r in rows:
            if r["defense"] in ranks:
                rank = ranks[r["defense"]]
                r.update(rank=rank.rank, tied=rank.tied, indicative=rank.indicative,
                         best=r["defense"] in best and not r["uninformative"])
            r["n_differs"] = len(counts) > 1
            out.append(r)
    frame = pd.DataFrame(out, columns=PER_ATTACK_COLUMNS)
    frame["rank"] = pd.to_numeric(frame["rank"], errors="coerce").astype("Int64")
    return frame
