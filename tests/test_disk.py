"""Integrity of what msbench writes: atomic writes, umask, checksummed victims, validated records,
typed tables, the run-directory lock, and one-line errors for disk failures."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import msbench
from msbench.cli import main
from msbench.defenses import load_cached_victim, save_victim
from msbench.defenses.vanilla import Vanilla
from msbench.io import DiskError, RunLock, RunLocked, write_atomic
from msbench.report import load_results
from msbench.runner.results import RecordStore, results_frame, write_tables
from tests.conftest import tiny_suite


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*.tmp")]


# -- the atomic writer ------------------------------------------------------------------------------
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_users_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_atomic(tmp_path / "a.csv", "x\n")
        save_victim(torch.nn.Linear(2, 2), tmp_path / "victims" / "v.pt", {"benign_acc": 1.0})
        RecordStore(tmp_path).put({"cell_id": "c", "status": "failed", "error": "e"})
    finally:
        os.umask(old)
    for path in (tmp_path / "a.csv", tmp_path / "victims" / "v.pt", tmp_path / "records" / "c.json"):
        assert path.stat().st_mode & 0o777 == mode, path


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EIO])
@pytest.mark.parametrize("failing", ["write", "fsync", "replace"])
def test_a_failed_write_leaves_no_temp_file_and_keeps_the_old_one(tmp_path, monkeypatch, code, failing):
    target = tmp_path / "results.csv"
    write_atomic(target, "old\n")

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(os, failing, fail)
    with pytest.raises(DiskError) as error:
        write_atomic(target, "new\n" * 1000)
    monkeypatch.undo()
    assert str(target) in str(error.value) and "\n" not in str(error.value)
    assert target.read_text() == "old\n" and leftovers(tmp_path) == [] and os.listdir(tmp_path) == ["results.csv"]


def test_interrupt_during_write_leaves_no_temp_file(tmp_path, monkeypatch):
    def interrupt(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "suite.json", "{}")
    assert os.listdir(tmp_path) == []


def test_writer_refuses_a_file_where_a_folder_should_be(tmp_path):
    (tmp_path / "plain").write_text("")
    with pytest.raises(DiskError, match="plain"):
        write_atomic(tmp_path / "plain" / "x.json", "{}")


# -- victim checkpoints -----------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncate", "flip", "header", "empty"])
def test_corrupt_checkpoint_is_reported_set_aside_and_not_used(tmp_path, caplog, damage):
    path = tmp_path / "v.pt"
    torch.manual_seed(0)
    saved = torch.nn.Linear(4, 3)
    save_victim(saved, path, {"benign_acc": 90.0})
    fresh = torch.nn.Linear(4, 3)
    assert load_cached_victim(fresh, path) == {"benign_acc": 90.0}
    assert torch.equal(fresh.weight, saved.weight)
    blob = path.read_bytes()
    damaged = {"truncate": blob[:-7], "flip": blob[:-5] + bytes([blob[-5] ^ 1]) + blob[-4:],
               "header": blob.replace(b"sha256=", b"sha255=", 1), "empty": b""}[damage]
    path.write_bytes(damaged)
    other = torch.nn.Linear(4, 3)
    before = other.weight.clone()
    assert load_cached_victim(other, path) is None
    assert torch.equal(other.weight, before)  # nothing of the damaged file was loaded
    assert not path.exists() and (tmp_path / "v.pt.corrupt").exists()
    assert str(path) in caplog.text and "corrupt" in caplog.text


def test_checkpoint_of_another_structure_is_not_used(tmp_path, caplog):
    save_victim(torch.nn.Linear(4, 3), tmp_path / "v.pt", {})
    assert load_cached_victim(torch.nn.Linear(5, 3), tmp_path / "v.pt") is None
    assert "does not load" in caplog.text


# -- records and tables ------------------------------------------------------------------------------
OK = {"cell_id": "c1", "status": "ok", "error": "", "dataset": "mnist", "arch": "smallcnn", "defense": "vanilla",
      "attack": "knockoff", "label_mode": "soft", "seed": 0, "budget": 10, "queries": 10, "benign_acc": 90.0,
      "clone_acc": 80.0, "relative_perf": 80.0 / 90.0, "fidelity": 85.0, "curve": [[10, 80.0]]}


@pytest.mark.parametrize("text", [
    '{"cell_id": "c1", "status": "ok", ',  # truncated
    "",
    "[1, 2]",
    json.dumps({k: v for k, v in OK.items() if k != "clone_acc"}),
    json.dumps({**OK, "clone_acc": "80"}),
    json.dumps({**OK, "seed": 0.5}),
    json.dumps({**OK, "status": "done"}),
    json.dumps({**OK, "cell_id": "another"}),
    json.dumps({**OK, "clone_acc": float("nan")}),
    json.dumps({**OK, "curve": [[10]]}),
    b"\xff\xfe\x00binary",
])
def test_invalid_record_is_named_set_aside_and_recomputed(tmp_path, caplog, text):
    store = RecordStore(tmp_path)
    store.put(OK)
    assert store.get("c1") == OK
    path = store.path("c1")
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert store.get("c1") is None
    assert str(path) in caplog.text and (path.parent / "c1.json.corrupt").exists() and not path.exists()


def test_results_table_keeps_its_column_types(tmp_path):
    failed = {"cell_id": "c2", "status": "failed", "error": "RuntimeError: x", "dataset": "mnist", "arch": "smallcnn",
              "defense": "vanilla", "attack": "knockoff", "label_mode": "hard", "seed": 3}
    for records in ([failed], [OK, failed], [OK]):
        write_tables(tmp_path, records)
        table = load_results(tmp_path)
        assert str(table.seed.dtype) == "Int64" and str(table.queries.dtype) == "Int64"
        assert table.clone_acc.dtype == "float64" and str(table.error.dtype) == "string"
        assert str(table.notes.dtype) == "string" and (table.notes == "").all()
        assert table.equals(results_frame(records))
    curves = load_results(tmp_path, "curves")
    assert str(curves.queries.dtype) == "Int64" and list(curves.clone_acc) == [80.0]


# -- the run lock ------------------------------------------------------------------------------------
def test_second_run_on_a_locked_directory_stops_naming_the_holder(tmp_path, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from msbench.io import RunLock; "
                               f"RunLock({str(run)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd() + ":" + str(Path(__file__).parents[1])})
    try:
        assert holder.stdout.readline().strip() == "held"
        code = main(["run", str(tiny_suite(tmp_path)), "--out", str(run), "--no-report"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1
        assert err.startswith(f"msbench: {run}: in use by another run (pid {holder.pid} on ")
        assert not (run / "suite.json").exists() and not (run / "records").exists()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(run):  # the kernel released the killed holder's lock
        with pytest.raises(RunLocked):
            RunLock(run).acquire()
    RunLock(run).acquire().release()


# -- disk errors before any work ---------------------------------------------------------------------
@pytest.fixture
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("trained despite a bad run directory")
    monkeypatch.setattr(Vanilla, "fit", refuse)


@pytest.mark.parametrize("layout, named, expected", [
    ("under_file", "blocker", "a file stands where a folder is needed"),
    ("records_file", "run/records", "a file stands where a folder is needed"),
    ("victims_file", "run/victims", "a file stands where a folder is needed"),
    ("suite_json_dir", "run/suite.json", "is a folder"),
    ("results_dir", "run/results.csv", "is a folder"),
])
def test_unusable_run_directory_is_one_line_exit_2(tmp_path, capsys, no_training, layout, named, expected):
    run = tmp_path / "run"
    if layout == "under_file":
        (tmp_path / "blocker").write_text("")
        run = tmp_path / "blocker" / "run"
    else:
        run.mkdir()
        target = tmp_path / named
        target.mkdir() if layout.endswith("_dir") else target.write_text("")
    code = main(["run", str(tiny_suite(tmp_path)), "--out", str(run), "--no-report"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith(f"msbench: {tmp_path / named}"), err
    assert expected in err and leftovers(tmp_path) == []


@pytest.mark.parametrize("code, expected", [(errno.EROFS, "read-only filesystem"), (errno.ENOSPC, "no space left"),
                                            (errno.EACCES, "permission denied")])
def test_unwritable_run_directory_is_one_line_exit_2(tmp_path, capsys, monkeypatch, no_training, code, expected):
    real_open = os.open

    def refusing_open(path, flags, *args, **kwargs):  # root ignores chmod: simulate the filesystem's answer
        if str(path).startswith(str(tmp_path / "run")) and flags & os.O_CREAT:
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)
    monkeypatch.setattr(os, "open", refusing_open)
    exit_code = main(["run", str(tiny_suite(tmp_path)), "--out", str(tmp_path / "run"), "--no-report"])
    err = capsys.readouterr().err.strip()
    assert exit_code == 2 and len(err.splitlines()) == 1 and err.startswith(f"msbench: {tmp_path / 'run'}"), err
    assert expected in err and leftovers(tmp_path) == []


def test_disk_full_during_a_run_is_one_line_and_leaves_no_temp_files(tmp_path, capsys, monkeypatch, mnist_root, one_thread):
    from msbench.runner import results

    def full(path, data):
        raise DiskError(path, "cannot write (no space left on the device)")
    monkeypatch.setattr(results, "write_atomic", full)  # records and tables: the disk fills after victims are saved
    code = main(["run", str(tiny_suite(tmp_path)), "--out", str(tmp_path / "run"), "--no-report", "--data-root", str(mnist_root)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("msbench: ") and err.endswith("no space left on the device)")
    assert "records" in err and leftovers(tmp_path) == []


def test_a_run_writes_checkpoints_and_records_that_verify(tmp_path, mnist_root, one_thread, caplog):
    out = tmp_path / "run"
    msbench.run_suite(tiny_suite(tmp_path, matrix={"label_modes": ["soft"]}), data_root=mnist_root, out=out, report=False)
    (victim,) = out.glob("victims/*.pt")
    victim.write_bytes(victim.read_bytes()[:-100])  # truncated by a crash of some other tool
    (record,) = out.glob("records/*.json")
    record.write_text(record.read_text()[:50])
    from msbench.executors import base
    assert not base._WORKSPACES  # the run's victims left memory with it: the next run reads the files
    lines: list[str] = []
    frame = msbench.run_suite(tiny_suite(tmp_path, matrix={"label_modes": ["soft"]}), data_root=mnist_root, out=out,
                              report=False, echo=lines.append)
    assert "0 of 1 cells done" in lines[0] and (frame.status == "ok").all()
    assert str(victim) in caplog.text and str(record) in caplog.text
    assert victim.exists() and (out / "victims" / (victim.name + ".corrupt")).exists()
    assert (out / "records" / (record.name + ".corrupt")).exists() and leftovers(out) == []


def test_a_valid_checkpoint_in_another_victims_place_is_set_aside(tmp_path, caplog):
    torch.manual_seed(0)
    save_victim(torch.nn.Linear(4, 3), tmp_path / "seed1.pt", {"seed": 1}, key="seed1key")
    (tmp_path / "seed0.pt").write_bytes((tmp_path / "seed1.pt").read_bytes())  # a valid file, copied over another's
    fresh = torch.nn.Linear(4, 3)
    assert load_cached_victim(fresh, tmp_path / "seed1.pt", "seed1key") == {"seed": 1}  # in its own place: used
    assert load_cached_victim(fresh, tmp_path / "seed0.pt", "seed0key") is None
    assert (tmp_path / "seed0.pt.misplaced").exists() and not (tmp_path / "seed0.pt").exists()
    assert "misplaced victim checkpoint" in caplog.text and "computed for victim key seed1key, not seed0key" in caplog.text


def test_a_run_retrains_a_victim_whose_checkpoint_was_copied_from_another_seed(tmp_path, mnist_root, one_thread, caplog):
    import shutil

    root = mnist_root
    suite = tiny_suite(tmp_path, matrix={"seeds": [0, 1], "label_modes": ["soft"]}, victim={"epochs": 1})
    first = msbench.run_suite(suite, data_root=root, out=tmp_path / "run", report=False, echo=lambda _: None)
    victims = sorted((tmp_path / "run" / "victims").glob("*.pt"))
    assert len(victims) == 2
    shutil.copyfile(victims[1], victims[0])
    for record in (tmp_path / "run" / "records").glob("*.json"):  # edited to a count over the budget: not done
        record.write_text(json.dumps({**json.loads(record.read_text()), "queries": 10**9}))
    lines: list[str] = []
    again = msbench.run_suite(suite, data_root=root, out=tmp_path / "run", report=False, echo=lines.append)
    assert "0 of 2 cells done" in lines[0] and "outside [0, budget" in caplog.text
    assert "misplaced victim checkpoint" in caplog.text
    key = ["seed"]
    assert list(first.sort_values(key).benign_acc) == list(again.sort_values(key).benign_acc)  # each seed its own victim


CELL = {"dataset": "mnist", "arch": "smallcnn", "defense": "mad", "attack": "knockoff", "label_mode": "soft", "seed": 0,
        "setting": None}
VALID = {**CELL, "cell_id": "c0", "status": "ok", "error": "", "budget": 500, "queries": 500, "benign_acc": 98.0,
         "clone_acc": 49.0, "relative_perf": 0.5, "fidelity": 50.0, "curve": [[250, 40.0], [500, 49.0]]}


@pytest.mark.parametrize("edit, why", [
    ({"queries": 10**9 + 500}, "'queries' is 1000000500, outside [0, budget 500]"),
    ({"queries": -1}, "'queries' is -1, outside [0, budget 500]"),
    ({"budget": 10**9, "queries": 10**9}, "'budget' is 1000000000, expected 500 (the attack's)"),
    ({"seed": 1}, "'seed' is 1, expected 0 (the cell's)"),
    ({"label_mode": "hard"}, "'label_mode' is 'hard', expected 'soft' (the cell's)"),
    ({"relative_perf": 0.9}, "'relative_perf' is 0.9, expected clone_acc / benign_acc = 0.5"),
    ({"curve": [[900, 40.0]]}, "'curve' point [900, 40.0] is outside [0, budget 500] x [0, 100]"),
])
def test_a_record_with_numbers_impossible_for_its_cell_is_refused(tmp_path, caplog, edit, why):
    from msbench.runner.results import RecordStore, record_problem

    assert record_problem(VALID, "c0", CELL, 500) is None
    assert record_problem({**VALID, **edit}, "c0", CELL, 500) == why
    store = RecordStore(tmp_path)
    store.dir.mkdir()
    store.put({**VALID, **edit})
    assert store.get("c0", CELL, 500) is None  # not done: its cell is computed again
    assert (store.dir / "c0.json.corrupt").exists() and why in caplog.text
