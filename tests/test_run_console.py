"""What a run tells its user: a line per cell when there is no terminal, run.log, failures and the
exit code, plugins next to the suite, the version and provenance of each record, `msbench time`'s refusal."""
from __future__ import annotations

import io
import json
import logging
import os
import platform
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

import msbench
from msbench.cli import build_parser, main
from msbench.logs import ConsoleHandler, failure_summary, start_line
from msbench.provenance import git_commit
from msbench.registry import plugin_scope
from msbench.runner.suite import SuiteError, load_suite
from tests.conftest import REPO, tiny_suite

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"  # run.log's UTC timestamps

PLUGIN = '''
from dataclasses import dataclass
import torch
from msbench.defenses import OutputDefense
from msbench.registry import register_defense


class Broken(torch.nn.Module):
    def __init__(self, base):
        super().__init__()
        self.base = base

    def forward(self, x):
        return self.base(x) * float("nan")


@register_defense("{name}")
class BrokenDefense(OutputDefense):
    """Answers NaN, so each of its cells fails."""
    def build(self, base, ctx):
        return Broken(base)
'''


@pytest.fixture
def neighbour_plugin(tmp_path, request):
    """A plugin module written next to a suite (in ``tmp_path/suites``), named uniquely per test;
    registered for the test only (``plugin_scope``)."""
    module = f"neighbour_{request.node.name.replace('[', '_').replace(']', '').replace('-', '_')}"[:60]
    defense = module.replace("_", "-")
    folder = tmp_path / "suites"
    folder.mkdir()
    (folder / f"{module}.py").write_text(PLUGIN.format(name=defense))
    with plugin_scope():
        yield folder, module, defense


def test_plugin_next_to_the_suite_imports_from_another_working_directory(tmp_path, monkeypatch, neighbour_plugin):
    folder, module, defense = neighbour_plugin
    suite_file = tiny_suite(folder, matrix={"defenses": ["vanilla", defense]}, plugins=[module])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path_before = list(sys.path)
    suite = load_suite(Path("..") / "suites" / suite_file.name)  # a relative path, from another folder
    assert defense in suite.defenses and sys.modules[module].__file__ == str((folder / f"{module}.py").resolve())
    assert sys.path == path_before  # the suite's folder is searched only while its plugins are imported
    with pytest.raises(SuiteError, match=r"plugins\[0\]: cannot import plugin 'no_such_plugin'"):
        load_suite(tiny_suite(folder, "missing.toml", plugins=["no_such_plugin"]))


def test_run_without_a_terminal_logs_each_cell_as_it_finishes_and_exits_1_on_failures(tmp_path, mnist_root, monkeypatch,
                                                                                      neighbour_plugin, capsys):
    folder, module, defense = neighbour_plugin
    suite_file = tiny_suite(folder, matrix={"defenses": ["vanilla", defense], "seeds": [0, 1]}, plugins=[module])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = elsewhere / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "MSBENCH_DATA": str(mnist_root), "OMP_NUM_THREADS": "1"}
    env.pop("MSBENCH_PROGRESS", None)  # bars decide for themselves: stdout and stderr are pipes, not terminals
    env.pop("PYTHONUNBUFFERED", None)  # as in a batch job: stdout to a pipe is block-buffered unless flushed
    process = subprocess.Popen([sys.executable, "-m", "msbench", "run", str(Path("..") / "suites" / suite_file.name),
                                "--out", "run", "--no-report"], cwd=elsewhere, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines = []
    records_at_first_cell = None
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
        if records_at_first_cell is None and line.startswith("cell 1/8 "):
            records_at_first_cell = len(list((run / "records").glob("*.json")))
    error = process.stderr.read()
    assert process.wait() == 1, error
    # the first cell's line arrived while the run was still going: seven cells were still to come
    assert records_at_first_cell is not None and records_at_first_cell < 8
    cell_lines = [line for line in lines if re.match(r"cell \d/8 ", line)]
    assert [line.split()[1] for line in cell_lines] == [f"{i}/8" for i in range(1, 9)]
    ok = [line for line in cell_lines if "/vanilla/" in line]
    assert len(ok) == 4 and all(re.search(r": clone \d+\.\d\d% \(benign \d+\.\d\d%\), \d+ s; (ETA \d|last cell)", line) for line in ok)
    assert all(" failed: NotProbabilities" in line for line in cell_lines if f"/{defense}/" in line)
    # the failures, summed up in one line per distinct error, then how to retry; the exit code says it too
    assert "4 of 8 cells failed:" in lines
    assert [line for line in lines if line.startswith("  4 x NotProbabilities")]
    assert any(line.startswith("fix the cause") and "--retry-failed" in line for line in lines)
    assert error.strip().splitlines() == [f"msbench: 4 of 8 cells failed (summary above); msbench run "
                                          f"{Path('..') / 'suites' / suite_file.name} --retry-failed runs them again"]
    log = (run / "run.log").read_text().splitlines()
    assert all(re.match(STAMP + " ", line) for line in log)
    assert [line.split(" ", 2)[2].strip() for line in log if re.search(r" cell \d/8 ", line)] == cell_lines

    # provenance of each record: this checkout's commit, the date, host, CPU model and thread count
    records = [json.loads(p.read_text()) for p in (run / "records").glob("*.json")]
    good = [r for r in records if r["status"] == "ok"]
    assert len(good) == 4
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    for record in good:
        assert record["git_commit"].removesuffix("+dirty") == (head if (REPO / ".git").exists() else "")
        assert record["msbench"] == msbench.__version__ and record["host"] == platform.node()
        assert record["threads"] == 1  # OMP_NUM_THREADS=1
        assert record["device_model"] not in ("", platform.machine())  # a model name, not the architecture
        if Path("/proc/cpuinfo").exists():
            assert f": {record['device_model']}\n" in Path("/proc/cpuinfo").read_text()
        date = datetime.fromisoformat(record["date"])
        assert date.utcoffset().total_seconds() == 0 and abs((datetime.now(timezone.utc) - date).total_seconds()) < 3600
    table = pd.read_csv(run / "results.csv")
    assert {"git_commit", "date", "host", "device_model", "threads"} <= set(table.columns)

    # again, in this process: the failed cells are not done, are not retried, and still fail the command
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["run", str(Path("..") / "suites" / suite_file.name), "--out", "run", "--no-report"]) == 1
    first = capsys.readouterr().out.splitlines()[0]
    assert "4 of 8 cells done, 4 failed; nothing to recompute" in first and "4 failed cells are not retried (--retry-failed" in first
    assert len((run / "run.log").read_text().splitlines()) > len(log)  # appended


def test_start_line_counts_failed_cells_apart_from_done_ones():
    recorded = {"a": {"status": "ok"}, "b": {"status": "failed"}, "c": {"status": "failed"}}
    line = start_line("s", 4, recorded, todo=1, where="cpu", run_dir=Path("runs/s"))
    assert line == "s: 1 of 4 cells done, 2 failed; running 1 on cpu; 2 failed cells are not retried (--retry-failed runs them again)"
    assert start_line("s", 4, recorded, todo=3, where="cpu", run_dir=Path("r")) == "s: 1 of 4 cells done, 2 failed; running 3 on cpu"
    assert start_line("s", 3, recorded, todo=0, where="cpu", run_dir=Path("r")).startswith("s: 1 of 3 cells done, 2 failed; nothing to recompute")
    assert start_line("s", 1, {"a": {"status": "ok"}}, todo=0, where="cpu", run_dir=Path("r")) == "s: all 1 cells are done; nothing to recompute (r)"


def test_failure_summary_has_one_line_per_distinct_error_and_names_the_retry_flag():
    failed = [("x/1", "ValueError: bad\n  traceback..."), ("x/2", "RuntimeError: out of memory"), ("x/3", "ValueError: bad")]
    lines = failure_summary(failed, 10, Path("runs/s"))
    assert lines[0] == "3 of 10 cells failed:"
    assert lines[1:3] == ["  2 x ValueError: bad (x/1, x/3)", "  1 x RuntimeError: out of memory (x/2)"]
    assert "--retry-failed" in lines[3] and len(lines) == 4
    assert failure_summary([], 10, Path("runs/s")) == []


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("stream_type, bars, per_cell_shown", [(FakeTerminal, "1", False), (io.StringIO, "1", True),
                                                                (FakeTerminal, "0", True)])
def test_per_cell_lines_give_way_to_the_bar_only_on_a_terminal_that_shows_one(monkeypatch, stream_type, bars, per_cell_shown):
    monkeypatch.setenv("MSBENCH_PROGRESS", bars)
    stream = stream_type()
    handler = ConsoleHandler(stream)
    logger = logging.getLogger("msbench.test-console")
    logger.addHandler(handler)
    try:
        logger.info("cell 1/2 done", extra={"msbench_per_cell": True})
        logger.info("2 of 2 cells failed:")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue().splitlines() == (["cell 1/2 done"] if per_cell_shown else []) + ["2 of 2 cells failed:"]


def test_version_and_git_commit_outside_a_checkout(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith(f"msbench {msbench.__version__}")
    checkout = tmp_path / "checkout"
    (checkout / "venv" / "site-packages").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text("")
    git = ["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "pyproject.toml"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "x"], check=True)
    head = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert git_commit(checkout) == head
    (checkout / "pyproject.toml").write_text("changed")
    git_commit.cache_clear()
    assert git_commit(checkout) == head + "+dirty"
    # an installed package that happens to sit inside some repository is not that repository's checkout
    assert git_commit(checkout / "venv" / "site-packages") == ""


def test_time_refuses_a_suite_without_timing_section_and_its_help_names_one_with(tmp_path, capsys):
    suite = tiny_suite(tmp_path)
    empty = tmp_path / "no-data"  # refused before the data is even looked at
    empty.mkdir()
    assert main(["time", str(suite), "--data-root", str(empty), "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"msbench: {suite}: no [timing] section") and len(error.splitlines()) == 1
    assert not (tmp_path / "run").exists()  # refused before any work
    commands = next(a for a in build_parser()._actions if a.dest == "command")
    help_text = commands.choices["time"].format_help()
    named = re.findall(r"suites/\w+\.toml", help_text)
    assert named and all("\n[timing]" in (REPO / name).read_text() for name in named)


def test_readme_states_the_python_requirement_and_the_system_tools_ci_installs():
    import tomllib

    readme = (REPO / "README.md").read_text()
    required = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert required.startswith(">=") and f"Python {required[2:]} or newer is required" in readme
    ci = (REPO / ".ci" / "run").read_text()
    readme_tools = re.search(r"apt-get install ((?:[\w.-]+ ?)+)", readme).group(1).split()
    ci_tools = re.search(r"apt-get install -y -qq ((?:[\w.-]+ ?)+)", ci).group(1).split()
    assert sorted(readme_tools) == sorted(ci_tools) and "poppler-utils" in ci_tools  # pdffonts


def test_off_a_terminal_training_beats_a_heartbeat_and_sigterm_ends_the_run_like_ctrl_c(tmp_path, mnist_root):
    """A victim that trains for long still says where it is (epoch, step, elapsed, ETA) in the log and
    run.log; SIGTERM from a scheduler stops the run as Ctrl-C does, naming what it kept."""
    suite_file = tiny_suite(tmp_path, victim={"epochs": 40}, matrix={"label_modes": ["soft"]})
    env = {**os.environ, "PYTHONPATH": str(REPO), "MSBENCH_DATA": str(mnist_root), "OMP_NUM_THREADS": "1",
           "MSBENCH_HEARTBEAT": "0.3"}
    env.pop("MSBENCH_PROGRESS", None)
    process = subprocess.Popen([sys.executable, "-m", "msbench", "run", str(suite_file), "--out", "run", "--no-report"],
                               cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    beats = []
    for line in process.stdout:
        if re.search(r"^vanilla mnist/smallcnn: epoch \d+/40, step \d+/\d+, .+ elapsed, ETA ", line):
            beats.append(line)
            if len(beats) == 2:
                process.send_signal(subprocess.signal.SIGTERM)
                break
    rest = process.stdout.read()
    error = process.stderr.read()
    assert process.wait() == 143, error
    assert len(beats) == 2 and "interrupted; finished cells are saved in run" in rest
    assert error.strip().splitlines()[-1] == "terminated (SIGTERM); finished cells are kept, the same command continues"
    log = (tmp_path / "run" / "run.log").read_text()
    assert len(re.findall(rf"^{STAMP} INFO    .*epoch \d+/40, step", log, re.M)) >= 2


def test_check_plugin_runs_the_contract_on_a_plugin_file(tmp_path):
    """`msbench check-plugin FILE`: the file's plugins through tests/test_contracts.py, without packaging it;
    a plugin that answers NaN fails it."""
    good = tmp_path / "good_plugin.py"
    good.write_text(PLUGIN.format(name="checked-good").replace("self.base(x) * float(\"nan\")", "self.base(x)"))
    bad = tmp_path / "bad_plugin.py"
    bad.write_text(PLUGIN.format(name="checked-bad"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for path, name, code in ((good, "checked-good", 0), (bad, "checked-bad", 1)):
        done = subprocess.run([sys.executable, "-m", "msbench", "check-plugin", str(path)], capture_output=True, text=True,
                              env=env, timeout=600)
        assert done.returncode == code, done.stdout[-2000:] + done.stderr[-2000:]
        assert done.stdout.startswith(f"checking {name} against the plugin contract")
