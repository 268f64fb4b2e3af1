"""Attack settings that steal nothing, so say nothing about defenses.

An attack whose clone of the undefended victim stays far below that victim's accuracy (FashionMNIST
KnockoffNets with a poor surrogate, say) cannot show a defense working: every defense looks good
against it. A setting (dataset, arch, attack, label mode) is *uninformative* when Vanilla's mean
relative performance under it is below the runs' ``report.uninformative_below`` (default 0.5). It is
marked wherever it appears and never bolds a defense. It still counts in the worst case: where it
is a defense's strongest attack (every informative attack stole even less), the worst-case row
names it, marked, and is not bold.
"""
from __future__ import annotations

import pandas as pd

from msbench.report.labels import is_reference, reference_of
from msbench.report.stats import finite

Setting = tuple[str, str, str, str, str]
"""(dataset, arch, attack, label mode, reference row): the reference row is ``vanilla`` or, for
runs kept apart, ``vanilla@run``, so each defense is judged by its own run's Vanilla."""


def uninformative_settings(summary: pd.DataFrame, threshold: float) -> dict[Setting, float]:
    """Every uninformative setting of ``summary`` (``stats.summarise``) with Vanilla's relative performance under it."""
    if summary.empty:
        return {}
    reference = summary[[is_reference(d) for d in summary["defense"]]]
    return {(r.dataset, r.arch, r.attack, r.label_mode, r.defense): float(r.rel_mean)
            for r in reference.itertuples() if finite(r.rel_mean) and r.rel_mean < threshold}


def is_uninformative(flags: dict[Setting, float], dataset: str, arch: str, attack: str, label_mode: str, defense: str,
                     present=None) -> bool:
    """Whether ``defense``'s cell of this setting is judged against an uninformative attack (its run's
    Vanilla; ``present``: the defense names of the tables, see ``labels.reference_of``)."""
    return (dataset, arch, attack, label_mode, reference_of(defense, present)) in flags
