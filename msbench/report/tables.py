"""The report's tables, built once from the run tables and rendered twice (LaTeX and HTML): the
worst-case verdict, benign accuracy (paper Table 1), clone accuracy per attack (Tables 2/3),
inference time (Table 4, ``timing_table``), training cost (Table B.1, ``training_cost``) and
further defenses (Table 5 style). Entries and formats: ``table_entry``."""
from __future__ import annotations

import pandas as pd

from msbench.report import verdict
from msbench.report.context import Context, label_only_note, lookup, seed_counts, seeds_note
from msbench.report.detection import accounts, detection_tables
from msbench.report.informative import is_uninformative, uninformative_settings
from msbench.report.labels import (attack_label, dataset_label, defense_label, in_order, is_ablation_reference,
                                   is_paper_defense, is_reference, mode_label, order_attacks, order_defenses)
from msbench.report.runs import RunTables
from msbench.report.stats import benign_summary, seed_values, summarise
from msbench.report.table_entry import (COLLAPSED_MARK, UNINFORMATIVE_MARK, Table, TableEntry, accuracy_entry,
                                        attack_entry, bold_best, escape, finite, fmt_budget, fmt_clone, mark_collapsed,
                                        mark_uninformative, points, slug, with_n)
from msbench.report.timing_table import timing_tables
from msbench.report.training_cost import training_cost_tables


def benign_tables(tables: RunTables, ctx: Context) -> list[Table]:
    """Table 1: benign accuracy of each defense (rows) on each dataset (columns), one table per arch."""
    results = tables.results
    if results.empty:
        return []
    summary = benign_summary(results)
    out = []
    for arch in in_order(results["arch"]):
        frame = results[results["arch"] == arch]
        datasets = in_order(frame["dataset"])
        rows = []
        for defense in order_defenses(frame["defense"]):
            row = [TableEntry.label(defense_label(defense))]
            for dataset in datasets:
                hit = lookup(summary, dataset=dataset, arch=arch, defense=defense)
                entry = TableEntry.empty() if hit is None else accuracy_entry(hit["benign_mean"], hit["benign_ci"],
                                                                              hit["n"], hit["n_pending"])
                row.append(ctx.mark(entry, dataset, arch, defense))
            rows.append(row)
        out.append(Table(slug("benign", arch), f"Benign accuracy ({arch})",
                         f"Benign accuracy (%) of each defense on the victim's test set "
                         f"({arch}).{seeds_note(frame)}{ctx.notes()}",
                         ["Defense"] + [dataset_label(d) for d in datasets], rows,
                         short=f"Benign accuracy (%) of each defense's victim ({arch}).{_n_short(frame)}"))
    return out


class CloneColumns:
    """What the clone-accuracy tables share: the summary, the per-seed values and the uninformative settings."""

    def __init__(self, tables: RunTables):
        self.summary = summarise(tables.results)
        self.values = seed_values(tables.results)
        self.flags = uninformative_settings(self.summary, tables.uninformative_below)
        self.threshold = tables.uninformative_below
        self.present = set(tables.results["defense"])

    def rows(self, ctx: Context, defenses: list[str], columns: list[tuple[str, str]], fixed: dict,
             outer_key: str) -> tuple[list[list[TableEntry]], set[int]]:
        """One row per defense, one entry per (outer, label mode) column; bold decided over seeds; returns the
        rows and the (1-based) columns where some defense faces an uninformative attack setting (its own
        run's Vanilla steals little): those entries are greyed and never bold."""
        rows, skip = [], set()
        counts = set()
        for defense in defenses:
            row = [TableEntry.label(defense_label(defense))]
            for j, (outer, mode) in enumerate(columns, start=1):
                keys = {"defense": defense, "label_mode": mode, outer_key: outer, **fixed}
                hit = lookup(self.summary, **keys)
                samples = self.values.get(tuple(keys[k] for k in ("dataset", "arch", "defense", "attack",
                                                                  "label_mode")))
                entry = ctx.mark(attack_entry(hit, samples), keys["dataset"], keys["arch"], defense)
                if is_uninformative(self.flags, keys["dataset"], keys["arch"], keys["attack"], mode, defense,
                                    self.present):
                    skip.add(j)
                    mark_uninformative(entry)
                    entry.eligible = False
                if samples:
                    counts.add(len(samples))
                row.append(entry)
            rows.append(row)
        if len(counts) > 1:  # n differs between rows: every entry says its own
            for row in rows:
                for entry in row[1:]:
                    if entry.samples:
                        with_n(entry, len(entry.samples))
        bold_best(rows)
        return rows, skip

    def note(self, shown: bool) -> str:
        return (f" {UNINFORMATIVE_MARK}: an uninformative attack setting (its clone of Vanilla stays below "
                f"{self.threshold:g} of Vanilla's benign accuracy): shown, never bold." if shown else "")


def _mark_leaves(leaves: list[str], skip: set[int]) -> list[str]:
    return [f"{leaf} {UNINFORMATIVE_MARK}" if j in skip else leaf for j, leaf in enumerate(leaves, start=1)]


def _grouped_headers(columns: list[tuple[str, str]], outer_label) -> tuple[list[tuple[str, int]], list[str]]:
    groups: list[tuple[str, int]] = []
    for outer, _ in columns:
        label = outer_label(outer)
        if groups and groups[-1][0] == label:
            groups[-1] = (label, groups[-1][1] + 1)
        else:
            groups.append((label, 1))
    return groups, [mode_label(mode) for _, mode in columns]


def attack_tables(tables: RunTables, ctx: Context, clone: CloneColumns) -> list[Table]:
    """Tables 2/3: per attack (and arch), clone accuracy (relative performance) per defense x (dataset, label mode).

    Every defense of the runs is a row, the paper's first and in its order, then any other
    (ablations, third-party defenses), so one table compares them all.
    """
    results = tables.results
    if results.empty:
        return []
    out = []
    for attack in order_attacks(results["attack"]):
        for arch in in_order(results["arch"]):
            frame = results[(results["attack"] == attack) & (results["arch"] == arch)]
            if frame.empty:
                continue
            columns = in_order(zip(frame["dataset"], frame["label_mode"]))
            columns = sorted(columns, key=lambda c: in_order(frame["dataset"]).index(c[0]))
            groups, leaves = _grouped_headers(columns, dataset_label)
            rows, skip = clone.rows(ctx, order_defenses(frame["defense"]), columns, {"attack": attack, "arch": arch},
                                    "dataset")
            bound = label_only_note([attack]) if "hard" in set(frame["label_mode"]) else ""
            out.append(Table(slug("clone", attack, arch), f"{attack_label(attack)} ({arch})",
                             f"{attack_label(attack)} attack ({arch}): clone accuracy (%) and relative "
                             f"performance (clone / benign accuracy) on the victim's test set. Lower is a better "
                             f"defense; bold: the best per column among the defenses that kept their benign accuracy, "
                             f"when separable from "
                             f"another.{bound}{seeds_note(frame)}{clone.note(bool(skip))}{ctx.notes()}",
                             ["Defense"] + _mark_leaves(leaves, skip), rows, groups, wide=len(leaves) > 4,
                             short=f"{attack_label(attack)} ({arch}): clone accuracy (%) and relative "
                                   f"performance.{_n_short(frame)}"))
    return out


def _n_short(frame: pd.DataFrame) -> str:
    """`` n = 3 seeds.``, `` 1-3 seeds.``: the seeds behind a table, for its one-line caption."""
    counts = seed_counts(frame)
    if not counts:
        return ""
    return (f" n = {counts[0]} seed{'s' if counts[0] > 1 else ''}." if len(counts) == 1
            else f" {counts[0]}-{counts[-1]} seeds (n per cell).")


def other_defense_tables(tables: RunTables, ctx: Context, clone: CloneColumns) -> list[Table]:
    """Table 5 style: when the runs hold defenses beyond the paper's (e.g. InI ablations), one table per
    dataset (and arch) comparing them with Vanilla and InI across attack x label mode."""
    results = tables.results
    if results.empty:
        return []
    others = [d for d in order_defenses(results["defense"]) if not is_paper_defense(d)]
    if not others:
        return []
    out = []
    for dataset in in_order(results["dataset"]):
        for arch in in_order(results["arch"]):
            frame = results[(results["dataset"] == dataset) & (results["arch"] == arch)]
            present = set(frame["defense"])
            if not present & set(others):
                continue
            references = [d for d in order_defenses(present) if is_reference(d)]
            ablated = [d for d in order_defenses(present) if is_ablation_reference(d)]
            defenses = references + [d for d in others if d in present] + ablated
            attacks = order_attacks(frame["attack"])
            columns = sorted(in_order(zip(frame["attack"], frame["label_mode"])), key=lambda c: attacks.index(c[0]))
            groups, leaves = _grouped_headers(columns, attack_label)
            rows, skip = clone.rows(ctx, defenses, columns, {"dataset": dataset, "arch": arch}, "attack")
            out.append(Table(slug("other", dataset, arch), f"Further defenses on {dataset_label(dataset)} ({arch})",
                             f"Defenses beyond the paper's main table (e.g. InI ablations) on {dataset_label(dataset)} "
                             f"({arch}), next to Vanilla and InI: clone accuracy (%) and relative performance. "
                             f"Lower is better; bold: the best per column among the eligible defenses, when separable "
                             f"from another.{seeds_note(frame)}{clone.note(bool(skip))}{ctx.notes()}",
                             ["Defense"] + _mark_leaves(leaves, skip), rows, groups, wide=len(leaves) > 4))
    return out


def _versus(r) -> TableEntry:
    """``-8.12 [-12.01, -4.23]``: the worst case minus Vanilla's, with its 95% interval (none with one seed)."""
    if not finite(r.vs_reference):
        return TableEntry.empty()
    text = f"{r.vs_reference:+.2f}"
    if finite(r.vs_reference_low):
        text += f" [{r.vs_reference_low:+.2f}, {r.vs_reference_high:+.2f}]"
    return TableEntry(text.replace("-", "−"), text.replace("-", "$-$"), float(r.vs_reference))


def _worst_clone(r) -> TableEntry:
    if r.settings_finished == 0:
        return TableEntry.pending() if not r.complete and r.settings_total else TableEntry.failed()
    text, latex = fmt_clone(r.clone_mean, r.clone_ci, r.rel_mean)
    if not r.complete:  # pending or failed settings might still beat it
        text, latex = f"≥{text}", f"$\\geq${latex}"
    return TableEntry(text, latex, round(float(r.clone_mean), 2), bold=bool(r.best),
                      eligible=r.standing == verdict.RANKED and r.complete)


def _worst_caption(group: pd.DataFrame, scope: pd.DataFrame, where: str, ctx: Context, attacks: list[str]) -> str:
    collapsed = (group["standing"] == verdict.COLLAPSED).any()
    return (f"Worst case over every attack and label mode on {where}: per defense, the highest mean clone accuracy (%) "
            f"over seeds with its relative performance, the seeds behind it (n), its difference from Vanilla's worst "
            f"case with the 95% interval of the difference, and the attack that achieved it. Ranked: defenses within "
            f"{points(ctx.tolerance)} of Vanilla's benign accuracy; rank = 1 + the defenses significantly lower (=k: "
            f"shared; ~: indicative, a comparison without a test); bold: below another ranked defense and "
            f"above none, every attack setting finished."
            + (f" {COLLAPSED_MARK}: collapsed victim (benign accuracy more than {points(ctx.tolerance)} below "
               f"Vanilla's)." if collapsed else "")
            + (" ≥: some attack settings are pending or failed, so the worst case may be higher."
               if (~group["complete"].astype(bool)).any() else "")
            + (f" {UNINFORMATIVE_MARK}: the attack is uninformative (it steals little even from Vanilla)."
               if group["uninformative"].astype(bool).any() else "")
            + f"{label_only_note(attacks) if 'hard' in set(scope['label_mode']) else ''}{seeds_note(scope)}"
            + (f" {ctx.progress.sentence()}" if ctx.progress.partial else ""))


def worst_case_tables(tables: RunTables, ctx: Context) -> list[Table]:
    """The headline: per dataset x arch (x budget), each defense's worst case over every attack and label mode."""
    frame = verdict.worst_case(tables)
    if frame.empty:
        return []
    out = []
    split = frame["budget"].notna().any()
    for key, group in frame.groupby(["dataset", "arch"] + (["budget"] if split else []), sort=False, dropna=False):
        dataset, arch = key[0], key[1]
        budget = f", budget {fmt_budget(key[2])} queries" if split else ""
        rows = []
        for r in group.itertuples():
            rank = (("~" if r.indicative else "") + ("=" if r.tied else "") + str(r.rank) if not pd.isna(r.rank)
                    else {"reference": "ref.", "collapsed": COLLAPSED_MARK}.get(r.standing, ""))
            benign = accuracy_entry(r.benign_mean, r.benign_ci, 1 if finite(r.benign_mean) else 0,
                                    0 if finite(r.benign_mean) else 1)
            if r.standing == verdict.COLLAPSED:
                mark_collapsed(benign)
            attack = TableEntry.empty() if r.settings_finished == 0 else TableEntry.label(
                f"{attack_label(r.attack)} {mode_label(r.label_mode)}"
                + (f" {UNINFORMATIVE_MARK}" if r.uninformative else "")
                + (f", {accounts(r.accounts_needed)}" if finite(r.accounts_needed)  # a detection defense's cost
                   else ""))
            n = TableEntry(str(r.n), str(r.n), float(r.n)) if r.n else TableEntry.empty()
            settings = TableEntry(f"{r.settings_finished}/{r.settings_total}",
                                  f"{r.settings_finished}/{r.settings_total}", float(r.settings_finished))
            rank_entry = TableEntry(rank, escape(rank).replace(r"\textasciitilde{}", r"$\sim$"),
                                    float(r.rank) if not pd.isna(r.rank) else None)
            rows.append([TableEntry.label(defense_label(r.defense)), rank_entry, benign, _worst_clone(r), n,
                         _versus(r), attack, settings])
        scope = tables.results[(tables.results["dataset"] == dataset) & (tables.results["arch"] == arch)]
        where = f"{dataset_label(dataset)} ({arch}{budget})"
        out.append(Table(slug("worst", dataset, arch, *(key[2:] if split else [])), f"Worst case on {where}",
                         _worst_caption(group, scope, where, ctx, in_order(scope["attack"])),
                         ["Defense", "Rank", "Benign acc.", "Worst-case clone acc.", "n", "vs. Vanilla", "Attack",
                          "Settings done"], rows, wide=True, bookkeeping=(7,),
                         short=f"Worst case per defense on {where}: the highest mean clone accuracy (%) over the "
                               f"attack battery, and its difference from Vanilla's [95% CI]."))
    return out


def all_tables(tables: RunTables) -> dict[str, list[Table]]:
    """Every table of the report by section: the worst-case verdict first, then the paper's order."""
    ctx, clone = Context(tables), CloneColumns(tables)  # one summary and one set of per-seed values for both
    return {"worst": worst_case_tables(tables, ctx), "benign": benign_tables(tables, ctx),
            "attacks": attack_tables(tables, ctx, clone), "timing": timing_tables(tables),
            "cost": training_cost_tables(tables), "others": other_defense_tables(tables, ctx, clone),
            "detection": detection_tables(tables)}
