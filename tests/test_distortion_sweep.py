"""Distortion columns and the trade-off sweep, end to end on the tiny MNIST suite."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

import msbench
from msbench.config import SuiteError
from msbench.report import load_runs
from msbench.runner.workspace import Workspace
from msbench.runner.suite import load_suite
from tests.conftest import tiny_suite

SWEEP = {"matrix": {"defenses": ["vanilla", "label_only", "random_noise"], "label_modes": ["soft"]},
         "sweep": {"defenses": ["random_noise"], "grid": {"random_noise": [0.0, 1.0]}}}


def test_distortion_and_sweep_cells(tmp_path, mnist_root, one_thread):
    path = tiny_suite(tmp_path, **SWEEP)
    msbench.run_suite(path, data_root=mnist_root, out=tmp_path / "run", report=False)
    table = pd.read_csv(tmp_path / "run" / "results.csv")
    assert (table.status == "ok").all() and len(table) == 5
    matched = table[table.setting.isna()].set_index("defense")
    swept = table[table.setting.notna()].set_index("setting")
    assert math.isnan(matched.loc["vanilla", "distortion_test"]) and math.isnan(matched.loc["vanilla", "distortion_queries"])

    # label only: ||onehot(top1) - y||_1 = 2 (1 - max y), from Vanilla's own answers on the test set
    ws = Workspace(load_suite(path), mnist_root, tmp_path / "run", torch.device("cpu"))
    vanilla, _ = ws.victims.get("mnist", "smallcnn", ["vanilla"], 0)
    test = ws.splits("mnist").test
    with torch.no_grad():
        top = vanilla(test.floats()).amax(dim=1).double()
    assert matched.loc["label_only", "distortion_test"] == pytest.approx(2 * (1 - top).mean().item(), rel=1e-6)
    assert 0 < matched.loc["label_only", "distortion_queries"] <= 2

    # the sweep at epsilon = 0 answers exactly what Vanilla does: no distortion, the same clone
    assert swept.loc[0.0, "distortion_queries"] == 0 and swept.loc[0.0, "distortion_test"] == 0
    assert swept.loc[0.0, "clone_acc"] == matched.loc["vanilla", "clone_acc"]
    assert swept.loc[0.0, "benign_acc"] == pytest.approx(matched.loc["vanilla", "benign_acc"])
    # at epsilon = 1: distortion eps (1 - y_j) <= 1, near 1 for a confident victim; the record names the value
    assert 0.5 < swept.loc[1.0, "distortion_queries"] <= 1.0 + 1e-6
    assert swept.loc[1.0, "tuned"] == "random_noise.epsilon=1"

    tables = load_runs(tmp_path / "run")  # the report keeps swept cells apart
    assert len(tables.results) == 3 and len(tables.sweep) == 2
    from msbench.report.figures import sweep_tradeoff
    assert sweep_tradeoff(tables.sweep, {d: "#000000" for d in tables.defenses()}) is not None


def test_sweep_table_is_checked(tmp_path):
    with pytest.raises(SuiteError, match="sweep.defenses"):
        load_suite(tiny_suite(tmp_path, sweep={"defenses": ["vanilla"]}))
    with pytest.raises(SuiteError, match=r"sweep.grid.random_noise\[0\]"):
        load_suite(tiny_suite(tmp_path, **{**SWEEP, "sweep": {"defenses": ["random_noise"], "grid": {"random_noise": [5.0]}}}))
