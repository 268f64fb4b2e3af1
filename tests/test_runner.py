import json
import sys
from pathlib import Path

import pandas as pd
import torch
import pytest

import msbench
from msbench.runner.checkpoints import read_checkpoint
from msbench.defenses.vanilla import Vanilla
from tests.conftest import synthetic_suite, tiny_suite

PLUGINS = str(Path(__file__).parent / "plugins")


def test_end_to_end_tiny_suite(tmp_path, mnist_root):
    frame = msbench.run_suite(tiny_suite(tmp_path), data_root=mnist_root, out=tmp_path / "run")
    table = pd.read_csv(tmp_path / "run" / "results.csv")
    assert list(table.label_mode) == ["soft", "hard"] and (table.status == "ok").all()
    assert (table.queries == 300).all() and (table.budget == 300).all()
    assert table.benign_acc.between(50, 100).all()  # one epoch on 540 images learns MNIST well above chance
    assert (table.relative_perf - table.clone_acc / table.benign_acc).abs().max() < 1e-9
    assert table.fidelity.between(0, 100).all() and table.clone_acc.between(0, 100).all()
    assert len(frame) == 2
    assert len(list((tmp_path / "run" / "victims").glob("*.pt"))) == 1  # one victim serves both label modes


def test_rerun_recomputes_nothing_and_changes_recompute_only_what_they_touch(tmp_path, mnist_root, monkeypatch):
    suite = tiny_suite(tmp_path)
    out = tmp_path / "run"
    msbench.run_suite(suite, data_root=mnist_root, out=out)
    first = {p.name: p.stat().st_mtime_ns for p in (out / "records").glob("*.json")}

    def refuse(*args, **kwargs):
        raise AssertionError("the cached victim was trained again")

    monkeypatch.setattr(Vanilla, "fit", refuse)
    lines: list[str] = []
    msbench.run_suite(suite, data_root=mnist_root, out=out, echo=lines.append)
    assert "nothing to recompute" in lines[0]
    assert {p.name: p.stat().st_mtime_ns for p in (out / "records").glob("*.json")} == first

    # a clone setting changes every cell but not the victim (fit still refuses)
    tiny_suite(tmp_path, clone={"epochs": 2})
    lines.clear()
    msbench.run_suite(suite, data_root=mnist_root, out=out, echo=lines.append)
    assert "0 of 2 cells done; running 2" in lines[0]

    # dropping a label mode recomputes nothing
    tiny_suite(tmp_path, clone={"epochs": 2}, matrix={"label_modes": ["hard"]})
    lines.clear()
    frame = msbench.run_suite(suite, data_root=mnist_root, out=out, echo=lines.append)
    assert "nothing to recompute" in lines[0] and list(frame.label_mode) == ["hard"]


def test_out_of_package_defense_composes_and_failures_are_recorded(tmp_path, mnist_root, monkeypatch):
    monkeypatch.syspath_prepend(PLUGINS)
    suite = tiny_suite(tmp_path, matrix={"defenses": ["vanilla", "flatten", "nan"]}, plugins=["constant_defense"])
    frame = msbench.run_suite(suite, data_root=mnist_root, out=tmp_path / "run")
    by_defense = frame.groupby("defense").status.agg(set).to_dict()
    assert by_defense == {"vanilla": {"ok"}, "flatten": {"ok"}, "nan": {"failed"}}
    failed = frame[frame.defense == "nan"]
    assert failed.error.str.len().min() > 0
    ok = frame[frame.status == "ok"].set_index(["defense", "label_mode"])
    # temperature keeps the top-1 label, so benign accuracy is Vanilla's (same cached base victim)
    assert ok.loc[("flatten", "soft"), "benign_acc"] == ok.loc[("vanilla", "soft"), "benign_acc"]
    assert len(list((tmp_path / "run" / "victims").glob("*.pt"))) == 2  # vanilla trained once, flatten wraps it
    sys.modules.pop("constant_defense", None)


def test_interrupted_run_keeps_finished_cells(tmp_path, mnist_root, monkeypatch):
    from msbench.attacks.knockoff import KnockoffNets

    suite = tiny_suite(tmp_path)
    out = tmp_path / "run"
    original = KnockoffNets.run
    calls = []

    def interrupt_second(self, oracle, ctx):
        calls.append(oracle.label_mode)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, oracle, ctx)

    monkeypatch.setattr(KnockoffNets, "run", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        msbench.run_suite(suite, data_root=mnist_root, out=out)
    records = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
    assert [r["label_mode"] for r in records] == ["soft"] and records[0]["status"] == "ok"
    assert not list(out.rglob("*.tmp"))
    monkeypatch.setattr(KnockoffNets, "run", original)
    lines: list[str] = []
    msbench.run_suite(suite, data_root=mnist_root, out=out, echo=lines.append)
    assert "1 of 2 cells done; running 1" in lines[0]


def test_same_seed_reproduces_the_same_figures(tmp_path, mnist_root):
    a = msbench.run_suite(tiny_suite(tmp_path), data_root=mnist_root, out=tmp_path / "a")
    b = msbench.run_suite(tiny_suite(tmp_path), data_root=mnist_root, out=tmp_path / "b")
    assert a[["benign_acc", "clone_acc", "fidelity"]].equals(b[["benign_acc", "clone_acc", "fidelity"]])


def test_benign_matching_picks_the_strongest_setting_within_tolerance(tmp_path, mnist_root, monkeypatch):
    monkeypatch.syspath_prepend(PLUGINS)
    suite = tiny_suite(tmp_path, matrix={"defenses": ["misdirect"]}, plugins=["constant_defense"], run={"match_benign": 5.0})
    out = tmp_path / "run"
    frame = msbench.run_suite(suite, data_root=mnist_root, out=out)
    victims = [read_checkpoint(p)["info"] for p in (out / "victims").glob("*.pt")]
    tuned = next(v["tuned"] for v in victims if v.get("tuned"))
    grid = [1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.0]
    assert tuned["base_val_acc"] - tuned["val_acc"] <= 5.0
    assert 0.0 < tuned["value"] < 1.0  # full strength flips every label; some mixing keeps the top-1
    assert frame.tuned.iloc[0] == f"misdirect.strength={tuned['value']:g}"
    # the next stronger setting costs more than the tolerance (checked on the cached victim)
    from msbench.runner.workspace import Workspace
    from msbench.runner.suite import load_suite
    from msbench.training import accuracy, predict_labels

    ws = Workspace(load_suite(suite), mnist_root, out, torch.device("cpu"))
    victim, _ = ws.victims.get("mnist", "smallcnn", ["vanilla", "misdirect"], 0)
    assert victim.strength == tuned["value"]
    victim.strength = grid[grid.index(tuned["value"]) - 1]
    val = ws.splits("mnist").val
    assert tuned["base_val_acc"] - accuracy(predict_labels(victim, val.images), val.labels) > 5.0
    sys.modules.pop("constant_defense", None)


def test_force_recomputes_every_cell_and_retrains_the_victim(tmp_path, mnist_root, monkeypatch, one_thread):
    from msbench.cli import build_parser

    suite = tiny_suite(tmp_path, run={"train_subset": 200, "test_subset": 100}, victim={"epochs": 1})
    out = tmp_path / "run"
    msbench.run_suite(suite, data_root=mnist_root, out=out, report=False)
    trained = []
    real_fit = Vanilla.fit
    monkeypatch.setattr(Vanilla, "fit", lambda self, victim, ctx: (trained.append(1), real_fit(self, victim, ctx))[1])
    lines: list[str] = []
    msbench.run_suite(suite, data_root=mnist_root, out=out, report=False, echo=lines.append)
    assert "nothing to recompute" in lines[0] and not trained
    lines.clear()
    frame = msbench.run_suite(suite, data_root=mnist_root, out=out, report=False, echo=lines.append, force=True)
    assert "0 of 2 cells done; running 2" in lines[0] and trained == [1] and (frame.status == "ok").all()
    assert build_parser().parse_args(["run", "suite.toml", "--force"]).force


def test_synthetic_suite_runs_end_to_end_without_shared_data(tmp_path, one_thread):
    """The learnable synthetic data of conftest.synthetic_suite: file datasets, no data root needed."""
    frame = msbench.run_suite(synthetic_suite(tmp_path), data_root=tmp_path / "no-data", out=tmp_path / "run",
                              echo=lambda *_: None, report=False)
    assert list(frame.status) == ["ok", "ok"] and (frame.queries == 300).all()
    assert (frame.benign_acc > 80).all() and (frame.clone_acc > 50).all()  # chance is 10%
