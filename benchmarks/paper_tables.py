"""The InI paper's MNIST and FashionMNIST numbers beside a run's, as the markdown of docs/reproduction.md.

    python benchmarks/paper_tables.py reports/paper-mnist/results.csv > tables.md
    python benchmarks/paper_tables.py reports/paper-mnist/results.csv --seeds reports/paper-mnist-seeds/results.csv \
        reports/paper-mnist-seeds-1/results.csv

Every msbench number in docs/reproduction.md is printed by this script from the committed
``results.csv`` (tests/test_paper_tables.py checks that the doc still contains exactly these
tables), so the doc cannot drift from the run it describes. The paper's numbers are transcribed
from its Tables 1-3 and B.1 (``../shared/reference/ini-paper.md``); clone accuracies are in %, and
the relative performance (clone / benign accuracy) is in parentheses, as in the paper.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from msbench.report import significance
from msbench.report.load import load_results, load_runs
from msbench.report.stats import benign_summary, seed_values, summarise
from msbench.report.verdict import worst_case as report_worst_case
from msbench.report.training_cost import cost_cell, victim_costs

DATASETS = {"mnist": "MNIST", "fashionmnist": "FashionMNIST"}
DEFENSES = {"vanilla": "Vanilla", "mad": "MAD", "am": "AM", "edm": "EDM", "ini": "InI", "ini+mad": "InI + MAD",
            "ini+am": "InI + AM"}
ATTACKS = {"knockoff": "KnockoffNets", "jbda": "JBDA", "knockoff-avg": "KnockoffNets averaged"}
MODES = ("soft", "hard")

# Table 1: benign accuracy (%); the paper gives none for the two integrations.
PAPER_BENIGN = {
    "mnist": {"vanilla": 99.46, "mad": 99.46, "am": 99.41, "edm": 99.43, "ini": 99.40},
    "fashionmnist": {"vanilla": 93.89, "mad": 93.87, "am": 93.67, "edm": 93.70, "ini": 93.36},
}
# Tables 2 (KnockoffNets) and 3 (JBDA): clone accuracy (%), (soft, hard).
PAPER_CLONE = {
    "knockoff": {
        "mnist": {"vanilla": (99.39, 98.84), "mad": (99.31, 99.05), "am": (98.58, 97.14), "edm": (98.90, 97.44),
                  "ini": (89.02, 95.90), "ini+mad": (88.09, 92.50), "ini+am": (88.22, 94.12)},
        "fashionmnist": {"vanilla": (71.58, 57.95), "mad": (68.84, 44.61), "am": (20.77, 14.23), "edm": (21.42, 15.90),
                         "ini": (20.12, 10.82), "ini+mad": (20.18, 10.77), "ini+am": (15.01, 10.27)},
    },
    "jbda": {
        "mnist": {"vanilla": (73.00, 72.77), "mad": (61.69, 72.81), "am": (81.23, 73.17), "edm": (79.34, 78.72),
                  "ini": (57.94, 66.19), "ini+mad": (55.99, 66.09), "ini+am": (56.42, 62.35)},
        "fashionmnist": {"vanilla": (71.09, 67.80), "mad": (57.70, 66.46), "am": (67.73, 66.28), "edm": (70.08, 68.86),
                         "ini": (70.81, 64.99), "ini+mad": (65.63, 64.61), "ini+am": (68.14, 63.72)},
    },
}
# Table B.1: 10 training epochs on CIFAR-10, relative to Vanilla.
PAPER_TRAINING_COST = {"vanilla": 1.00, "am": 3.54, "edm": 8.69, "ini": 12.15}


@dataclass(frozen=True)
class Run:
    """A run's matrix cells (no sweep cells), summarised once by the report's own functions: the mean
    over finished seeds per experiment (NaN where none finished), benign accuracy per victim, and the
    training seconds per victim."""

    results: pd.DataFrame
    experiments: pd.DataFrame  # msbench.report.stats.summarise, indexed by (dataset, defense, attack, label_mode)
    benign: pd.Series  # benign_mean per (dataset, defense)

    def clone(self, dataset: str, defense: str, attack: str, mode: str) -> tuple[float, float]:
        """(clone accuracy, relative performance), NaN where no seed finished or the cell is not in the run."""
        key = (dataset, defense, attack, mode)
        if key not in self.experiments.index:
            return math.nan, math.nan
        row = self.experiments.loc[key]
        return float(row["clone_mean"]), float(row["rel_mean"])

    def benign_acc(self, dataset: str, defense: str) -> float:
        return float(self.benign.get((dataset, defense), math.nan))


def load(*paths: Path) -> Run:
    """The run whose results.csv is ``paths[0]`` (accuracies in %, as results.csv and the paper give
    them), with the cells of further runs of the same suite (more seeds) added; a cell in two runs is refused."""
    results = pd.concat([load_results(path.parent) for path in paths], ignore_index=True)
    results = results[results["setting"].isna()]
    cell = ["dataset", "arch", "defense", "attack", "label_mode", "seed"]
    repeated = results[results.duplicated(cell, keep=False)]
    if not repeated.empty:
        raise ValueError(f"{', '.join(map(str, paths))}: cell {'/'.join(map(str, repeated.iloc[0][cell]))} is in more than one run")
    experiments = summarise(results).set_index(["dataset", "defense", "attack", "label_mode"])
    benign = benign_summary(results).set_index(["dataset", "defense"])["benign_mean"]
    return Run(results, experiments, benign)


def _acc(value: float | None, relative: float | None = None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.2f}" if relative is None else f"{value:.2f} ({relative:.2f}×)"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def seeds_note(run: Run) -> str:
    seeds = sorted(int(s) for s in run.results["seed"].dropna().unique())
    return f"msbench: mean over seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def paper_benign(dataset: str, defense: str) -> float:
    """The paper's benign accuracy of a defense's victim: an integration's victim is InI's (the paper
    loads InI's parameters into MAD and AM), so its benign accuracy is InI's."""
    return PAPER_BENIGN[dataset][defense.split("+")[0]]


def benign_table(run: Run) -> str:
    """Table 1: benign accuracy of each defense, paper and msbench, with msbench's gap to Vanilla."""
    header = ["Defense"] + [f"{DATASETS[d]} {who}" for d in DATASETS for who in ("paper", "msbench", "msbench − Vanilla")]
    rows = []
    for defense, label in DEFENSES.items():
        row = [label]
        for dataset in DATASETS:
            mine, base = run.benign_acc(dataset, defense), run.benign_acc(dataset, "vanilla")
            paper = PAPER_BENIGN[dataset].get(defense)
            row += [_acc(paper) if paper is not None else "—", _acc(mine), f"{mine - base:+.2f}"]
        rows.append(row)
    return _table(header, rows)


def clone_table(run: Run, attack: str) -> str:
    """Tables 2 and 3: clone accuracy (relative performance) per defense, dataset and label mode."""
    header = ["Defense"] + [f"{DATASETS[d]} {mode} {who}" for d in DATASETS for mode in MODES for who in ("paper", "msbench")]
    rows = []
    for defense, label in DEFENSES.items():
        row = [label]
        for dataset in DATASETS:
            for k, mode in enumerate(MODES):
                paper = PAPER_CLONE[attack][dataset][defense][k]
                row += [_acc(paper, paper / paper_benign(dataset, defense)), _acc(*run.clone(dataset, defense, attack, mode))]
        rows.append(row)
    return _table(header, rows)


def ranking(scores: dict[str, float]) -> str:
    """Defenses from the strongest (lowest clone accuracy) to the weakest."""
    ordered = sorted((v, DEFENSES[d]) for d, v in scores.items() if not math.isnan(v))
    return " < ".join(f"{label} {value:.2f}" for value, label in ordered)


def rankings(run: Run) -> str:
    """Per attack, dataset and label mode: the paper's ranking and msbench's."""
    lines = []
    for attack in PAPER_CLONE:
        for dataset in DATASETS:
            for k, mode in enumerate(MODES):
                paper = {d: v[k] for d, v in PAPER_CLONE[attack][dataset].items()}
                mine = {d: run.clone(dataset, d, attack, mode)[0] for d in DEFENSES}
                lines += [f"- {ATTACKS[attack]}, {DATASETS[dataset]}, {mode} labels:",
                          f"  - paper: {ranking(paper)}", f"  - msbench: {ranking(mine)}"]
    return "\n".join(lines)


def worst_case(run: Run) -> tuple[str, str]:
    """The clone accuracy of the strongest attack of the run against each defense, per label mode
    (the paper ranks soft and hard labels apart; the report's verdict takes the worst over both),
    with the attack that reached it, and the ranking it gives per dataset and label mode."""
    attacks = [a for a in ATTACKS if a in set(run.results["attack"])]
    header = ["Defense"] + [f"{DATASETS[d]} {mode}" for d in DATASETS for mode in MODES]
    rows, scores = [], {}
    for defense, label in DEFENSES.items():
        row = [label]
        for dataset in DATASETS:
            for mode in MODES:
                per_attack = {a: run.clone(dataset, defense, a, mode)[0] for a in attacks}
                missing = [a for a, v in per_attack.items() if math.isnan(v)]
                if missing:  # a verdict over part of the battery would flatter the defense
                    row.append(f"incomplete ({', '.join(missing)})")
                    scores[(dataset, mode, defense)] = math.nan
                    continue
                best = max(per_attack, key=per_attack.get)
                row.append(f"{per_attack[best]:.2f} ({ATTACKS[best]})")
                scores[(dataset, mode, defense)] = per_attack[best]
        rows.append(row)
    lines = []
    for dataset in DATASETS:
        for mode in MODES:
            mine = {d: scores[(dataset, mode, d)] for d in DEFENSES}
            lines.append(f"- {DATASETS[dataset]}, {mode} labels: {ranking(mine)}")
    return _table(header, rows), "\n".join(lines)


SPREAD_DEFENSES = ("vanilla", "ini")


def _per_seed(values: pd.Series, defense: str) -> pd.Series:
    """``values`` indexed by (defense, seed): the defense's, indexed by seed (empty where it has none)."""
    return values[defense] if defense in values.index.get_level_values(0) else pd.Series(dtype=float)


def _spread(values: pd.Series) -> str:
    return f"{values.mean():.2f} ± {values.std(ddof=1):.2f}" if len(values) > 1 else _acc(float(values.mean()))


def seed_spread(run: Run) -> tuple[str, str]:
    """Per seed, Vanilla's and InI's clone accuracy (and benign accuracy) with mean ± sample standard
    deviation over seeds, then InI minus Vanilla paired by seed: whether the headline gap exceeds
    what another initialisation changes (each seed draws victim, surrogate, clone and queries anew)."""
    ok = run.results[(run.results["status"] == "ok") & run.results["defense"].isin(SPREAD_DEFENSES)]
    seeds = sorted(int(s) for s in ok["seed"].unique())
    header = ["Dataset", "Attack", "Labels", "Defense"] + [f"seed {s}" for s in seeds] + ["mean ± sd"]
    rows, gaps = [], []
    for dataset in DATASETS:
        benign = ok[ok["dataset"] == dataset].drop_duplicates(["defense", "seed"]).set_index(["defense", "seed"])["benign_acc"]
        for defense in SPREAD_DEFENSES:
            per_seed = _per_seed(benign, defense)
            rows.append([DATASETS[dataset], "benign accuracy", "", DEFENSES[defense]]
                        + [_acc(per_seed.get(s)) for s in seeds] + [_spread(per_seed)])
        for attack in ATTACKS:
            for mode in MODES:
                cells = ok[(ok["dataset"] == dataset) & (ok["attack"] == attack) & (ok["label_mode"] == mode)]
                clone = cells.set_index(["defense", "seed"])["clone_acc"]
                for defense in SPREAD_DEFENSES:
                    per_seed = _per_seed(clone, defense)
                    rows.append([DATASETS[dataset], ATTACKS[attack], mode, DEFENSES[defense]]
                                + [_acc(per_seed.get(s)) for s in seeds] + [_spread(per_seed)])
                paired = (_per_seed(clone, "ini") - _per_seed(clone, "vanilla")).dropna()
                gaps.append(f"- {DATASETS[dataset]}, {ATTACKS[attack]}, {mode}: InI − Vanilla {_spread(paired)} "
                            f"over {len(paired)} seed{'s' if len(paired) != 1 else ''}")
    return _table(header, rows), "\n".join(gaps)


def training_cost(run: Run) -> str:
    """Table B.1: each victim's training seconds (its whole chain) relative to Vanilla's on the same
    dataset, architecture and device, as the report's training-cost table computes it."""
    costs = victim_costs(run.results)
    columns = list(costs[["dataset", "arch", "victim_device"]].drop_duplicates().itertuples(index=False, name=None))
    columns = sorted(columns, key=lambda c: list(DATASETS).index(c[0]) if c[0] in DATASETS else len(DATASETS))
    header = ["Defense", "paper (CIFAR-10, ResNet-18)"] + [f"msbench {DATASETS.get(d, d)}, {a}" for d, a, _ in columns]
    rows = []
    for defense, label in DEFENSES.items():
        row = [label, f"{PAPER_TRAINING_COST[defense]:.2f}×" if defense in PAPER_TRAINING_COST else "—"]
        row += [cost_cell(costs, defense, "vanilla", d, a, device).text or "n/a" for d, a, device in columns]
        rows.append(row)
    devices = sorted({device for _, _, device in columns} | set(run.results["device_model"].dropna()))
    return _table(header, rows) + f"\n\nmsbench's victims trained on: {', '.join(devices) or 'not recorded'}."


def worst_case_over_seeds(*paths: Path) -> str:
    """The report's verdict over every seed of the runs, per label mode: each defense's worst case (the
    attack of highest mean clone accuracy) as mean [95% interval], n and its rank by the report's tests
    (=k: defenses that cannot be separated share a rank; ~ indicative, a comparison without a test;
    † collapsed, not ranked)."""
    tables = load_runs([p.parent for p in paths])
    frames = {mode: report_worst_case(tables, label_mode=mode).set_index(["dataset", "defense"]) for mode in MODES}
    header = ["Defense"] + [f"{DATASETS[d]} {mode}" for d in DATASETS for mode in MODES]
    rows = []
    for defense, label in DEFENSES.items():
        row = [label]
        for dataset in DATASETS:
            for mode in MODES:
                frame = frames[mode]
                if (dataset, defense) not in frame.index:
                    row.append("n/a")
                    continue
                r = frame.loc[(dataset, defense)]
                rank = ({"reference": "ref.", "collapsed": "†"}.get(r["standing"], "—") if pd.isna(r["rank"])
                        else ("~" if r["indicative"] else "") + ("=" if r["tied"] else "") + str(r["rank"]))
                bounds = f" [{r['ci_low']:.1f}, {r['ci_high']:.1f}]" if not math.isnan(r["ci_low"]) else ""
                row.append(f"{rank}: {r['clone_mean']:.2f}{bounds} ({ATTACKS.get(r['attack'], r['attack'])}, n={r['n']})")
        rows.append(row)
    return _table(header, rows)


COMPARISONS = [  # (claim, attack or "benign", defense a, defense b): a - b, per dataset and label mode
    *[(1, "benign", d, "vanilla") for d in ("mad", "am", "edm", "ini")],
    *[(2, "knockoff", "ini", d) for d in ("vanilla", "mad", "am", "edm")],
    *[(3, "jbda", d, "vanilla") for d in ("am", "edm")],
    (4, "jbda", "mad", "vanilla"),
    *[(5, a, x, y) for a in ("knockoff", "jbda") for x, y in (("ini+mad", "ini"), ("ini+am", "ini"), ("ini+am", "ini+mad"))],
]


def _samples(values: dict[tuple, dict[int, float]], dataset: str, defense: str, attack: str, mode: str) -> dict[int, float]:
    """One experiment's per-seed values from ``stats.seed_values`` (any arch: the run has one); {} if absent."""
    return next((v for k, v in values.items() if (k[0], k[2], k[3], k[4]) == (dataset, defense, attack, mode)), {})


def claim_tests(run: Run) -> str:
    """Every comparison a claim of the paper rests on, tested over seeds as the report tests them:
    a - b in points with its 95% interval, the test (paired t over shared seeds, Welch t otherwise) and
    the seeds per side; "a lower" / "b lower" only when significant at 5%, else "not separable"."""
    clone = seed_values(run.results)
    finished = run.results[(run.results["status"] == "ok") & run.results["benign_acc"].notna()]
    benign = seed_values(finished.drop_duplicates(["dataset", "arch", "defense", "seed"]).assign(attack="", label_mode=""),
                         "benign_acc")
    header = ["Claim", "Dataset", "Measure", "a − b", "a − b (points) [95% CI]", "test, n", "verdict"]
    rows = []
    for claim, attack, a, b in COMPARISONS:
        for dataset in DATASETS:
            for mode in (("",) if attack == "benign" else MODES):
                source, column = (benign, "") if attack == "benign" else (clone, attack)
                c = significance.compare(_samples(source, dataset, a, column, mode), _samples(source, dataset, b, column, mode))
                bounds = f" [{c.low:+.2f}, {c.high:+.2f}]" if c.testable else ""
                verdict = (f"{DEFENSES[a] if c.diff < 0 else DEFENSES[b]} lower" if c.significant
                           else "not separable" if c.testable else "no test (n = 1)")
                measure = "benign accuracy" if attack == "benign" else f"{ATTACKS[attack]} {mode}"
                rows.append([str(claim), DATASETS[dataset], measure, f"{DEFENSES[a]} − {DEFENSES[b]}", f"{c.diff:+.2f}{bounds}",
                             f"{c.test}, {c.n_a}/{c.n_b}", verdict])
    return _table(header, rows)


def seeds_needed(run: Run, delta: float = 5.0) -> str:
    """Per column (dataset, attack, label mode): the measured spread over seeds and the seeds a paired t
    test needs to separate a ``delta``-point difference with 80% power at 5%. The spread of a paired
    comparison is that of the per-seed differences between two defenses (the pooled sd over every
    pair of the column's defenses with two or more shared seeds)."""
    clone = seed_values(run.results)
    header = ["Dataset", "Attack", "Labels", "pooled sd of one defense", "pooled sd of paired differences",
              f"power at n = 3 ({delta:g} points)", f"seeds for {delta:g} points (80%)"]
    rows = []
    for dataset in DATASETS:
        for attack in ATTACKS:
            for mode in MODES:
                cells = {k[2]: v for k, v in clone.items() if k[0] == dataset and k[3] == attack and k[4] == mode}
                within = [pd.Series(list(v.values())).var(ddof=1) for v in cells.values() if len(v) > 1]
                diffs = []
                names = list(cells)
                for i, x in enumerate(names):
                    for y in names[i + 1:]:
                        shared = sorted(set(cells[x]) & set(cells[y]))
                        if len(shared) > 1:
                            diffs.append(pd.Series([cells[x][s] - cells[y][s] for s in shared]).var(ddof=1))
                if not within or not diffs:
                    continue
                sd, sd_diff = math.sqrt(sum(within) / len(within)), math.sqrt(sum(diffs) / len(diffs))
                need = significance.seeds_needed(delta, sd_diff)
                rows.append([DATASETS[dataset], ATTACKS[attack], mode, f"{sd:.2f}", f"{sd_diff:.2f}",
                             f"{significance.power(delta, sd_diff, 3):.2f}", str(need) if need else "> 1000"])
    return _table(header, rows)


def render(path: Path, seeds: list[Path] | None = None) -> str:
    """The doc's generated sections, in order, each under a heading the doc keeps; with ``seeds``
    (the results.csv of the runs of further seeds), the seed spread of Vanilla and InI, the worst
    case over seeds, the tests behind each claim and the seeds a 5-point difference needs follow
    them. The paper's tables stay on ``path``'s run alone, so every defense in them has the same seeds."""
    run = load(path)
    worst, worst_rankings = worst_case(run)
    sections = [
        ("Table 1: benign accuracy (%)", benign_table(run)),
        ("Table 2: KnockoffNets, clone accuracy (%) and relative performance", clone_table(run, "knockoff")),
        ("Table 3: JBDA, clone accuracy (%) and relative performance", clone_table(run, "jbda")),
        ("Rankings (clone accuracy, strongest defense first)", rankings(run)),
        ("Worst case over the run's attacks (clone accuracy, %)", worst),
        ("Rankings by the worst case", worst_rankings),
        ("Table B.1: training cost relative to Vanilla", training_cost(run)),
    ]
    if seeds:
        every = load(path, *seeds)
        spread, gaps = seed_spread(every)
        sections += [("Seed spread: Vanilla and InI, clone accuracy (%)", spread), ("InI − Vanilla, paired by seed", gaps),
                     ("Worst case over seeds, ranked by the report's tests (clone accuracy, %)", worst_case_over_seeds(path, *seeds)),
                     ("The claims' comparisons, tested over seeds", claim_tests(every)),
                     ("Seeds needed to separate a 5-point difference", seeds_needed(every))]
    return f"{seeds_note(run)}.\n\n" + "\n\n".join(f"#### {title}\n\n{body}" for title, body in sections) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="a run's results.csv")
    parser.add_argument("--seeds", type=Path, nargs="+", default=None,
                        help="the results.csv of the runs of further seeds (suites/paper-mnist-seeds*.toml)")
    args = parser.parse_args()
    sys.stdout.write(render(args.results, args.seeds))


if __name__ == "__main__":
    main()
