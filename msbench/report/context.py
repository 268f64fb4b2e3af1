"""What every table of the report needs besides its own numbers: the benign check per victim, the
tolerance, the runs' progress, and the caption sentences they add."""
from __future__ import annotations

import pandas as pd

from msbench.report.labels import attack_label, in_order, is_pool_attack
from msbench.report.runs import RunTables
from msbench.report.stats import benign_check
from msbench.report.table_entry import COLLAPSED_MARK, TableEntry, mark_collapsed, points


def lookup(summary: pd.DataFrame, **keys) -> pd.Series | None:
    mask = pd.Series(True, index=summary.index)
    for column, value in keys.items():
        mask &= summary[column] == value
    hit = summary[mask]
    return None if hit.empty else hit.iloc[0]


def seed_counts(results: pd.DataFrame) -> list[int]:
    """The distinct numbers of finished seeds per experiment of ``results``, ascending."""
    ok = results[results["status"] == "ok"] if not results.empty else results
    if ok.empty:
        return []
    return sorted({int(n) for n in ok.groupby(["dataset", "arch", "defense", "attack",
                                               "label_mode"])["seed"].nunique()})


def seeds_note(results: pd.DataFrame) -> str:
    """The caption's sentence on seeds: how many per cell, what ± means, and how bold was decided."""
    counts = seed_counts(results)
    if not counts:
        return ""
    if counts == [1]:
        return (" n = 1: one seed per cell, so no interval and no test; bold and ranks are indicative (by the means).")
    n = (f"n = {counts[0]} seeds per cell" if len(counts) == 1
         else f"n differs between rows ({counts[0]}-{counts[-1]} seeds; each cell gives its n)")
    return (f" {n}; mean±h, h the half-width of the 95% confidence interval over seeds (Student t). Bold and ranks "
            f"need a difference significant at 5% (paired t over seeds, Welch t where the seeds differ; by the means "
            f"where a side has one seed).")


class Context:
    """What every table needs besides its own numbers: the benign check, the tolerance, the run's progress."""

    def __init__(self, tables: RunTables):
        self.tables = tables
        self.tolerance = tables.tolerance
        check = benign_check(tables.results, self.tolerance)
        self.within = {(r.dataset, r.arch, r.defense): r.within for r in check.itertuples()}
        self.reference = {(r.dataset, r.arch, r.defense) for r in check.itertuples() if r.reference}
        self.progress = tables.progress

    def collapsed(self, dataset: str, arch: str, defense: str) -> bool:
        return self.within.get((dataset, arch, defense)) is False

    def eligible(self, dataset: str, arch: str, defense: str) -> bool:
        return self.within.get((dataset, arch, defense)) is True

    def mark(self, entry: TableEntry, dataset: str, arch: str, defense: str) -> TableEntry:
        if entry.sort is None:
            return entry
        if self.collapsed(dataset, arch, defense):
            return mark_collapsed(entry)
        entry.eligible = self.eligible(dataset, arch, defense)
        return entry

    def notes(self) -> str:
        """The caption's closing notes: the collapse mark and, for a partial run, its progress."""
        text = (f" {COLLAPSED_MARK}: benign accuracy more than {points(self.tolerance)} below Vanilla's (the suite's "
                f"run.match_benign): a collapsed victim, never bold; Vanilla is the reference, never bold.")
        if self.progress.partial:
            text += f" {self.progress.sentence()} Pending cells read 'pending'."
        return text


def label_only_note(attacks: list[str]) -> str:
    """The caption sentence on the label-only bound, when a pool attack's hard-label mode is among ``attacks``."""
    pools = [attack_label(a) for a in in_order(attacks) if is_pool_attack(a)]
    if not pools:
        return ""
    return (f" {', '.join(pools)} hard-label is the label-only bound: it learns from top-1 labels of natural images "
            f"only, so a defense that preserves every answer's argmax cannot change what it receives and cannot push "
            f"its clone accuracy lower.")
