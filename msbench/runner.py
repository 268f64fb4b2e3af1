"""The runner: suite -> cells -> victim (cached) -> attack -> record; an executor decides where.

Victims are content-addressed artifacts under ``<run dir>/victims/``: trained once per
(dataset, arch, defense chain, seed, settings) and shared by every cell and composition that
needs them. Each finished cell writes one record atomically, so Ctrl-C or a kill loses at most
the cell in progress, and a re-run computes only what is missing.
"""
from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
from torch import nn

import msbench
from msbench import attacks as _attacks  # noqa: F401  (registers built-in attacks)
from msbench import defenses as _defenses  # noqa: F401  (registers built-in defenses)
from msbench.attacks import AttackContext
from msbench.cells import Cell, cell_key, expand, victim_key
from msbench.config import as_dict
from msbench.data import ImageData, default_data_root, load_split
from msbench.defenses import OutputDefense, VictimContext, load_cached_victim, save_victim
from msbench.distortion import DistortionMeter, mean_distortion, restart_randomness
from msbench.executors import Executor, Job, make_executor
from msbench.executors.base import forget_workspaces
from msbench.logs import CellLines, failure_summary, start_line, teller
from msbench.models import build_model
from msbench.fingerprint import fingerprint
from msbench.oracle import Oracle, QueryLedger, check_probabilities
from msbench.progress import progress
from msbench.provenance import provenance
from msbench.registry import ATTACKS, DEFENSES
from msbench.io import DiskError, RunLock, make_dirs, write_atomic
from msbench.results import RecordStore, results_frame, write_tables
from msbench.seeds import derive_seed, seeded
from msbench.suite import Suite, SuiteError, check_data, device_problem, load_suite
from msbench.training import accuracy, predict_labels

SUBSET_SEED = 0  # data subsets and the validation split are the same for every seed of a suite


class VictimTampered(RuntimeError):
    """A cell's attack changed the victim it queried; the cell is void and the victim is reloaded."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_device(name: str, where: str) -> None:
    """Refuse, before any work, a device this machine does not have (``cuda`` without a GPU)."""
    problem = device_problem(name)
    if problem is None and name != "auto":
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            problem = f"'{name}' is not available on this machine (no CUDA GPU); use 'cpu' or 'auto'"
        elif device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
            problem = f"'{name}' is not available: this machine has {torch.cuda.device_count()} CUDA device(s)"
        elif device.type == "mps" and not torch.backends.mps.is_available():
            problem = f"'{name}' is not available on this machine; use 'cpu' or 'auto'"
    if problem:
        file, _, key = where.rpartition(": ")
        raise SuiteError(file or "msbench", key, problem)


def check_run_dir(run_dir: Path) -> None:
    """A run directory msbench can write: its folders are folders, its files are not folders."""
    for name in ("records", "victims"):
        if (run_dir / name).exists() and not (run_dir / name).is_dir():
            raise DiskError(run_dir / name, "a file stands where a folder is needed; move it away")
    for name in ("suite.json", "results.csv", "curves.csv"):
        if (run_dir / name).is_dir():
            raise DiskError(run_dir / name, "is a folder, expected a file; move it away")
    make_dirs(run_dir / "records")


@dataclass
class VictimSplits:
    train: ImageData
    val: ImageData
    test: ImageData


@dataclass
class Workspace:
    """Per-run state: the suite, where data and artifacts live, and victims loaded so far."""

    suite: Suite
    data_root: Path
    run_dir: Path
    device: torch.device
    _victims: dict[str, tuple[nn.Module, dict[str, Any]]] = field(default_factory=dict)
    _fingerprints: dict[str, str] = field(default_factory=dict)  # of each loaded victim, checked after every cell

    # -- data -------------------------------------------------------------------------------
    def splits(self, dataset: str) -> VictimSplits:
        spec = self.suite.spec(dataset)
        train = load_split(spec, self.data_root, "train").subset(self.suite.subset(dataset, "train"), SUBSET_SEED)
        train, val = train.split(self.suite.run.val_fraction, SUBSET_SEED)
        test = load_split(spec, self.data_root, "test").subset(self.suite.subset(dataset, "test"), SUBSET_SEED)
        return VictimSplits(train, val, test)

    def role_data(self, dataset: str, role: str) -> ImageData:
        """A role dataset's training split, shaped like the victim's inputs."""
        name = self.suite.role(dataset, role)
        return load_split(self.suite.spec(name), self.data_root, "train", shape=self.suite.spec(dataset).shape)

    def model_factory(self, dataset: str, arch: str):
        spec = self.suite.spec(dataset)
        return lambda: build_model(arch, spec.shape, spec.num_classes, spec.mean, spec.std).to(self.device)

    def victim_context(self, dataset: str, arch: str, defense: str, seed: int) -> VictimContext:
        spec = self.suite.spec(dataset)
        splits = self.splits(dataset)
        recipe = self.suite.victim_recipe(dataset, defense)
        declared = DEFENSES.get(defense).roles  # only what the defense declares: its victim key covers exactly these
        roles = {role: (lambda role=role: self.role_data(dataset, role)) for role in declared if self.suite.role(dataset, role)}
        augment = spec.augment if recipe.augment == "auto" else recipe.augment
        return VictimContext(spec, arch, splits.train, splits.val, recipe, self.device, seed, roles,
                             self.model_factory(dataset, arch), augment)

    # -- victims ----------------------------------------------------------------------------
    def victim(self, dataset: str, arch: str, chain: list[str], seed: int) -> tuple[nn.Module, dict[str, Any]]:
        """The deployed model of a defense chain, trained or loaded from the artifact cache."""
        key = victim_key(self.suite, dataset, arch, chain, seed)
        if key in self._victims:
            return self._victims[key]
        name = chain[-1]
        defense = DEFENSES.get(name)(self.suite.defenses[name].config)
        ctx = self.victim_context(dataset, arch, name, seed)
        base = None
        if isinstance(defense, OutputDefense):
            base, _ = self.victim(dataset, arch, chain[:-1], seed)
        with seeded(derive_seed(seed, f"{name}.build")):  # models come from ctx.new_model; this covers any other draw
            module = defense.build(ctx) if base is None else defense.build(base, ctx)
        module.to(self.device)
        path = self.run_dir / "victims" / f"{key}.pt"
        if (info := load_cached_victim(module, path)) is not None:  # None: absent, or corrupt (reported, set aside)
            module.to(self.device)
        else:
            started = time.perf_counter()
            with seeded(derive_seed(seed, f"{name}.fit")):
                defense.fit(module, ctx)
            seconds = time.perf_counter() - started
            module.eval()
            tuned = self.match_benign(defense, module, base, ctx) if isinstance(defense, OutputDefense) else None
            test = self.splits(dataset).test
            with torch.no_grad():
                check_probabilities(module(test.floats(slice(0, 256), self.device)))
            benign = accuracy(predict_labels(module, test.images, self.device), test.labels)
            info = {"benign_acc": benign, "seconds": seconds, "chain": chain, "dataset": dataset, "arch": arch,
                    "seed": seed, "config": as_dict(defense.config), "tuned": tuned}
            save_victim(module, path, info)
        if info.get("tuned"):
            defense.tune(module, info["tuned"]["value"])
        module.eval()
        for parameter in module.parameters():
            parameter.requires_grad_(False)
        self._victims[key] = (module, info)
        self._fingerprints[key] = fingerprint(module)
        return module, info

    def check_victim(self, dataset: str, arch: str, chain: list[str], seed: int) -> None:
        """Raise ``VictimTampered`` if the victim of a chain differs from when it was loaded. Every
        loaded victim that changed (a base victim is shared by the output defenses over it) is
        dropped, so later cells load it again from its checkpoint."""
        key = victim_key(self.suite, dataset, arch, chain, seed)
        if key not in self._victims or fingerprint(self._victims[key][0]) == self._fingerprints[key]:
            return
        for other in [k for k, (module, _) in self._victims.items() if fingerprint(module) != self._fingerprints[k]]:
            del self._victims[other], self._fingerprints[other]
        raise VictimTampered(f"the attack changed the victim {dataset}/{arch}/{'+'.join(chain)}/seed{seed} "
                             "(its parameters, buffers or settings); this cell's result is void and the victim is reloaded for later cells")

    @torch.no_grad()
    def match_benign(self, defense, module: nn.Module, base: nn.Module, ctx: VictimContext) -> dict[str, Any] | None:
        """Pick the strongest setting of the defense's ``tunable`` whose benign accuracy on the
        validation split stays within ``run.match_benign`` points of its base victim's, as the
        paper tunes MAD's epsilon and AM's tau. The wrapper reads the tunable from an attribute of
        the same name at inference, so trying a value costs one pass over the validation split.

        A defense whose module has no such attribute, or answers the same at the grid's strongest
        and weakest values, is refused: setting an attribute nothing reads would tune nothing and
        record a setting that was never applied."""
        tolerance = self.suite.run.match_benign
        if tolerance is None or not defense.tunable or not defense.tunable_grid:
            return None
        name, grid = defense.tunable, defense.tunable_grid
        x = ctx.val.floats(slice(0, 256), self.device)
        answers = []
        for value in (grid[0], grid[-1]):
            defense.tune(module, value)
            for part in module.modules():  # a stochastic defense draws the same noise both times
                if callable(getattr(part, "restart_randomness", None)):
                    part.restart_randomness()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                answers.append(module(x))
        if torch.equal(*answers):
            raise ValueError(f"{defense.registered_name}: its answers on the validation images are the same at "
                             f"{name} = {grid[0]} and {name} = {grid[-1]}; the module must read the attribute "
                             f"'{name}' at inference for benign matching to tune it")
        reference = accuracy(predict_labels(base, ctx.val.images, self.device), ctx.val.labels)
        for value in defense.tunable_grid:  # strongest first
            defense.tune(module, value)
            val_acc = accuracy(predict_labels(module, ctx.val.images, self.device), ctx.val.labels)
            if reference - val_acc <= tolerance:
                break
        return {"name": defense.tunable, "value": value, "val_acc": val_acc, "base_val_acc": reference}

    def at_setting(self, victim: nn.Module, info: dict[str, Any], defense: str, value: float,
                   test: ImageData) -> tuple[nn.Module, dict[str, Any]]:
        """A trade-off sweep's victim: the trained one with its last defense's tunable set to ``value``.

        A shallow copy: it shares the trained modules and changes only the plain attribute the
        wrapper reads at inference, so the cached (matched) victim keeps its own value."""
        plugin = DEFENSES.get(defense)(self.suite.defenses[defense].config)
        tunable = plugin.tunable
        swept = copy.copy(victim)
        plugin.tune(swept, value)
        restart_randomness(swept)
        benign = accuracy(predict_labels(swept, test.images, self.device), test.labels)
        return swept, {**info, "benign_acc": benign, "tuned": {"name": tunable, "value": value, "swept": True}}

    # -- cells ------------------------------------------------------------------------------
    def run_cell(self, cell: Cell, cell_id: str) -> dict[str, Any]:
        reads_surrogate = "surrogate" in ATTACKS.get(cell.attack).roles
        record: dict[str, Any] = {**cell.__dict__, "cell_id": cell_id, "status": "ok", "error": "",
                                  "surrogate": (self.suite.role(cell.dataset, "surrogate") or "") if reads_surrogate else ""}
        chain = self.suite.chain(cell.defense)
        victim, info = self.victim(cell.dataset, cell.arch, chain, cell.seed)
        links = [self.victim(cell.dataset, cell.arch, chain[:i + 1], cell.seed)[1] for i in range(len(chain))]
        victim_seconds = sum(link["seconds"] for link in links)
        splits = self.splits(cell.dataset)
        if cell.setting is not None:
            victim, info = self.at_setting(victim, info, chain[-1], cell.setting, splits.test)
            links[-1] = info
        tuned = "; ".join(f"{name}.{link['tuned']['name']}={link['tuned']['value']:g}" for name, link in zip(chain, links) if link.get("tuned"))
        spec = self.suite.spec(cell.dataset)
        settings = self.suite.attacks[cell.attack]
        attack = ATTACKS.get(cell.attack)(settings.config)
        victim_labels = predict_labels(victim, splits.test.images, self.device)
        undefended = self.victim(cell.dataset, cell.arch, chain[:1], cell.seed)[0] if len(chain) > 1 else None
        meter = DistortionMeter(undefended) if undefended is not None else None
        distortion_test = mean_distortion(victim, undefended, splits.test.images, self.device) if undefended is not None else float("nan")
        restart_randomness(victim)  # a randomised defense answers the attack from its seed, whatever was asked before
        ledger = QueryLedger()  # the runner's own count: the attack holds only the oracle
        oracle = Oracle(victim, cell.label_mode, settings.config.budget, spec.num_classes, input_shape=spec.shape, ledger=ledger,
                        observe=meter.observe if meter is not None else None)
        curve: list[tuple[int, float]] = []

        def report(queries: int, clone: nn.Module) -> None:
            clone.eval()
            curve.append((queries, accuracy(predict_labels(clone, splits.test.images, self.device), splits.test.labels)))

        ctx = AttackContext(
            query_data=lambda: self.attack_role(cell.dataset, attack, "surrogate"),
            seed_data=lambda: splits.train.unlabeled(), make_clone=self.model_factory(cell.dataset, cell.arch),
            recipe=settings.recipe, device=self.device, seed=derive_seed(cell.seed, "attack"),  # the attack's stream only
            num_classes=spec.num_classes, report=report,
            defense="+".join(chain), defense_config=public_settings(chain, links), input_shape=spec.shape)
        started = time.perf_counter()
        try:
            with seeded(ctx.seed_for("run")):
                clone = attack.run(oracle, ctx).eval()
            clone_labels = predict_labels(clone, splits.test.images, self.device)
            clone_acc = accuracy(clone_labels, splits.test.labels)
        finally:  # also when the attack failed: a damaged victim must not serve later cells
            self.check_victim(cell.dataset, cell.arch, chain, cell.seed)
        record.update(budget=settings.config.budget, queries=ledger.queries, benign_acc=info["benign_acc"], clone_acc=clone_acc,
                      relative_perf=clone_acc / info["benign_acc"] if info["benign_acc"] else float("nan"),
                      fidelity=accuracy(clone_labels, victim_labels), victim_seconds=victim_seconds, tuned=tuned,
                      distortion_queries=meter.mean if meter is not None else float("nan"), distortion_test=distortion_test,
                      attack_seconds=time.perf_counter() - started, notes=json.dumps(ctx.notes) if ctx.notes else "",
                      curve=curve, msbench=msbench.__version__, torch=torch.__version__, device=str(self.device))
        record.update(provenance(self.device))
        return record

    def attack_role(self, dataset: str, attack: Any, role: str) -> Any:
        """A role dataset's images, without labels, for an attack that declares the role (its cell
        key covers exactly the roles it declares)."""
        if role not in type(attack).roles:
            raise KeyError(f"{type(attack).registered_name or type(attack).__name__}: reads the '{role}' dataset "
                           f"without declaring it: add roles = (\"{role}\",) to the attack class")
        return self.role_data(dataset, role).unlabeled()


def public_settings(chain: list[str], links: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each defense link's deployed settings, as a defense-aware attacker is told them: its config
    with the value benign matching chose. Nothing else of the victim (weights, seed, data)."""
    settings = {}
    for name, link in zip(chain, links):
        config = dict(link["config"])
        if link.get("tuned"):
            config[link["tuned"]["name"]] = link["tuned"]["value"]
        settings[name] = config
    return settings


def run_suite(suite: str | Path | Suite, data_root: str | Path | None = None, out: str | Path | None = None,
              device: str | None = None, retry_failed: bool = False, echo: Callable[[str], Any] | None = None,
              report: bool = True, report_dir: str | Path | None = None, executor: str | Executor = "local",
              force: bool = False) -> pd.DataFrame:
    """Run every cell of a suite not already done; returns the results table (also in results.csv).

    A cell that fails (an exception while training its victim, attacking or evaluating) does not
    stop the run and does not raise: it is a row with ``status == "failed"`` and its ``error`` (the
    record file keeps the traceback), it is not done, and a later run leaves it alone unless
    ``retry_failed``. ``frame.attrs["cells"]`` counts the suite's cells (``planned``, ``done``,
    ``failed``, ``pending``); ``msbench run`` exits 1 when ``failed`` is not 0. ``force``
    recomputes every cell and retrains every victim of the suite, done or not.

    Messages (a start line, one line per finished cell with its clone accuracy, seconds and the
    ETA, failures, a summary of them) go to the ``msbench`` logger, are appended with UTC
    timestamps to ``<run dir>/run.log``, and go to ``echo`` when given; with neither ``echo`` nor
    a logging configuration, to stdout (see ``msbench.logs``).

    ``executor``: ``"local"`` (this process), ``"ray"`` (a Ray cluster: ``RAY_ADDRESS``, else a local
    one), or an ``Executor`` such as ``RayExecutor(address=..., gpus_per_task=1)``. With ``report``
    (default), renders the report from the run's tables into ``report_dir`` (default
    ``reports/<suite name>``); a failed rendering only warns, the results stay in the run dir.

    Every input is checked before any work (suite values, data files, the device, the run
    directory); a second run on the same run directory stops at once (``RunLock``).
    """
    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    root = Path(data_root) if data_root else default_data_root()
    check_data(suite, root)
    executor = make_executor(executor)
    if executor.in_process:
        check_device(device or suite.run.device, "--device" if device else f"{suite.path}: run.device")
    run_dir = Path(out) if out else Path("runs") / suite.name
    with RunLock(run_dir):  # a second run on this directory stops here, naming the holder
        check_run_dir(run_dir)
        return _run_locked(suite, root, run_dir, device, retry_failed, echo, report, report_dir, executor, force)


def _run_locked(suite: Suite, root: Path, run_dir: Path, device: str | None, retry_failed: bool, echo, report: bool,
                report_dir: str | Path | None, executor: Executor, force: bool) -> pd.DataFrame:
    write_atomic(run_dir / "suite.json", json.dumps(suite.resolved(), indent=1, default=str))
    store = RecordStore(run_dir)
    tell = teller(run_dir, echo)
    cells = [(cell, cell_key(suite, cell)) for cell in expand(suite)]
    by_id = {cell_id: cell for cell, cell_id in cells}
    done = {cell_id: record for cell_id in by_id if (record := store.get(cell_id)) is not None}  # read once; kept current

    def finished() -> list[dict]:
        return [done[cell_id] for cell_id in by_id if cell_id in done]

    todo = [(cell, cell_id) for cell, cell_id in cells
            if force or cell_id not in done or (retry_failed and done[cell_id].get("status") != "ok")]
    where = resolve_device(device or suite.run.device) if executor.in_process else f"the {executor.name} executor"
    tell(start_line(suite.name, len(cells), {} if force else done, len(todo), where, run_dir))
    job = Job(suite, root.resolve(), run_dir.resolve(), device)
    if force:
        forget_victims(job, [cell for cell, _ in todo])
    try:
        if todo:
            with progress(total=len(todo), desc="cells", unit="cell", leave=True) as bar:
                stream = executor.records(job, todo, on_start=lambda cell: bar.set_description(cell.label()))
                lines = CellLines(len(todo), tell)
                try:
                    for record in stream:
                        store.put(record)
                        done[record["cell_id"]] = record
                        write_tables(run_dir, finished())
                        lines.finished(by_id[record["cell_id"]].label(), record)
                        bar.update(1)
                except KeyboardInterrupt:
                    tell(f"interrupted; finished cells are saved in {run_dir}", logging.WARNING)
                    raise
                finally:
                    if hasattr(stream, "close"):  # a generator: lets the executor cancel work still queued
                        stream.close()
        records = finished()
        write_tables(run_dir, records)
        if "timing" in suite.raw and suite.extra["timing"].with_run:  # inference cost (timing.csv), skipped when up to date
            from msbench.timing import time_suite
            try:
                executor.call(time_suite, suite, job.data_root, job.run_dir, device, reuse=True,
                              **({"echo": tell} if executor.in_process else {}))
            except Exception as failure:  # the attack results are already safe; `msbench time` can retry
                tell(f"warning: timing stage failed ({type(failure).__name__}: {failure}); results are in {run_dir}", logging.WARNING)
    finally:
        executor.close()
    if report:
        try:
            from msbench.report import render_report
            target = render_report(run_dir, out=Path(report_dir) if report_dir else Path("reports") / suite.name)
            tell(f"report: {target / 'index.html'}")
        except Exception as failure:  # the results are safe on disk; `msbench report` can retry
            tell(f"warning: report not rendered ({type(failure).__name__}: {failure}); results are in {run_dir}", logging.WARNING)
    failed = [(by_id[r["cell_id"]].label(), r.get("error", "")) for r in records if r.get("status") != "ok"]
    for line in failure_summary(failed, len(cells), run_dir):
        tell(line, logging.WARNING)
    frame = results_frame(records)
    frame.attrs["cells"] = {"planned": len(cells), "done": len(records) - len(failed), "failed": len(failed),
                            "pending": len(cells) - len(records)}
    return frame


def forget_victims(job: Job, cells: list[Cell]) -> None:
    """Delete the cached victims of ``cells`` (every link of their chains) from the run directory
    and from this process's memory, so that they are trained again."""
    for cell in cells:
        chain = job.suite.chain(cell.defense)
        for length in range(1, len(chain) + 1):
            key = victim_key(job.suite, cell.dataset, cell.arch, chain[:length], cell.seed)
            (job.run_dir / "victims" / f"{key}.pt").unlink(missing_ok=True)
    forget_workspaces(job)


def summary(frame: pd.DataFrame) -> str:
    """The console table printed at the end of a run."""
    if frame.empty:
        return "(no results)"
    shown = frame[["dataset", "arch", "defense", "attack", "label_mode", "seed", "queries", "benign_acc", "clone_acc",
                   "relative_perf", "fidelity", "status"]].copy()
    return shown.to_string(index=False, float_format=lambda v: f"{v:.2f}")
