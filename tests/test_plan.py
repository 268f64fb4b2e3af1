"""The run plan: cells cached and to run, victims to train and the estimate's basis, on a partly
cached run; `run --dry-run` runs nothing; a run over the warning threshold says so before it starts."""
from __future__ import annotations

import shutil

import pytest

import msbench
from msbench.cli import main
from msbench.runner.plan import IMAGE_SECONDS, plan_suite
from msbench.runner.suite import load_suite
from tests.conftest import data_root, tiny_suite


@pytest.fixture(scope="module")
def mnist_root_module():
    root = data_root()
    if root is None or not (root / "EMNIST-letters").exists():
        pytest.skip("MNIST and EMNIST-letters not found: set MSBENCH_DATA to the dataset folder")
    return root


@pytest.fixture(scope="module")
def cached(tmp_path_factory, mnist_root_module):
    """A tiny run of seed 0 (two cells: soft and hard), finished."""
    base = tmp_path_factory.mktemp("plan")
    path = tiny_suite(base, "one.toml", matrix={"seeds": [0]}, victim={"epochs": 1})
    msbench.run_suite(path, data_root=mnist_root_module, out=base / "run", echo=lambda *_: None, report=False)
    return base


def test_a_partly_cached_run_is_counted_and_estimated_from_its_records(cached):
    more = load_suite(tiny_suite(cached, "two.toml", matrix={"seeds": [0, 1]}, victim={"epochs": 1}))
    plan = plan_suite(more, out=cached / "run", device="cpu")
    assert (plan.cells, plan.cached, plan.failed, plan.to_run) == (4, 2, 0, 2)
    assert (plan.victims, plan.victims_to_train) == (1, 1)  # seed 1's Vanilla: new; seed 0's is cached
    assert "victims: 1 from this run's records, 0 from the cost model" in plan.basis[0]
    assert "cells: 2 from this run's records, 0 from the cost model" in plan.basis[1]
    records = msbench.load_results(cached / "run")
    expected = records["victim_train_seconds"].mean() + 2 * records["attack_seconds"].mean()
    assert plan.seconds == pytest.approx(expected)
    copy = cached / "one-record-lost"
    shutil.copytree(cached / "run", copy)
    sorted((copy / "records").glob("*.json"))[0].unlink()  # a cell to run again whose victim is checkpointed
    lost = plan_suite(load_suite(tiny_suite(cached, "one.toml", matrix={"seeds": [0]}, victim={"epochs": 1})), out=copy,
                      device="cpu")
    assert (lost.cached, lost.to_run, lost.victims, lost.victims_to_train) == (1, 1, 1, 0)
    shutil.rmtree(copy)
    fresh = plan_suite(more, out=cached / "elsewhere", device="cpu")  # nothing measured there: the cost model
    assert (fresh.cached, fresh.to_run, fresh.victims_to_train) == (0, 4, 2)
    assert "0 from this run's records, 2 from the cost model" in fresh.basis[0]
    victims = 2 * 600 * 1 * IMAGE_SECONDS[("smallcnn", "cpu")]  # two seeds' Vanilla: 600 images, 1 epoch
    cells = 4 * 300 * 1 * IMAGE_SECONDS[("smallcnn", "cpu")]  # KnockoffNets: 300 answers, one clone epoch
    assert fresh.seconds == pytest.approx(victims + cells)


def test_dry_run_prints_the_plan_and_runs_nothing(cached, capsys):
    path = tiny_suite(cached, "two.toml", matrix={"seeds": [0, 1]}, victim={"epochs": 1})
    assert main(["run", str(path), "--out", str(cached / "run"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("tiny on cpu: 4 cells, 2 cached, 0 failed, 2 to run; 1 of 1 victims to train; estimated ")
    assert len(list((cached / "run" / "records").glob("*.json"))) == 2  # nothing ran
    assert main(["plan", str(path), "--out", str(cached / "run")]) == 0 and capsys.readouterr().out == out


def test_a_run_over_the_threshold_warns_before_it_starts(cached, mnist_root_module, monkeypatch):
    monkeypatch.setattr("msbench.runner.run.WARN_SECONDS", -1.0)  # every estimate is over it, even all cached (0 s)
    lines: list[str] = []
    path = tiny_suite(cached, "one.toml", matrix={"seeds": [0]}, victim={"epochs": 1})
    msbench.run_suite(path, data_root=mnist_root_module, out=cached / "run", echo=lines.append, report=False)
    assert lines[0].startswith("warning: tiny on cpu: 2 cells, 2 cached") and "msbench plan" in lines[0]


def test_another_suite_into_a_run_directory_is_refused_in_one_line(cached, mnist_root_module):
    from msbench.io import DiskError

    other = tiny_suite(cached, "other.toml", name="other", victim={"epochs": 1})
    with pytest.raises(DiskError) as refused:
        msbench.run_suite(other, data_root=mnist_root_module, out=cached / "run", echo=lambda *_: None, report=False)
    message = str(refused.value)
    assert len(message.splitlines()) == 1 and "holds a run of suite 'tiny'; refusing to run suite 'other'" in message
    assert msbench.load_results(cached / "run")["dataset"].size == 2  # the first suite's rows are all there
    assert "--share-run-dir to build on its cells" in message


def test_the_report_folder_follows_the_run_folder(tmp_path, mnist_root_module):
    path = tiny_suite(tmp_path, "one.toml", matrix={"label_modes": ["soft"]}, victim={"epochs": 1})
    for folder in ("copy-a", "copy-b"):
        msbench.run_suite(path, data_root=mnist_root_module, out=tmp_path / "runs" / folder, echo=lambda *_: None)
    assert (tmp_path / "reports" / "copy-a" / "index.html").exists() and (tmp_path / "reports" / "copy-b" / "index.html").exists()


def test_a_suite_built_on_another_shares_its_run_directory_when_asked(cached, mnist_root_module):
    other = tiny_suite(cached, "shared.toml", name="shared", victim={"epochs": 1}, matrix={"label_modes": ["soft"]})
    frame = msbench.run_suite(other, data_root=mnist_root_module, out=cached / "run", echo=lambda *_: None, report=False,
                              share_run_dir=True)
    assert list(frame.status) == ["ok"] and len(list((cached / "run" / "records").glob("*.json"))) == 2  # tiny's soft cell reused
    kept = msbench.load_results(cached / "run" / "suites" / "tiny")  # tiny's rows are kept beside, not dropped
    assert sorted(kept.label_mode) == ["hard", "soft"] and set(kept.status) == {"ok"}


def test_a_record_the_run_would_refuse_is_not_counted_as_cached(cached):
    import json

    suite = load_suite(tiny_suite(cached, "one.toml", matrix={"seeds": [0]}, victim={"epochs": 1}))
    before = plan_suite(suite, out=cached / "run", device="cpu")
    from msbench.runner.cells import cell_key, expand

    record = cached / "run" / "records" / f"{cell_key(suite, expand(suite)[0])}.json"  # one of this suite's cached cells
    original = record.read_text()
    record.write_text(json.dumps({**json.loads(original), "queries": -5}))  # impossible: the run recomputes it
    try:
        after = plan_suite(suite, out=cached / "run", device="cpu")
    finally:
        record.write_text(original)
    assert (after.cached, after.to_run) == (before.cached - 1, before.to_run + 1)
