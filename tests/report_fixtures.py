"""Hand-written run directories for the report tests: a full matrix of plausible numbers, no training.

``full_run`` writes results.csv, curves.csv and suite.json for datasets x defenses x attacks x label
modes x seeds, with one victim whose benign accuracy collapsed (InI on FashionMNIST by default), so
tests can check bolding, marking, merging, partial runs and figures against known inputs.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from msbench.runner.results import CURVE_COLUMNS, RESULT_COLUMNS

DEFENSES = ["vanilla", "mad", "am", "edm", "ini", "ini+mad", "ini+am"]
CURVE_POINTS = {"knockoff": [1000, 2000, 4000], "jbda": [150, 300, 600, 1200, 2400, 4800]}


def suite_json(name: str, datasets, defenses, attacks, modes, seeds, match_benign: float | None = 1.0,
               budgets: dict[str, int] | None = None) -> dict:
    budgets = budgets or {"knockoff": 4000, "jbda": 4800}
    return {"name": name, "description": "hand-written tables",
            "matrix": {"datasets": list(datasets), "archs": ["smallcnn"], "defenses": list(defenses), "attacks": list(attacks),
                       "label_modes": list(modes), "seeds": list(seeds)},
            "run": {"device": "cpu", "train_subset": 6000, "test_subset": 2000, "val_fraction": 0.1, "match_benign": match_benign},
            "defenses": {d: {"config": {}, "recipe": {"epochs": 5}} for d in {p for d in defenses for p in d.split("+")} | {"vanilla"}},
            "attacks": {a: {"config": {"budget": budgets.get(a, 4000)}, "recipe": {"epochs": 5}} for a in attacks},
            "datasets": {d: {"surrogate": "emnist-letters"} for d in datasets}}


def presentation(defenses: dict[str, dict] | None = None, attacks: dict[str, dict] | None = None) -> dict:
    """A suite.json ``presentation`` section as a run records it: each entry's fields filled with what a
    plugin that declares nothing shows, then those given (e.g. ``{"mad": {"label": "MAD v2"}}``)."""
    blank = {"color": None, "paper_order": None}
    return {"defenses": {n: {"label": n, **blank, "reference": False, "ablation_reference": False, "default_base": None,
                             "color_over_base": None, **entry} for n, entry in (defenses or {}).items()},
            "attacks": {n: {"label": n, **blank, "roles": [], **entry} for n, entry in (attacks or {}).items()}}


def full_results(datasets=("mnist", "fashionmnist"), defenses=DEFENSES, attacks=("knockoff", "jbda"), modes=("soft", "hard"),
                 seeds=(0, 1), collapsed=(("fashionmnist", "ini"),), seed: int = 3, budgets: dict[str, int] | None = None,
                 tag: str = "") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Results and curves of a full matrix; a collapsed victim's benign accuracy is 8.5%, its clones ~9%."""
    budgets = budgets or {"knockoff": 4000, "jbda": 4800}
    rng = np.random.default_rng(seed)
    rows, points = [], []
    strength = {d: 0.1 * i for i, d in enumerate(defenses)}
    for dataset in datasets:
        top = 95.0 if dataset == "mnist" else 78.0
        for defense in defenses:
            for s in seeds:
                benign = top + rng.normal(0, 0.3) - (0.0 if defense == "vanilla" else abs(rng.normal(0, 0.3)))
                if (dataset, defense.split("+")[0]) in collapsed:
                    benign = 8.5 + rng.normal(0, 0.1)
                for attack in attacks:
                    for mode in modes:
                        clone = benign * (0.97 - strength[defense] * (0.9 if mode == "soft" else 0.6)
                                          - (0.05 if attack == "jbda" else 0.0)) + rng.normal(0, 1.0)
                        clone = float(np.clip(clone, 5, benign + 1))
                        cell_id = f"{tag}{dataset}-{defense}-{attack}-{mode}-{s}"
                        rows.append(dict(dataset=dataset, arch="smallcnn", defense=defense, attack=attack, label_mode=mode,
                                         seed=s, budget=budgets[attack], queries=budgets[attack], benign_acc=benign,
                                         clone_acc=clone, relative_perf=clone / benign, fidelity=clone + 1, status="ok",
                                         error="", surrogate="emnist-letters", tuned="", victim_seconds=1.0,
                                         attack_seconds=1.0, notes="", cell_id=cell_id))
                        for q in CURVE_POINTS.get(attack, []):
                            if q <= budgets[attack]:
                                points.append(dict(dataset=dataset, arch="smallcnn", defense=defense, attack=attack,
                                                   label_mode=mode, seed=s, queries=q,
                                                   clone_acc=clone * (q / budgets[attack]) ** 0.3 + rng.normal(0, 0.5)))
    return pd.DataFrame(rows, columns=RESULT_COLUMNS), pd.DataFrame(points, columns=CURVE_COLUMNS)


def write_run(path: Path, results: pd.DataFrame, curves: pd.DataFrame | None = None, suite: dict | str | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    results.to_csv(path / "results.csv", index=False)
    (curves if curves is not None else pd.DataFrame(columns=CURVE_COLUMNS)).to_csv(path / "curves.csv", index=False)
    if suite is not None:
        (path / "suite.json").write_text(suite if isinstance(suite, str) else json.dumps(suite, indent=1))
    return path


def full_run(path: Path, name: str = "full", **kwargs) -> Path:
    """A run directory of ``full_results(**kwargs)`` with its suite.json."""
    results, curves = full_results(**kwargs)
    keys = {k: kwargs.get(k, default) for k, default in (("datasets", ("mnist", "fashionmnist")), ("defenses", DEFENSES),
                                                          ("attacks", ("knockoff", "jbda")), ("modes", ("soft", "hard")),
                                                          ("seeds", (0, 1)))}
    return write_run(path, results, curves, suite_json(name, keys["datasets"], keys["defenses"], keys["attacks"], keys["modes"],
                                                       keys["seeds"], budgets=kwargs.get("budgets")))


def significantly_below(a: dict[int, float], b: dict[int, float]) -> bool:
    """``a`` below ``b`` as docs/report.md says the report decides it, from scipy's tests: paired t over
    the seeds both have (two or more), Welch t otherwise, the means where a side has one seed."""
    shared = sorted(set(a) & set(b))
    if len(shared) >= 2:
        p, lower = stats.ttest_rel([a[s] for s in shared], [b[s] for s in shared]).pvalue, np.mean([a[s] - b[s] for s in shared]) < 0
    elif len(a) < 2 or len(b) < 2:
        return np.mean(list(a.values())) < np.mean(list(b.values()))
    else:
        p = stats.ttest_ind(list(a.values()), list(b.values()), equal_var=False).pvalue
        lower = np.mean(list(a.values())) < np.mean(list(b.values()))
    return bool(p < 0.05 and lower)


def separated_best(samples: dict[str, dict[int, float]]) -> set[str]:
    """The entries to bold (docs/report.md): none significantly below them, and below at least one other."""
    return {x for x in samples if not any(significantly_below(samples[y], samples[x]) for y in samples if y != x)
            and any(significantly_below(samples[x], samples[y]) for y in samples if y != x)}
