"""The sentences that open the report: per dataset, architecture and label mode, which defenses are
separable from Vanilla under their worst case, by how much, with what interval and how many seeds.

"No defense is separable from Vanilla" is a valid verdict and is said as plainly as any other. A
defense whose benign accuracy collapsed is named as not compared (benign accuracy is matched before
robustness is compared); an uninformative attack setting (``informative``) is named too.
"""
from __future__ import annotations

import pandas as pd

from msbench.report.detection import detection_sentences
from msbench.report.informative import uninformative_settings
from msbench.report.labels import attack_label, dataset_label, defense_label, in_order, is_reference, mode_label
from msbench.report.runs import RunTables
from msbench.report.stats import finite, summarise
from msbench.report.verdict import COLLAPSED, RANKED, worst_case

MODE_WORDS = {"soft": "soft labels", "hard": "hard labels"}


def _difference(row) -> str:
    """``AM (-8.12 points [-12.01, -4.23])``: the worst case minus Vanilla's, with its 95% interval."""
    bounds = f" [{row.vs_reference_low:+.2f}, {row.vs_reference_high:+.2f}]" if finite(row.vs_reference_low) else ""
    return f"{defense_label(row.defense)} ({row.vs_reference:+.2f} points{bounds})"


def _names(rows) -> str:
    names = [defense_label(r.defense) for r in rows]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _seeds(group: pd.DataFrame) -> str:
    """``n = 3`` (with the tests used), over the rows the sentence compares, or every row where none is compared."""
    compared = group["standing"].isin([RANKED, "reference"])
    counts = sorted({int(n) for n in group.loc[compared if compared.any() else group.index, "n"] if n > 0})
    if not counts:
        return "no finished seed"
    ranked = group[group["standing"] == RANKED]
    tests = sorted({t for t in ranked["vs_reference_test"] if t and t != "none"})
    seeds = f"n = {counts[0]}" if len(counts) == 1 else f"n differs between rows: {counts[0]}-{counts[-1]} seeds"
    return f"{seeds}; {', '.join(tests)}" if tests else seeds


def group_sentence(group: pd.DataFrame, lead: str, flags: dict, threshold: float) -> str:
    """One sentence for one (dataset, arch[, budget], label mode) group of ``worst_case``."""
    ranked = [r for r in group.itertuples() if r.standing == RANKED]
    tested = [r for r in ranked if r.vs_reference_test not in ("", "none")]
    lower = [r for r in tested if r.separable and r.vs_reference < 0]
    higher = [r for r in tested if r.separable and r.vs_reference > 0]
    rest = [r for r in ranked if r not in lower and r not in higher]
    parts = []
    has_reference = (group["standing"] == "reference").any()
    if not has_reference:
        parts.append("no Vanilla in this label mode to compare with")
    elif (group["standing"] == "reference").all():
        parts.append(f"Vanilla {group.iloc[0]['clone_mean']:.2f} under its worst case; no defense in these runs "
                     f"to compare")
    elif not ranked:
        parts.append("no defense within the benign-accuracy tolerance to compare with Vanilla")
    elif not tested:
        shown = ", ".join(f"{defense_label(r.defense)} {r.vs_reference:+.2f}" for r in ranked if finite(r.vs_reference))
        parts.append("no test (one seed, or no spread over seeds): no defense is separable from Vanilla; indicative "
                     "differences" + (f" in points: {shown}" if shown else ""))
    elif not lower and not higher:
        parts.append("no defense is separable from Vanilla under its worst case")
    else:
        if lower:
            parts.append(f"{', '.join(_difference(r) for r in lower)} {'is' if len(lower) == 1 else 'are'} "
                         f"separably below Vanilla under {'its' if len(lower) == 1 else 'their'} worst case")
        if higher:
            parts.append(f"{', '.join(_difference(r) for r in higher)} {'is' if len(higher) == 1 else 'are'} separably "
                         f"above {'it' if lower else 'Vanilla under ' + ('its' if len(higher) == 1 else 'their')}"
                         f"{'' if lower else ' worst case'}")
        if rest:
            parts.append(f"{_names(rest)} {'is' if len(rest) == 1 else 'are'} not separable from "
                         f"{'it' if lower or higher else 'Vanilla'}")
    collapsed = [r for r in group.itertuples() if r.standing == COLLAPSED]
    if collapsed:
        parts.append(f"not compared (benign accuracy collapsed): {_names(collapsed)}")
    first = group.iloc[0]
    useless = {attack: rel for (d, a, attack, mode, ref), rel in flags.items()
               if d == first["dataset"] and a == first["arch"] and mode == first["label_mode_filter"]
               and is_reference(ref)}
    if useless:
        parts.append(f"uninformative (clone of Vanilla below {threshold:g} of its benign accuracy): "
                     + ", ".join(f"{attack_label(k)} {rel:.2f}" for k, rel in useless.items()))
    return f"{lead} ({_seeds(group)}): {'; '.join(parts)}."


def verdict_sentences(tables: RunTables) -> list[str]:
    """The report's opening verdict, one sentence per dataset x architecture (x budget) x label mode."""
    results = tables.results
    if results.empty:
        return []
    flags = uninformative_settings(summarise(results), tables.uninformative_below)
    archs = in_order(results["arch"])
    sentences = []
    for mode in in_order(results["label_mode"]):
        frame = worst_case(tables, label_mode=mode)
        split = frame["budget"].notna().any()
        for key, group in frame.groupby(["dataset", "arch"] + (["budget"] if split else []), sort=False, dropna=False):
            where = dataset_label(key[0]) + (f" ({key[1]})" if len(archs) > 1 else "")
            budget = f", {int(key[2]):,} queries" if split else ""
            lead = f"{where}, {MODE_WORDS.get(mode, mode_label(mode))}{budget}"
            sentences.append(group_sentence(group.assign(label_mode_filter=mode), lead, flags,
                                            tables.uninformative_below))
    return sentences + detection_sentences(tables)
