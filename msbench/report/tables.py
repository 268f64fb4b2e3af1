"""The report's tables, built once from the run tables and rendered twice (LaTeX and HTML).

Each cell carries its plain text, its LaTeX and a sort key, so both renderings show the same
numbers. Formats follow the InI paper: accuracies in percent with two decimals, relative
performance as ``79.55(0.84x)``; with several seeds, ``mean±h`` where h is the half-width of the
95% confidence interval of the mean (Student t over the seeds that finished). A cell whose every
seed failed shows ``--``; one still planned shows ``pending``; a combination no run covered stays
empty. ``†`` marks a victim whose benign accuracy is more than the tolerance below Vanilla's: it is
never bold, since a defense that breaks its own model has not defended it.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import pandas as pd

from msbench.report.data import (PENDING, RunTables, attack_label, benign_check, benign_summary, dataset_label,
                                 defense_label, in_order, is_paper_defense, is_pool_attack, mode_label, order_attacks,
                                 order_defenses, split_variant, summarise)
from msbench.report.latex import escape
from msbench.report import verdict

FAILED = "--"
COLLAPSED_MARK = "†"


@dataclass
class Cell:
    text: str
    latex: str
    sort: float | str | None = None
    bold: bool = False
    eligible: bool = True  # may be bold as "best" (False for Vanilla and collapsed victims)
    kind: str = ""  # "failed", "pending" or "": a CSS class in HTML

    @classmethod
    def label(cls, text: str) -> "Cell":
        return cls(text, escape(text), text)

    @classmethod
    def empty(cls) -> "Cell":
        return cls("", "", None)

    @classmethod
    def failed(cls) -> "Cell":
        return cls(FAILED, FAILED, None, kind="failed")

    @classmethod
    def pending(cls) -> "Cell":
        return cls(PENDING, rf"\textit{{{PENDING}}}", None, kind="pending")


@dataclass
class Table:
    key: str  # anchor in HTML, label suffix in LaTeX
    title: str
    caption: str
    columns: list[str]  # leaf headers; the first names the row labels
    rows: list[list[Cell]]
    groups: list[tuple[str, int]] = field(default_factory=list)  # spanning headers over the data columns
    wide: bool = False


def _finite(value) -> bool:
    try:
        return value is not None and not pd.isna(value) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def fmt_value(mean: float, spread: float | None = None, digits: int = 2) -> tuple[str, str]:
    """(text, latex) of ``mean`` or ``mean±spread`` (the spread is a 95% CI half-width)."""
    text = f"{mean:.{digits}f}"
    if spread is not None and _finite(spread):
        return f"{text}±{spread:.{digits}f}", f"{text}$\\pm${spread:.{digits}f}"
    return text, text


def _with_progress(cell: Cell, n_ok: int, n_failed: int, n_pending: int) -> Cell:
    """``93.25 (1/3 seeds)`` when some seeds of the cell are still pending or failed."""
    if n_pending or n_failed:
        note = f" ({n_ok}/{n_ok + n_failed + n_pending} seeds)"
        cell.text += note
        cell.latex += escape(note)
    return cell


def _mark_collapsed(cell: Cell) -> Cell:
    cell.text += COLLAPSED_MARK
    cell.latex += r"$^\dagger$"
    cell.eligible = False
    return cell


def accuracy_cell(mean: float, ci: float | None, n: int, n_pending: int = 0) -> Cell:
    if n == 0 or not _finite(mean):
        return Cell.pending() if n_pending else Cell.failed()
    text, latex = fmt_value(mean, ci)
    return _with_progress(Cell(text, latex, round(float(mean), 2)), n, 0, n_pending)


def attack_cell(row: pd.Series | None) -> Cell:
    """``79.55(0.84x)``: clone accuracy (mean±CI over seeds) and mean relative performance."""
    if row is None:
        return Cell.empty()
    if row["n_ok"] == 0 or not _finite(row["clone_mean"]):
        return Cell.pending() if row["n_pending"] else Cell.failed()
    text, latex = fmt_value(row["clone_mean"], row["clone_ci"])
    rel = row["rel_mean"]
    if _finite(rel):
        text, latex = f"{text}({rel:.2f}×)", f"{latex}({rel:.2f}$\\times$)"
    return _with_progress(Cell(text, latex, round(float(row["clone_mean"]), 2)), int(row["n_ok"]), int(row["n_failed"]),
                          int(row["n_pending"]))


def _bold_lowest(rows: list[list[Cell]]) -> None:
    """Bold, per column, the lowest shown clone accuracy among the eligible cells (ties all bold): lower
    is a better defense, but only a defense that kept its benign accuracy (not Vanilla, not collapsed)."""
    if not rows:
        return
    for j in range(1, len(rows[0])):
        shown = [r[j] for r in rows if isinstance(r[j].sort, float)]
        values = [c.sort for c in shown if c.eligible]
        if len(shown) < 2 or not values:  # nothing to compare against
            continue
        best = min(values)
        for c in shown:
            if c.eligible and c.sort == best:
                c.bold = True


def slug(*parts: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", "-".join(str(p) for p in parts).lower()).strip("-")


def _lookup(summary: pd.DataFrame, **keys) -> pd.Series | None:
    mask = pd.Series(True, index=summary.index)
    for column, value in keys.items():
        mask &= summary[column] == value
    hit = summary[mask]
    return None if hit.empty else hit.iloc[0]


def seeds_note(results: pd.DataFrame) -> str:
    seeds = in_order(results.loc[results["status"] == "ok", "seed"]) if not results.empty else []
    if len(seeds) > 1:
        return (f" With several seeds, a cell reads mean±h: the mean over the seeds that finished ({len(seeds)} seeds "
                f"in these runs) and h the half-width of its 95% confidence interval (Student t).")
    return ""


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

    def mark(self, cell: Cell, dataset: str, arch: str, defense: str) -> Cell:
        if cell.sort is None:
            return cell
        if self.collapsed(dataset, arch, defense):
            return _mark_collapsed(cell)
        cell.eligible = self.eligible(dataset, arch, defense)
        return cell

    def notes(self) -> str:
        """The caption's closing notes: the collapse mark and, for a partial run, its progress."""
        text = (f" {COLLAPSED_MARK}: benign accuracy more than {points(self.tolerance)} below Vanilla's (the suite's "
                f"run.match_benign): a collapsed victim, never bold; Vanilla is the reference, never bold.")
        if self.progress.partial:
            text += f" {self.progress.sentence()} Pending cells read 'pending'."
        return text


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
            row = [Cell.label(defense_label(defense))]
            for dataset in datasets:
                hit = _lookup(summary, dataset=dataset, arch=arch, defense=defense)
                cell = Cell.empty() if hit is None else accuracy_cell(hit["benign_mean"], hit["benign_ci"], hit["n"], hit["n_pending"])
                row.append(ctx.mark(cell, dataset, arch, defense))
            rows.append(row)
        out.append(Table(slug("benign", arch), f"Benign accuracy ({arch})",
                         f"Benign accuracy (%) of each defense on the victim's test set ({arch}).{seeds_note(frame)}{ctx.notes()}",
                         ["Defense"] + [dataset_label(d) for d in datasets], rows))
    return out


def _clone_rows(summary: pd.DataFrame, ctx: Context, defenses: list[str], columns: list[tuple[str, str]], fixed: dict,
                outer_key: str) -> list[list[Cell]]:
    rows = []
    for defense in defenses:
        row = [Cell.label(defense_label(defense))]
        for outer, mode in columns:
            keys = {"defense": defense, "label_mode": mode, outer_key: outer, **fixed}
            cell = attack_cell(_lookup(summary, **keys))
            row.append(ctx.mark(cell, keys["dataset"], keys["arch"], defense))
        rows.append(row)
    _bold_lowest(rows)
    return rows


def _grouped_headers(columns: list[tuple[str, str]], outer_label) -> tuple[list[tuple[str, int]], list[str]]:
    groups: list[tuple[str, int]] = []
    for outer, _ in columns:
        label = outer_label(outer)
        if groups and groups[-1][0] == label:
            groups[-1] = (label, groups[-1][1] + 1)
        else:
            groups.append((label, 1))
    return groups, [mode_label(mode) for _, mode in columns]


def label_only_note(attacks: list[str]) -> str:
    """The caption sentence on the label-only bound, when a pool attack's hard-label mode is among ``attacks``."""
    pools = [attack_label(a) for a in in_order(attacks) if is_pool_attack(a)]
    if not pools:
        return ""
    return (f" {', '.join(pools)} hard-label is the label-only bound: it learns from top-1 labels of natural images only, "
            f"so a defense that preserves every answer's argmax cannot change what it receives and cannot push its clone "
            f"accuracy lower.")


def attack_tables(tables: RunTables, ctx: Context) -> list[Table]:
    """Tables 2/3: per attack (and arch), clone accuracy (relative performance) per defense x (dataset, label mode).

    Every defense of the runs is a row, the paper's first and in its order, then any other
    (ablations, third-party defenses), so one table compares them all.
    """
    results = tables.results
    if results.empty:
        return []
    summary = summarise(results)
    out = []
    for attack in order_attacks(results["attack"]):
        for arch in in_order(results["arch"]):
            frame = results[(results["attack"] == attack) & (results["arch"] == arch)]
            if frame.empty:
                continue
            columns = in_order(zip(frame["dataset"], frame["label_mode"]))
            columns = sorted(columns, key=lambda c: in_order(frame["dataset"]).index(c[0]))
            groups, leaves = _grouped_headers(columns, dataset_label)
            rows = _clone_rows(summary, ctx, order_defenses(frame["defense"]), columns, {"attack": attack, "arch": arch}, "dataset")
            bound = label_only_note([attack]) if "hard" in set(frame["label_mode"]) else ""
            out.append(Table(slug("clone", attack, arch), f"{attack_label(attack)} ({arch})",
                             f"{attack_label(attack)} attack ({arch}): clone accuracy (%) and relative "
                             f"performance (clone / benign accuracy) on the victim's test set. Lower is a better defense; "
                             f"the lowest clone accuracy per column among the defenses that kept their benign accuracy is "
                             f"in bold.{bound}{seeds_note(frame)}{ctx.notes()}",
                             ["Defense"] + leaves, rows, groups, wide=len(leaves) > 4))
    return out


def other_defense_tables(tables: RunTables, ctx: Context) -> list[Table]:
    """Table 5 style: when the runs hold defenses beyond the paper's (e.g. InI ablations), one table per
    dataset (and arch) comparing them with Vanilla and InI across attack x label mode."""
    results = tables.results
    if results.empty:
        return []
    others = [d for d in order_defenses(results["defense"]) if not is_paper_defense(d)]
    if not others:
        return []
    summary = summarise(results)
    out = []
    for dataset in in_order(results["dataset"]):
        for arch in in_order(results["arch"]):
            frame = results[(results["dataset"] == dataset) & (results["arch"] == arch)]
            present = set(frame["defense"])
            if not present & set(others):
                continue
            references = [d for d in order_defenses(present) if split_variant(d)[0] == "vanilla"]
            inis = [d for d in order_defenses(present) if split_variant(d)[0] == "ini"]
            defenses = references + [d for d in others if d in present] + inis
            attacks = order_attacks(frame["attack"])
            columns = sorted(in_order(zip(frame["attack"], frame["label_mode"])), key=lambda c: attacks.index(c[0]))
            groups, leaves = _grouped_headers(columns, attack_label)
            rows = _clone_rows(summary, ctx, defenses, columns, {"dataset": dataset, "arch": arch}, "attack")
            out.append(Table(slug("other", dataset, arch), f"Further defenses on {dataset_label(dataset)} ({arch})",
                             f"Defenses beyond the paper's main table (e.g. InI ablations) on {dataset_label(dataset)} "
                             f"({arch}), next to Vanilla and InI: clone accuracy (%) and relative performance. "
                             f"Lower is better; the lowest per column among the eligible defenses is in bold."
                             f"{seeds_note(frame)}{ctx.notes()}",
                             ["Defense"] + leaves, rows, groups, wide=len(leaves) > 4))
    return out


def points(tolerance: float) -> str:
    """``1 point``, ``0.5 points``: the tolerance as a caption says it."""
    return f"{tolerance:g} point" + ("" if tolerance == 1 else "s")


def _fmt_budget(value) -> str:
    return f"{int(value):,}" if _finite(value) else "?"


def worst_case_tables(tables: RunTables, ctx: Context) -> list[Table]:
    """The headline: per dataset x arch (x budget), each defense's worst case over every attack and label mode."""
    frame = verdict.worst_case(tables)
    if frame.empty:
        return []
    out = []
    split = frame["budget"].notna().any()
    for key, group in frame.groupby(["dataset", "arch"] + (["budget"] if split else []), sort=False, dropna=False):
        dataset, arch = key[0], key[1]
        budget = f", budget {_fmt_budget(key[2])} queries" if split else ""
        rows = []
        for r in group.itertuples():
            rank = str(r.rank) if not pd.isna(r.rank) else {"reference": "ref.", "collapsed": COLLAPSED_MARK}.get(r.standing, "")
            benign = accuracy_cell(r.benign_mean, r.benign_ci, 1 if _finite(r.benign_mean) else 0,
                                   0 if _finite(r.benign_mean) else 1)
            if r.standing == verdict.COLLAPSED:
                _mark_collapsed(benign)
            if r.settings_finished == 0:
                clone = Cell.pending() if not r.complete and r.settings_total else Cell.failed()
                attack = Cell.empty()
            else:
                text, latex = fmt_value(r.clone_mean, r.clone_ci)
                if _finite(r.rel_mean):
                    text, latex = f"{text}({r.rel_mean:.2f}×)", f"{latex}({r.rel_mean:.2f}$\\times$)"
                if not r.complete:  # pending or failed settings might still beat it
                    text, latex = f"≥{text}", f"$\\geq${latex}"
                # "best" needs the whole battery: a worst case with settings pending or failed may still rise
                clone = Cell(text, latex, round(float(r.clone_mean), 2), eligible=r.standing == verdict.RANKED and r.complete)
                attack = Cell.label(f"{attack_label(r.attack)} {mode_label(r.label_mode)}")
            settings = Cell(f"{r.settings_finished}/{r.settings_total}", f"{r.settings_finished}/{r.settings_total}",
                            float(r.settings_finished))
            rows.append([Cell.label(defense_label(r.defense)), Cell.label(rank), benign, clone, attack, settings])
        ranked = [row[3] for row in rows if row[3].eligible and isinstance(row[3].sort, float)]
        if ranked and len([row for row in rows if isinstance(row[3].sort, float)]) >= 2:
            best = min(c.sort for c in ranked)
            for c in ranked:
                c.bold = c.sort == best
        attacks = in_order(tables.results.loc[(tables.results["dataset"] == dataset) & (tables.results["arch"] == arch), "attack"])
        hard = set(tables.results.loc[(tables.results["dataset"] == dataset) & (tables.results["arch"] == arch), "label_mode"])
        scope = tables.results[(tables.results["dataset"] == dataset) & (tables.results["arch"] == arch)]
        out.append(Table(slug("worst", dataset, arch, *(key[2:] if split else [])),
                         f"Worst case on {dataset_label(dataset)} ({arch}{budget})",
                         f"Worst case over every attack and label mode of the runs on {dataset_label(dataset)} ({arch}{budget}): "
                         f"for each defense, the highest clone accuracy (%) and its relative performance, the attack setting "
                         f"that achieved it, and how many of the attack settings finished. Leaderboard order: defenses whose "
                         f"benign accuracy stays within {points(ctx.tolerance)} of Vanilla's, lowest worst case first (the "
                         f"best in bold, once all its attack settings finished), then Vanilla as the reference"
                         + (f", then collapsed victims ({COLLAPSED_MARK}: benign accuracy more than {points(ctx.tolerance)} "
                            f"below Vanilla's)" if (group["standing"] == verdict.COLLAPSED).any() else "") + "."
                         + (" ≥: some attack settings are pending or failed, so the worst case may be higher."
                            if (~group["complete"].astype(bool)).any() else "")
                         + f"{label_only_note(attacks) if 'hard' in hard else ''}{seeds_note(scope)}"
                         + (f" {ctx.progress.sentence()}" if ctx.progress.partial else ""),
                         ["Defense", "Rank", "Benign acc.", "Worst-case clone acc.", "Attack", "Settings done"], rows))
    return out
def cost_model_latex(model: str) -> str:
    """``M_f + C*M_b + S`` -> ``$M_{f} + C\\cdot M_{b} + S$``; anything else is escaped text."""
    if re.fullmatch(r"[A-Za-z0-9_ +*()./-]+", model):
        body = re.sub(r"_(\w+)", r"_{\1}", model).replace("*", "\\cdot ")
        return f"${body}$"
    return escape(model)


def timing_tables(tables: RunTables) -> list[Table]:
    """Table 4: per (dataset, arch, input), each defense's cost model, total seconds and slowdown per batch size."""
    timing = tables.timing
    if timing.empty:
        return []
    out = []
    keys = ["dataset", "arch", "input"]
    for key, frame in timing.groupby(keys, sort=False, dropna=False):
        dataset, arch, inputs = key
        sizes = sorted(int(b) for b in in_order(frame["batch_size"]))
        with_impl = int("implementation" in frame.columns and bool(frame["implementation"].notna().any()))
        rows = []
        for defense in order_defenses(frame["defense"]):
            row = [Cell.label(defense_label(defense))]
            if with_impl:  # official vs fast forms have different cost models
                row.append(Cell.label(", ".join(str(v) for v in in_order(frame.loc[frame["defense"] == defense, "implementation"].dropna()))))
            for size in sizes:
                hit = frame[(frame["defense"] == defense) & (frame["batch_size"] == size)]
                if hit.empty or not _finite(hit["total_seconds"].mean()):
                    row += [Cell.empty(), Cell.failed() if not hit.empty else Cell.empty(), Cell.empty()]
                    continue
                model = str(hit["cost_model"].dropna().iloc[0]) if hit["cost_model"].notna().any() else ""
                seconds, slowdown = float(hit["total_seconds"].mean()), hit["slowdown"].mean()
                row.append(Cell(model, cost_model_latex(model) if model else "", model))
                row.append(Cell(fmt_seconds(seconds), fmt_seconds(seconds), seconds))
                row.append(Cell(f"{slowdown:.2f}×", f"{slowdown:.2f}$\\times$", float(slowdown)) if _finite(slowdown) else Cell.empty())
            rows.append(row)
        repeats = ", ".join(str(int(r)) for r in in_order(frame["repeats"].dropna()))
        devices = ", ".join(str(d) for d in in_order(frame["device"].dropna()))
        groups = [("", 1)] * with_impl + [(f"Batch size {size}" if size > 1 else "Single query", 3) for size in sizes]
        leaves = ["Implementation"] * with_impl + ["Cost model", "Time (s)", "Slowdown"] * len(sizes)
        out.append(Table(slug("timing", dataset, arch, inputs), f"Inference time: {dataset_label(dataset)}, {arch}, {inputs} inputs",
                         f"Inference time of each defense ({dataset_label(dataset)}, {arch}, {inputs} inputs): the paper's "
                         f"cost model, total seconds over {repeats or '?'} repeated queries on {devices or 'an unrecorded device'}, "
                         f"and the slowdown relative to Vanilla.",
                         ["Defense"] + leaves, rows, groups, wide=True))
    return out


def fmt_seconds(value: float) -> str:
    """Seconds as the paper prints them (471.7), with more digits for the short times of small models."""
    return f"{value:.1f}" if value >= 100 else f"{value:.2f}" if value >= 1 else f"{value:#.3g}"


def all_tables(tables: RunTables) -> dict[str, list[Table]]:
    """Every table of the report by section: the worst-case verdict first, then the paper's order."""
    ctx = Context(tables)
    return {"worst": worst_case_tables(tables, ctx), "benign": benign_tables(tables, ctx),
            "attacks": attack_tables(tables, ctx), "timing": timing_tables(tables), "others": other_defense_tables(tables, ctx)}
