"""Table 4 of the report: inference time per (dataset, arch, input), from ``timing.csv`` only.

Its own module beside ``tables.py`` (as ``training_cost.py`` holds Table B.1), so each stays one
job and within the line limit; ``tables.all_tables`` puts it in its section."""
from __future__ import annotations

from msbench.report.labels import dataset_label, defense_label, in_order, order_defenses
from msbench.report.runs import RunTables
from msbench.report.table_entry import Table, TableEntry, cost_model_latex, finite, fmt_seconds, slug


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
            row = [TableEntry.label(defense_label(defense))]
            if with_impl:  # official vs fast forms have different cost models
                row.append(TableEntry.label(", ".join(
                    str(v) for v in in_order(frame.loc[frame["defense"] == defense, "implementation"].dropna()))))
            for size in sizes:
                hit = frame[(frame["defense"] == defense) & (frame["batch_size"] == size)]
                if hit.empty or not finite(hit["total_seconds"].mean()):
                    row += [TableEntry.empty(), TableEntry.failed() if not hit.empty else TableEntry.empty(),
                            TableEntry.empty()]
                    continue
                model = str(hit["cost_model"].dropna().iloc[0]) if hit["cost_model"].notna().any() else ""
                seconds, slowdown = float(hit["total_seconds"].mean()), hit["slowdown"].mean()
                row.append(TableEntry(model, cost_model_latex(model) if model else "", model))
                row.append(TableEntry(fmt_seconds(seconds), fmt_seconds(seconds), seconds))
                row.append(TableEntry(f"{slowdown:.2f}×", f"{slowdown:.2f}$\\times$",
                                      float(slowdown)) if finite(slowdown) else TableEntry.empty())
            rows.append(row)
        repeats = ", ".join(str(int(r)) for r in in_order(frame["repeats"].dropna()))
        devices = ", ".join(str(d) for d in in_order(frame["device"].dropna()))
        groups = [("", 1)] * with_impl + [(f"Batch size {size}" if size > 1 else "Single query", 3) for size in sizes]
        leaves = ["Implementation"] * with_impl + ["Cost model", "Time (s)", "Slowdown"] * len(sizes)
        out.append(Table(slug("timing", dataset, arch, inputs),
                         f"Inference time: {dataset_label(dataset)}, {arch}, {inputs} inputs",
                         f"Inference time of each defense ({dataset_label(dataset)}, {arch}, {inputs} inputs): the "
                         f"paper's cost model, total seconds over {repeats or '?'} repeated queries on "
                         f"{devices or 'an unrecorded device'}, and the slowdown relative to Vanilla.",
                         ["Defense"] + leaves, rows, groups, wide=True))
    return out
