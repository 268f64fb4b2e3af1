"""Executors: where cells run must not change what they compute."""
import logging
import os
import sys
import time
from pathlib import Path

import pytest

import msbench
from msbench.runner.cells import expand
from msbench.cli import main
from msbench.executors import Job, LocalExecutor, PoolExecutor, make_executor, victim_levels
from msbench.runner.suite import load_suite
from tests.conftest import single_thread, tiny_suite

PLUGINS = str(Path(__file__).parent / "plugins")
COMPARED = ["dataset", "arch", "defense", "attack", "label_mode", "seed", "queries", "benign_acc", "clone_acc",
            "relative_perf", "fidelity", "status", "error", "tuned", "cell_id"]


def test_victim_levels_list_each_victim_once_with_bases_first(tmp_path):
    suite = load_suite(tiny_suite(tmp_path, matrix={"defenses": ["vanilla", "mad", "ini", "ini+mad", "am"]}))
    levels = victim_levels(Job(suite, tmp_path, tmp_path, suite.run.device), expand(suite))  # 10 cells
    chains = [sorted("+".join(chain) for _, _, chain, _ in level.values()) for level in levels]
    assert chains == [["ini", "oe", "vanilla"], ["ini+mad", "oe+am", "vanilla+mad"]]


def test_unknown_executor_and_bad_ray_options_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown executor 'dask'"):
        make_executor("dask")
    assert main(["run", str(tiny_suite(tmp_path)), "--executor", "ray", "--cpus-per-task", "0"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == "msbench: cpus_per_task: expected a positive integer, got 0"


FOLDER_PLUGIN = """
from dataclasses import dataclass

from torch import nn

from msbench.defenses import OutputDefense
from msbench.registry import register_defense


class Sharpen(nn.Module):
    def __init__(self, base, power):
        super().__init__()
        self.base, self.power = base, power

    def forward(self, x):
        y = self.base(x) ** self.power
        return y / y.sum(dim=1, keepdim=True)


@register_defense("sharpen")
class SharpenDefense(OutputDefense):
    \"\"\"Raises the base's probabilities to a power and renormalises (keeps the top-1 label).\"\"\"

    @dataclass
    class Config:  # a class of the plugin's module: a worker must import the module to unpickle the suite
        power: float = 2.0

    def build(self, base, ctx):
        return Sharpen(base, self.config.power)
"""


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    before = os.environ.get("PYTHONPATH")
    # workers are separate processes: the test plugins must be importable there too
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [PLUGINS, before]))
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    yield ray
    ray.shutdown()
    if before is None:
        os.environ.pop("PYTHONPATH")
    else:
        os.environ["PYTHONPATH"] = before


def test_ray_run_gives_the_local_tables_and_resumes_with_either(tmp_path, mnist_root, monkeypatch, ray_cluster):
    from msbench.executors.ray_cluster import RayExecutor

    monkeypatch.syspath_prepend(PLUGINS)
    (tmp_path / "folder_sharpen.py").write_text(FOLDER_PLUGIN)  # beside the suite only: workers find it through the suite
    suite = tiny_suite(tmp_path, matrix={"defenses": ["vanilla", "mad", "nan", "sharpen"]},
                       plugins=["constant_defense", "folder_sharpen"],
                       timing={"defenses": ["mad"], "batch_sizes": [8], "repeats": 2, "warmup": 0})
    with single_thread():  # the ray tasks below run one torch thread each too
        local = msbench.run_suite(suite, data_root=mnist_root, out=tmp_path / "local", report=False, echo=lambda _: None)
    lines: list[str] = []
    executor = RayExecutor(cpus_per_task=1)
    distributed = msbench.run_suite(suite, data_root=mnist_root, out=tmp_path / "ray", report=False, echo=lines.append,
                                    executor=executor)
    assert "on the ray executor" in lines[0]
    # the victim stage trained every victim but the broken one (cell tasks only load: VictimMissing otherwise)
    assert len(executor.victim_failures) == 1 and executor.victim_failures[0].startswith("victim mnist/smallcnn/vanilla+nan/seed0 failed")
    assert set(distributed.status) == {"ok", "failed"} and (distributed[distributed.defense == "nan"].status == "failed").all()
    assert sum(line.startswith("cell ") and " failed: " in line for line in lines) == 2  # the broken defense's two cells, each once
    assert "2 of 8 cells failed:" in lines  # and summed up at the end
    # the same figures, bit for bit, and the same artifacts
    key = ["defense", "label_mode"]
    local, distributed = local.sort_values(key).reset_index(drop=True), distributed.sort_values(key).reset_index(drop=True)
    assert local[COMPARED].equals(distributed[COMPARED])
    assert (sorted(p.name for p in (tmp_path / "local" / "victims").glob("*.pt"))
            == sorted(p.name for p in (tmp_path / "ray" / "victims").glob("*.pt")))
    timing = msbench.load_results(tmp_path / "ray", "timing")  # the timing stage ran as a task, on the run's victims
    assert list(timing.defense) == ["vanilla", "mad"] and (timing.victim_source == "suite").all()
    # a run finished on a cluster is finished for the local executor, and the other way round
    for out, executor in ((tmp_path / "ray", "local"), (tmp_path / "local", RayExecutor())):
        lines.clear()
        msbench.run_suite(suite, data_root=mnist_root, out=out, report=False, echo=lines.append, executor=executor)
        assert "nothing to recompute" in lines[0]
    sys.modules.pop("constant_defense", None)


def test_a_dead_ray_worker_is_a_failed_cell_not_a_failed_run(tmp_path, mnist_root, monkeypatch, ray_cluster):
    from msbench.executors.ray_cluster import RayExecutor

    monkeypatch.syspath_prepend(PLUGINS)
    suite = tiny_suite(tmp_path, matrix={"defenses": ["vanilla", "crash"], "label_modes": ["soft"]}, plugins=["crashing_defense"])
    lines: list[str] = []
    frame = msbench.run_suite(suite, data_root=mnist_root, out=tmp_path / "run", report=False, echo=lines.append,
                              executor=RayExecutor())
    assert frame.set_index("defense").status.to_dict() == {"vanilla": "ok", "crash": "failed"}
    assert "died" in frame[frame.defense == "crash"].error.iloc[0].lower()
    sys.modules.pop("crashing_defense", None)


def test_bad_jobs_are_one_line_errors_before_any_work(tmp_path, capsys):
    suite = str(tiny_suite(tmp_path))
    cores = os.cpu_count()
    for jobs, expected in (("0", "msbench: --jobs: expected a positive number of worker processes, got 0"),
                           ("-2", "msbench: --jobs: expected a positive number of worker processes, got -2"),
                           (str(cores + 1), f"msbench: --jobs {cores + 1}: more worker processes than this machine's "
                                            f"{cores} CPU cores (os.cpu_count()); use at most {cores}")):
        assert main(["run", suite, "--jobs", jobs]) == 2
        assert capsys.readouterr().err.strip() == expected
    assert main(["run", suite, "--jobs", "2", "--executor", "ray"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # nothing started
    assert isinstance(make_executor("local", jobs=1), LocalExecutor)  # --jobs 1: this process, as without it
    with pytest.raises(ValueError, match=f"jobs {cores + 1}: more worker processes"):
        make_executor(jobs=cores + 1)  # run_suite(..., jobs=) asks the same, before any work


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="two worker processes need two CPU cores")
def test_pool_run_gives_the_local_tables_and_resumes_with_either(tmp_path, mnist_root, monkeypatch):
    monkeypatch.syspath_prepend(PLUGINS)  # spawned workers start with the driver's sys.path
    (tmp_path / "folder_sharpen.py").write_text(FOLDER_PLUGIN)  # beside the suite only: workers find it through the suite
    suite = tiny_suite(tmp_path, matrix={"defenses": ["vanilla", "nan", "sharpen"]}, victim={"epochs": 1},
                       plugins=["constant_defense", "folder_sharpen"])
    with single_thread():  # the two workers below run one torch thread each too
        local = msbench.run_suite(suite, data_root=mnist_root, out=tmp_path / "local", report=False, echo=lambda _: None)
    lines: list[str] = []
    assert PoolExecutor(jobs=2).threads == max(1, os.cpu_count() // 2)  # one each on two cores
    executor = PoolExecutor(jobs=2, threads=1)
    pooled = msbench.run_suite(suite, data_root=mnist_root, out=tmp_path / "pool", report=False, echo=lines.append,
                               executor=executor)
    assert (pooled[pooled.status == "ok"].threads == 1).all()  # set in each worker before its workspace
    # the victim stage trained every victim but the broken one (cell tasks only load: VictimMissing otherwise)
    assert executor.victim_failures == [line for line in executor.victim_failures if "vanilla+nan/seed0 failed" in line] != []
    assert (pooled[pooled.defense == "nan"].status == "failed").all() and (pooled[pooled.defense != "nan"].status == "ok").all()
    assert "2 of 6 cells failed:" in lines
    key = ["defense", "label_mode"]
    local, pooled = local.sort_values(key).reset_index(drop=True), pooled.sort_values(key).reset_index(drop=True)
    assert local[COMPARED].equals(pooled[COMPARED])  # the same figures, bit for bit, at one thread per process
    assert (sorted(p.name for p in (tmp_path / "local" / "victims").glob("*.pt"))
            == sorted(p.name for p in (tmp_path / "pool" / "victims").glob("*.pt")))
    for out, jobs in ((tmp_path / "pool", 1), (tmp_path / "local", 2)):  # finished for either executor
        lines.clear()
        msbench.run_suite(suite, data_root=mnist_root, out=out, report=False, echo=lines.append, jobs=jobs)
        assert "nothing to recompute" in lines[0]
    sys.modules.pop("constant_defense", None)


def _await(path: Path) -> None:
    for _ in range(1200):
        if path.exists():
            return
        time.sleep(0.05)


def _outlive(marks: str) -> str:
    """Runs until its neighbour is about to die (at once when run again)."""
    (Path(marks) / "started").touch()
    _await(Path(marks) / "dying")
    time.sleep(0.2)
    return "survived"


def _die(marks: str) -> None:
    """Kills its worker while ``_outlive`` runs in the other one."""
    _await(Path(marks) / "started")
    (Path(marks) / "dying").touch()
    os._exit(3)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="two worker processes need two CPU cores")
def test_a_dying_worker_fails_its_own_task_only(tmp_path):
    from msbench.executors.pool import WorkerDied

    alone, pair = tmp_path / "alone", tmp_path / "pair"
    alone.mkdir(), pair.mkdir()
    (alone / "started").touch()
    executor = PoolExecutor(jobs=2)
    try:
        (died,) = executor._run([("die", _die, (str(alone),))])  # alone in flight: the culprit
        assert isinstance(died[1], WorkerDied) and "died" in str(died[1])
        # the next stage gets a working pool; it breaks under both tasks, each runs again alone in a new one
        outcomes = dict(executor._run([("outlive", _outlive, (str(pair),)), ("die", _die, (str(pair),))]))
        assert outcomes["outlive"] == "survived" and isinstance(outcomes["die"], WorkerDied)
    finally:
        executor.close()
