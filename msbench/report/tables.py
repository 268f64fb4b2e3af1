"""The report's tables, built once from the run tables and rendered twice (LaTeX and HTML): the
worst-case verdict, benign accuracy (paper Table 1), clone accuracy per attack (Tables 2/3),
inference time (Table 4), training cost (Table B.1, ``training_cost``) and further defenses (Table 5 style). Cells and formats: ``cell``."""
from __future__ import annotations

import pandas as pd

from msbench.report import verdict
from msbench.report.cell import (COLLAPSED_MARK, Cell, Table, accuracy_cell, attack_cell, bold_lowest, cost_model_latex,
                                 finite, fmt_budget, fmt_seconds, fmt_value, mark_collapsed, points, slug)
from msbench.report.context import Context, label_only_note, lookup, seeds_note
from msbench.report.labels import (attack_label, dataset_label, defense_label, in_order, is_ablation_reference,
                                   is_paper_defense, is_reference, mode_label, order_attacks, order_defenses)
from msbench.report.runs import RunTables
from msbench.report.stats import benign_summary, summarise
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
            row = [Cell.label(defense_label(defense))]
            for dataset in datasets:
                hit = lookup(summary, dataset=dataset, arch=arch, defense=defense)
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
            cell = attack_cell(lookup(summary, **keys))
            row.append(ctx.mark(cell, keys["dataset"], keys["arch"], defense))
        rows.append(row)
    bold_lowest(rows)
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
            references = [d for d in order_defenses(present) if is_reference(d)]
            ablated = [d for d in order_defenses(present) if is_ablation_reference(d)]
            defenses = references + [d for d in others if d in present] + ablated
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
            rank = str(r.rank) if not pd.isna(r.rank) else {"reference": "ref.", "collapsed": COLLAPSED_MARK}.get(r.standing, "")
            benign = accuracy_cell(r.benign_mean, r.benign_ci, 1 if finite(r.benign_mean) else 0,
                                   0 if finite(r.benign_mean) else 1)
            if r.standing == verdict.COLLAPSED:
                mark_collapsed(benign)
            if r.settings_finished == 0:
                clone = Cell.pending() if not r.complete and r.settings_total else Cell.failed()
                attack = Cell.empty()
            else:
                text, latex = fmt_value(r.clone_mean, r.clone_ci)
                if finite(r.rel_mean):
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
                if hit.empty or not finite(hit["total_seconds"].mean()):
                    row += [Cell.empty(), Cell.failed() if not hit.empty else Cell.empty(), Cell.empty()]
                    continue
                model = str(hit["cost_model"].dropna().iloc[0]) if hit["cost_model"].notna().any() else ""
                seconds, slowdown = float(hit["total_seconds"].mean()), hit["slowdown"].mean()
                row.append(Cell(model, cost_model_latex(model) if model else "", model))
                row.append(Cell(fmt_seconds(seconds), fmt_seconds(seconds), seconds))
                row.append(Cell(f"{slowdown:.2f}×", f"{slowdown:.2f}$\\times$", float(slowdown)) if finite(slowdown) else Cell.empty())
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


def all_tables(tables: RunTables) -> dict[str, list[Table]]:
    """Every table of the report by section: the worst-case verdict first, then the paper's order."""
    ctx = Context(tables)
    return {"worst": worst_case_tables(tables, ctx), "benign": benign_tables(tables, ctx),
            "attacks": attack_tables(tables, ctx), "timing": timing_tables(tables),
            "cost": training_cost_tables(tables), "others": other_defense_tables(tables, ctx)}
