"""Detection defenses in the report: when each attacker was stopped, what it kept, what accounts cost it.

A detection defense's cells carry extra columns (``msbench.detection.measure.FIELDS``); a cell is a
detection cell when ``attacker_accounts`` is recorded. Its ``clone_acc`` is already the clone the
attacker kept at its stop, so every other table and the worst case treat a flagged account as
stopped at the flag; this module adds what those tables cannot show: queries to the first stop and
to the attacker's last, the clone it would have had unstopped, the accounts the whole budget took,
the benign false-positive rate and the monitor's cost, beside what the defense's paper claims (the
plugin's ``paper_claim``) and the same attack's clone against the undetected reference victim.
"""
from __future__ import annotations

import dataclasses
import json

import pandas as pd

from msbench.defenses.detection import DetectionDefense
from msbench.registry import DEFENSES
from msbench.report.labels import (attack_label, dataset_label, defense_label, in_order, mode_label, order_attacks,
                                   plugin_class, reference_of, split_variant)
from msbench.report.runs import RunTables
from msbench.report.stats import finite
from msbench.report.table_entry import Table, TableEntry, slug

KEYS = ["dataset", "arch", "defense", "attack", "label_mode"]
COLUMNS = KEYS + ["wraps", "n", "stopped", "flag_queries", "stop_queries", "kept", "unstopped", "reference_clone",
                  "own_accounts",
                  "accounts_needed", "budget", "benign_fpr", "benign_users", "benign_queries", "monitor_ms"]
"""``wraps``: the battery attack an adaptive attack wraps (its record's notes), else ""; ``stopped``:
seeds in which the attacker's own accounts were all stopped; ``flag_queries`` and
``stop_queries``: mean answered queries at the first stop and at the attacker's last, over the seeds
where it happened; ``kept``: mean clone accuracy the attacker kept (its stop, or the end);
``unstopped``: the attack's clone over the whole budget; ``reference_clone``: the same attack's clone
against the reference victim (no detector); ``own_accounts``: accounts the attacker opened itself;
``accounts_needed``: accounts the whole budget took."""


def is_detection(results: pd.DataFrame) -> pd.Series:
    """The rows of finished detection cells."""
    if "attacker_accounts" not in results.columns:
        return pd.Series(False, index=results.index)
    return (results["status"] == "ok") & results["attacker_accounts"].notna()


def paper_claim(defense: str) -> str:
    """What the chain's detection link's paper claims (its plugin's ``paper_claim``), or ""."""
    for part in split_variant(defense)[0].split("+"):
        plugin = plugin_class(DEFENSES, part)
        if isinstance(plugin, type) and issubclass(plugin, DetectionDefense) and plugin.paper_claim:
            return plugin.paper_claim
    return ""


def summary(tables: RunTables) -> pd.DataFrame:
    """One row per detection defense x attack x label mode (``COLUMNS``), means over seeds."""
    results = tables.results
    cells = results[is_detection(results)]
    if cells.empty:
        return pd.DataFrame(columns=COLUMNS)
    ok = results[results["status"] == "ok"]
    present = set(results["defense"])
    rows = []
    for key, group in cells.groupby(KEYS, sort=False):
        dataset, arch, defense, attack, mode = key
        reference = ok[(ok["dataset"] == dataset) & (ok["arch"] == arch)
                       & (ok["defense"] == reference_of(defense, present))
                       & (ok["attack"] == attack) & (ok["label_mode"] == mode)]
        rows.append(dict(zip(KEYS, key), wraps=_wrapped(group["notes"]), n=len(group),
                         stopped=int(group["stop_queries"].notna().sum()),
                         flag_queries=group["flag_queries"].mean(), stop_queries=group["stop_queries"].mean(),
                         kept=group["clone_acc"].mean(), unstopped=group["clone_unstopped"].mean(),
                         reference_clone=reference["clone_acc"].mean() if not reference.empty else float("nan"),
                         own_accounts=group["attacker_accounts"].max(), accounts_needed=group["accounts_needed"].mean(),
                         budget=group["queries"].max(), benign_fpr=group["benign_fpr"].mean(),
                         benign_users=group["benign_users"].max(), benign_queries=group["benign_queries"].max(),
                         monitor_ms=group["monitor_ms"].mean()))
    frame = pd.DataFrame(rows, columns=COLUMNS)
    order, datasets = order_attacks(frame["attack"]), in_order(results["dataset"])  # datasets as the suite lists them
    return frame.assign(_a=[order.index(a) for a in frame["attack"]],
                        _d=[datasets.index(d) for d in frame["dataset"]]).sort_values(
        ["_d", "arch", "defense", "_a", "label_mode"], kind="stable").drop(columns=["_a", "_d"])


def _wrapped(notes: pd.Series) -> str:
    for text in notes:
        try:
            wraps = json.loads(text).get("wraps", "") if isinstance(text, str) and text else ""
        except (ValueError, AttributeError):  # notes that are not a JSON object name no wrapped attack
            continue
        if wraps:
            return str(wraps)
    return ""


def accounts(count: float) -> str:
    return f"{count:g} account" + ("" if count == 1 else "s")


def _attack(attack: str, wraps: str, mode: str) -> str:
    return f"{attack_label(attack)}{f' ({attack_label(wraps)})' if wraps else ''} {mode_label(mode)}"


def accounts_for(results: pd.DataFrame) -> dict[tuple, float]:
    """Mean accounts the whole budget took per (dataset, arch, defense, attack, label mode): the worst case's column."""
    cells = results[is_detection(results)]
    return {k: float(v) for k, v in cells.groupby(KEYS)["accounts_needed"].mean().items()}


def _number(value: float, digits: int = 0, suffix: str = "") -> TableEntry:
    if not finite(value):
        return TableEntry.empty()
    text = f"{value:,.{digits}f}{suffix}"
    return TableEntry(text, text.replace(",", "{,}").replace("%", r"\%"), float(value))


def _stop(mean: float, count: int, n: int) -> TableEntry:
    if count == 0:
        return TableEntry("never", "never", float("inf"))
    entry = _number(mean)
    if count < n:
        entry.text, entry.latex = f"{entry.text} ({count}/{n})", f"{entry.latex} ({count}/{n})"
    return entry


def detection_tables(tables: RunTables) -> list[Table]:
    """Per dataset x arch: every detection defense x attack x label mode (``summary``) as a table."""
    frame = summary(tables)
    out = []
    for (dataset, arch), group in frame.groupby(["dataset", "arch"], sort=False):
        rows = []
        for r in group.itertuples():
            flags = int(tables.results[is_detection(tables.results) & (tables.results["dataset"] == dataset)
                                       & (tables.results["arch"] == arch) & (tables.results["defense"] == r.defense)
                                       & (tables.results["attack"] == r.attack)
                                       & (tables.results["label_mode"] == r.label_mode)
                                       ]["flag_queries"].notna().sum())
            rows.append([TableEntry.label(defense_label(r.defense)),
                         TableEntry.label(_attack(r.attack, r.wraps, r.label_mode)),
                         _stop(r.flag_queries, flags, r.n), _stop(r.stop_queries, r.stopped, r.n),
                         _number(r.kept, 1), _number(r.unstopped, 1), _number(r.reference_clone, 1),
                         TableEntry(f"{r.accounts_needed:g} ({r.own_accounts:g})",
                                    f"{r.accounts_needed:g} ({r.own_accounts:g})",
                                    float(r.accounts_needed)),
                         _number(r.benign_fpr, 0, "%"), _number(r.monitor_ms, 3)])
        claims = "; ".join(f"{defense_label(d)}: {paper_claim(d)}" for d in in_order(group["defense"])
                           if paper_claim(d))
        users = ", ".join(f"{defense_label(d)} {int(g['benign_users'].max())} users x "
                          f"{int(g['benign_queries'].max()):,} queries"
                          for d, g in group.groupby("defense", sort=False))
        where = f"{dataset_label(dataset)} ({arch})"
        out.append(Table(
            slug("detection", dataset, arch), f"Detection defenses on {where}",
            f"Detection defenses on {where}, per attack and label mode (means over seeds): answered queries before the "
            f"first account was stopped and before the attacker's own accounts were all stopped ('never': not within "
            f"its budget; (k/n): in k of n seeds), the clone accuracy (%) the attacker keeps there (trained on what "
            f"was answered before the stop; the whole budget's clone if never stopped), the attack's own clone over "
            f"the whole budget with every account it needed, the same attack against the undetected reference victim, "
            f"the accounts the whole budget took (the attacker's own in brackets), the false-positive rate on benign "
            f"accounts (streams of distinct test images: {users}) and the monitor's milliseconds per query. "
            + (f"The papers claim: {claims}." if claims else ""),
            ["Defense", "Attack", "Queries to first stop", "Queries to attacker stopped", "Clone kept",
             "Clone unstopped",
             "Clone vs. reference", "Accounts needed (own)", "Benign FPR", "Monitor ms/query"], rows, wide=True,
            short=f"Detection defenses on {where}: queries to detection, the clone kept there, accounts needed, benign "
                  f"false positives."))
    return out


def detection_sentences(tables: RunTables) -> list[str]:
    """One verdict sentence per detection defense x dataset x arch: how many attack settings it stopped, the
    strongest attacker's kept clone and accounts, its benign false positives, beside its paper's claim."""
    frame = summary(tables)
    sentences = []
    for (dataset, arch, defense), group in frame.groupby(["dataset", "arch", "defense"], sort=False):
        worst = group.loc[group["kept"].idxmax()]
        stopped = group[group["stopped"] > 0]
        first = (f" (after {stopped['stop_queries'].min():,.0f} to {stopped['stop_queries'].max():,.0f} queries)"
                 if not stopped.empty else "")
        versus = (f" (against the undetected reference: {worst['reference_clone']:.1f}%)"
                  if finite(worst["reference_clone"]) else "")
        fate = ("is never stopped and" if worst["stopped"] == 0 else
                f"is stopped after {worst['stop_queries']:,.0f} queries with {accounts(worst['own_accounts'])} and")
        claim = paper_claim(defense)
        sentences.append(
            f"{defense_label(defense)} on {dataset_label(dataset)} ({arch}): stops the attacker in {len(stopped)} of "
            f"{len(group)} attack settings{first}; the strongest attacker, "
            f"{_attack(worst['attack'], worst['wraps'], worst['label_mode'])}, {fate} keeps a {worst['kept']:.1f}% "
            f"clone{versus}; its {worst['budget']:,.0f} queries took {accounts(worst['accounts_needed'])}; benign "
            f"accounts stopped: {group['benign_fpr'].max():.0f}%"
            + (f". Its paper claims {claim}." if claim else "."))
    return sentences


def curves_at_stops(tables: RunTables) -> RunTables:
    """The budget curves as the attacker had them: a stopped detection cell's curve ends at its stop,
    with the clone it kept there as the last point (its attack reported clones past the stop, over
    every account it needed). Curve points count the attack's own queries (``interleave``: the wrapped
    attack's, without the benign ones)."""
    results, curves = tables.results, tables.curves
    stopped = results[is_detection(results) & results["stop_queries"].notna()]
    if stopped.empty or curves.empty:
        return tables
    keys = ["dataset", "arch", "defense", "attack", "label_mode", "seed"] + (["run"] if "run" in curves.columns else [])
    drop = pd.Series(False, index=curves.index)
    kept = []
    for _, r in stopped.iterrows():
        mine = pd.Series(True, index=curves.index)
        for k in keys:
            mine &= curves[k] == r[k]
        drop |= mine & (curves["queries"] >= r["stop_queries"])
        kept.append({**{k: r[k] for k in keys}, "queries": r["stop_queries"], "clone_acc": r["clone_acc"]})
    points = pd.DataFrame(kept).reindex(columns=curves.columns).astype(curves.dtypes.to_dict())
    merged = pd.concat([curves[~drop], points], ignore_index=True)
    first: dict[tuple, int] = {}  # each curve where it was, so figures keep the tables' order of datasets and attacks
    for i, key in enumerate(zip(*(curves[k] for k in keys))):
        first.setdefault(key, i)
    place = [first.get(key, len(curves)) for key in zip(*(merged[k] for k in keys))]
    merged = merged.assign(_place=place).sort_values(["_place", "queries"], kind="stable").drop(columns="_place")
    return dataclasses.replace(tables, curves=merged.reset_index(drop=True))
