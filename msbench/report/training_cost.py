"""The training-cost table (paper Table B.1): each defense's victim training time relative to
Vanilla's trained on the same device.

A victim's cost is its record's ``victim_seconds``, the training of its whole defense chain (AM:
the outlier-exposure victim and the misinformation model; InI + MAD: InI's victim and MAD's
surrogate), averaged over the seeds, divided by the reference defense's mean on the same dataset,
architecture and device (``victim_device``). Times measured on different machines, or with
different thread counts, are never divided by each other. Records made before victims recorded
their device show "not recorded" instead of a ratio, since their seconds may come from another
machine than Vanilla's.
"""
from __future__ import annotations

import pandas as pd

from msbench.report.labels import dataset_label, defense_label, in_order, order_defenses, reference_of
from msbench.report.runs import RunTables
from msbench.report.stats import finite
from msbench.report.table_entry import Table, TableEntry, fmt_seconds, slug

NOT_RECORDED = "not recorded"
NO_REFERENCE = "no reference on this device"
_VICTIM = ["dataset", "arch", "defense", "seed"]


def victim_costs(results: pd.DataFrame) -> pd.DataFrame:
    """One row per trained victim (dataset, arch, defense, seed): its chain's training seconds and
    device ("" when not recorded). Every cell of a victim carries the same numbers; swept cells
    (a tunable's grid over the same victim) and unfinished cells add nothing."""
    frame = results[(results["status"] == "ok") & results["setting"].isna()]
    frame = frame[frame["victim_seconds"].map(finite)]
    device = frame["victim_device"].astype("string").fillna("")
    frame = frame.assign(victim_device=device)
    return frame.drop_duplicates(_VICTIM + ["victim_device"])[_VICTIM + ["victim_seconds", "victim_device"]]


def cost_cell(costs: pd.DataFrame, defense: str, reference: str, dataset: str, arch: str, device: str) -> TableEntry:
    """``12.15× (845.2 s)``: the defense's mean training time over its reference's on one device."""
    mine = costs[(costs["defense"] == defense) & (costs["dataset"] == dataset) & (costs["arch"] == arch)
                 & (costs["victim_device"] == device)]
    if mine.empty:
        return TableEntry.empty()
    if device == "":
        return TableEntry(NOT_RECORDED, f"\\textit{{{NOT_RECORDED}}}", None, kind="pending")
    base = costs[(costs["defense"] == reference) & (costs["dataset"] == dataset) & (costs["arch"] == arch)
                 & (costs["victim_device"] == device)]
    seconds = float(mine["victim_seconds"].mean())
    if base.empty or not float(base["victim_seconds"].mean()) > 0:
        return TableEntry(f"{NO_REFERENCE} ({fmt_seconds(seconds)} s)",
                          f"\\textit{{{NO_REFERENCE}}} ({fmt_seconds(seconds)} s)", None)
    ratio = seconds / float(base["victim_seconds"].mean())
    seeds = f", {len(mine)} seeds" if len(mine) > 1 else ""
    return TableEntry(f"{ratio:.2f}× ({fmt_seconds(seconds)} s{seeds})",
                      f"{ratio:.2f}$\\times$ ({fmt_seconds(seconds)} s{seeds})", ratio)


def training_cost_tables(tables: RunTables) -> list[Table]:
    """Per architecture: defenses (rows) x (dataset, training device) (columns), each a training-time ratio."""
    results = tables.results
    if results.empty:
        return []
    costs = victim_costs(results)
    if costs.empty:
        return []
    out = []
    for arch in in_order(costs["arch"]):
        frame = costs[costs["arch"] == arch]
        columns = [(dataset, device) for dataset in in_order(frame["dataset"])
                   for device in in_order(frame.loc[frame["dataset"] == dataset, "victim_device"])]
        groups = [(dataset_label(dataset), sum(1 for d, _ in columns if d == dataset))
                  for dataset in in_order(d for d, _ in columns)]
        rows = []
        for defense in order_defenses(frame["defense"]):
            reference = reference_of(defense)
            rows.append([TableEntry.label(defense_label(defense))]
                        + [cost_cell(frame, defense, reference, dataset, arch, device) for dataset, device in columns])
        leaves = [device or f"device {NOT_RECORDED}" for _, device in columns]
        out.append(Table(slug("training-cost", arch), f"Training cost ({arch})",
                         f"Training time of each defense's victim relative to Vanilla's on the same device ({arch}; "
                         f"paper Table B.1), with the mean training seconds over seeds. A victim's time covers its "
                         f"whole defense chain (e.g. AM's base victim and misinformation model). Times from different "
                         f"devices or thread counts are not compared; \"{NOT_RECORDED}\": the records predate the "
                         f"training device's record.",
                         ["Defense"] + leaves, rows, groups, wide=len(leaves) > 4))
    return out
