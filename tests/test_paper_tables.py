"""benchmarks/paper_tables.py: the tables of docs/reproduction.md, from a run's results.csv.

The doc's verdicts rest on these tables, so they are checked on a small results table whose
answers are known: the worst case is the strongest attack and names it, a defense missing an
attack gets no verdict, rankings go from the lowest clone accuracy up, and the committed doc
still contains exactly the tables its committed results.csv gives.
"""
from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import pandas as pd
import pytest

from msbench.runner.results import RESULT_COLUMNS

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("paper_tables", ROOT / "benchmarks" / "paper_tables.py")
paper_tables = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(paper_tables)

# clone accuracy by attack: knockoff-avg is the strongest against EDM only
CLONE = {"knockoff": 60.0, "jbda": 50.0, "knockoff-avg": 40.0}  # %, as results.csv has them


def results(tmp_path: Path, drop: tuple[str, str, str] | None = None) -> Path:
    rows = []
    for (d, dataset), (k, defense), attack, mode in itertools.product(
            enumerate(paper_tables.DATASETS), enumerate(paper_tables.DEFENSES), CLONE, paper_tables.MODES):
        if drop == (dataset, defense, attack):
            continue
        clone = CLONE[attack] + 1.0 * k + (30.0 if (defense, attack) == ("edm", "knockoff-avg") else 0.0)
        benign = 99.0 - 0.1 * k - 5.0 * d
        rows.append({"dataset": dataset, "arch": "smallcnn", "defense": defense, "attack": attack, "label_mode": mode,
                     "seed": 0, "status": "ok", "benign_acc": benign, "clone_acc": clone, "relative_perf": clone / benign,
                     "victim_seconds": 10.0 * (k + 1), "victim_device": "cpu", "device_model": "x86_64"})
    path = tmp_path / "results.csv"
    pd.DataFrame(rows, columns=RESULT_COLUMNS).to_csv(path, index=False)
    return path


def test_worst_case_is_the_strongest_attack_and_names_it(tmp_path):
    table, ranks = paper_tables.worst_case(paper_tables.load(results(tmp_path)))
    vanilla = next(line for line in table.splitlines() if line.startswith("| Vanilla |"))
    assert vanilla.count("60.00 (KnockoffNets)") == 4
    edm = next(line for line in table.splitlines() if line.startswith("| EDM |"))
    assert edm.count("73.00 (KnockoffNets averaged)") == 4  # 0.40 + 0.03 + 0.30
    # ranking by the worst case: Vanilla (60) first, EDM (73) last
    first = ranks.splitlines()[0]
    assert first.split(": ", 1)[1].startswith("Vanilla 60.00 < MAD 61.00") and first.endswith("EDM 73.00")


def test_a_defense_missing_an_attack_gets_no_verdict(tmp_path):
    table, ranks = paper_tables.worst_case(paper_tables.load(results(tmp_path, drop=("mnist", "ini", "jbda"))))
    ini = next(line for line in table.splitlines() if line.startswith("| InI |"))
    assert ini.count("incomplete (jbda)") == 2 and "64.00 (KnockoffNets)" in ini  # FashionMNIST still judged
    assert "InI 6" not in ranks.splitlines()[0] and "InI + MAD 65.00" in ranks.splitlines()[0]


def test_tables_set_the_run_beside_the_paper(tmp_path):
    frame = paper_tables.load(results(tmp_path))
    benign = paper_tables.benign_table(frame)
    assert "| AM | 99.41 | 98.80 | -0.20 | 93.67 | 93.80 | -0.20 |" in benign
    knockoff = paper_tables.clone_table(frame, "knockoff")
    assert "| InI | 89.02 (0.90×) | 64.00 (0.65×) | 95.90 (0.96×) | 64.00 (0.65×) |" in knockoff
    # an integration's victim is InI's, so the paper's relative performance divides by InI's 93.36
    assert "| InI + MAD | 88.09 (0.89×) |" in knockoff and "| 20.18 (0.22×) |" in knockoff
    cost = paper_tables.training_cost(frame)
    assert "| InI | 12.15× | 5.00× (50.00 s) | 5.00× (50.00 s) |" in cost


def seeds_run(tmp_path: Path, seeds: tuple[int, ...] = (1, 2)) -> Path:
    """Seeds 1 and 2 of Vanilla and InI: InI's clone 10 points under Vanilla's, plus the seed number."""
    rows = []
    for dataset, defense, attack, mode, seed in itertools.product(paper_tables.DATASETS, ("vanilla", "ini"), CLONE,
                                                                  paper_tables.MODES, seeds):
        clone = 70.0 - (10.0 if defense == "ini" else 0.0) + seed
        rows.append({"dataset": dataset, "arch": "smallcnn", "defense": defense, "attack": attack, "label_mode": mode,
                     "seed": seed, "status": "ok", "benign_acc": 98.0 + seed, "clone_acc": clone, "relative_perf": clone / 98.0,
                     "victim_seconds": 10.0, "victim_device": "cpu", "device_model": "x86_64"})
    path = tmp_path / "seeds" / "results.csv"
    path.parent.mkdir()
    pd.DataFrame(rows, columns=RESULT_COLUMNS).to_csv(path, index=False)
    return path


def test_seed_spread_pairs_ini_with_vanilla_by_seed(tmp_path):
    table, gaps = paper_tables.seed_spread(paper_tables.load(results(tmp_path), seeds_run(tmp_path)))
    # seed 0 from the base run: Vanilla 60 (k = 0), InI 64 (k = 4) on KnockoffNets; seeds 1, 2: 71, 72 and 61, 62
    assert "| MNIST | KnockoffNets | soft | Vanilla | 60.00 | 71.00 | 72.00 | 67.67 ± 6.66 |" in table
    assert "| MNIST | KnockoffNets | soft | InI | 64.00 | 61.00 | 62.00 | 62.33 ± 1.53 |" in table
    assert "| MNIST | benign accuracy |  | Vanilla | 99.00 | 99.00 | 100.00 | 99.33 ± 0.58 |" in table
    # paired differences: +4, -10, -10
    assert "- MNIST, KnockoffNets, soft: InI − Vanilla -5.33 ± 8.08 over 3 seeds" in gaps.splitlines()


def test_a_cell_in_two_runs_is_refused(tmp_path):
    with pytest.raises(ValueError, match="more than one run"):
        paper_tables.load(results(tmp_path), seeds_run(tmp_path, seeds=(0, 1)))


SEED_RUNS = ("paper-mnist-seeds", "paper-mnist-seeds-1", "paper-mnist-seeds-2")
"""The committed runs of further seeds behind docs/reproduction.md, in the order the doc names them."""


def test_the_doc_holds_the_committed_runs_tables():
    csv, doc = ROOT / "reports" / "paper-mnist" / "results.csv", ROOT / "docs" / "reproduction.md"
    seeds = [ROOT / "reports" / name / "results.csv" for name in SEED_RUNS]
    for path in (csv, *seeds):
        if not path.exists():
            pytest.fail(f"{path.relative_to(ROOT)} is missing: docs/reproduction.md has no run behind it")
    assert paper_tables.render(csv, seeds) in doc.read_text(), \
        "docs/reproduction.md's tables differ from `python benchmarks/paper_tables.py reports/paper-mnist/results.csv " \
        f"--seeds {' '.join(f'reports/{name}/results.csv' for name in SEED_RUNS)}`"
