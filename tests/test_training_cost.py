"""The training-cost table (paper Table B.1) from hand-written run tables with known seconds, and
the record fields behind it."""
from __future__ import annotations

import pytest

from msbench.report.latex import render_table
from msbench.report.load import load_runs
from msbench.report.training_cost import NO_REFERENCE, NOT_RECORDED, training_cost_tables
from msbench.runner.results import record_problem
from tests.report_fixtures import full_results, suite_json, write_run

CPU = "cpu: Test CPU, 2 threads"
GPU = "cuda:0: Test GPU"
DEFENSES = ["vanilla", "am", "ini"]
SECONDS = {("mnist", "vanilla"): (10.0, 14.0), ("mnist", "am"): (30.0, 42.0), ("mnist", "ini"): (100.0, 140.0),
           ("fashionmnist", "vanilla"): (20.0, 20.0), ("fashionmnist", "am"): (50.0, 50.0), ("fashionmnist", "ini"): (240.0, 240.0)}


def _run(tmp_path, name: str, devices=lambda dataset, defense: CPU, drop_device: bool = False):
    results, curves = full_results(defenses=DEFENSES, collapsed=())
    results["victim_seconds"] = [SECONDS[(r.dataset, r.defense)][r.seed] for r in results.itertuples()]
    results["victim_device"] = [devices(r.dataset, r.defense) for r in results.itertuples()]
    if drop_device:  # a results.csv written before the column existed
        results = results.drop(columns=["victim_device", "victim_train_seconds"])
    path = write_run(tmp_path / name, results, curves, suite_json(name, ["mnist", "fashionmnist"], DEFENSES, ["knockoff", "jbda"],
                                                                   ["soft", "hard"], [0, 1]))
    return load_runs([path])


def _cells(table) -> dict[tuple[str, int], str]:
    return {(row[0].text, k): cell.text for row in table.rows for k, cell in enumerate(row[1:])}


def test_ratio_is_the_mean_over_seeds_over_vanillas_mean(tmp_path):
    (table,) = training_cost_tables(_run(tmp_path, "cost"))
    cells = _cells(table)
    assert [r[0].text for r in table.rows] == ["Vanilla", "AM", "InI"]
    assert table.groups == [("MNIST", 1), ("FashionMNIST", 1)] and table.columns[1:] == [CPU, CPU]
    assert cells[("Vanilla", 0)].startswith("1.00×")
    assert cells[("AM", 0)].startswith("3.00×") and "36.00 s, 2 seeds" in cells[("AM", 0)]  # (30 + 42) / 2 over 12
    assert cells[("InI", 0)].startswith("10.00×")  # 120 / 12
    assert cells[("InI", 1)].startswith("12.00×") and cells[("AM", 1)].startswith("2.50×")
    assert table.rows[2][1].sort == pytest.approx(10.0)
    assert "10.00$\\times$" in render_table(table)


def test_times_from_different_devices_are_not_divided(tmp_path):
    on_gpu = lambda dataset, defense: GPU if (dataset, defense) == ("mnist", "ini") else CPU  # noqa: E731
    (table,) = training_cost_tables(_run(tmp_path, "mixed", devices=on_gpu))
    assert table.columns[1:] == [CPU, GPU, CPU]  # MNIST on two devices, FashionMNIST on one
    cells = _cells(table)
    assert cells[("InI", 0)] == "" and cells[("InI", 1)].startswith(NO_REFERENCE) and "×" not in cells[("InI", 1)]
    assert cells[("AM", 0)].startswith("3.00×") and cells[("InI", 2)].startswith("12.00×")


def test_records_without_the_device_say_not_recorded(tmp_path):
    (table,) = training_cost_tables(_run(tmp_path, "old", drop_device=True))
    texts = [cell.text for row in table.rows for cell in row[1:]]
    assert texts and all(text == NOT_RECORDED for text in texts)
    assert table.columns[1:] == [f"device {NOT_RECORDED}"] * 2


def test_rendered_report_has_the_table(tmp_path):
    from msbench.report.render import render_report

    tables = _run(tmp_path, "page")
    out = render_report(tables.run_dirs, tmp_path / "report", formats=("html", "latex"))
    assert "Training cost (smallcnn)" in (out / "index.html").read_text()
    assert "tab:msbench-training-cost-smallcnn" in (out / "tables.tex").read_text()


def test_record_fields_are_optional_but_typed():
    record = dict(cell_id="c", status="ok", error="", dataset="mnist", arch="smallcnn", defense="vanilla", attack="knockoff",
                  label_mode="soft", seed=0, budget=10, queries=10, benign_acc=90.0, clone_acc=81.0, relative_perf=0.9,
                  fidelity=85.0, curve=[])
    assert record_problem(record, "c") is None  # a record made before the fields existed stays valid
    assert record_problem({**record, "victim_train_seconds": 1.5, "victim_device": CPU}, "c") is None
    assert "victim_device" in record_problem({**record, "victim_device": 3}, "c")
    assert "victim_train_seconds" in record_problem({**record, "victim_train_seconds": "fast"}, "c")
