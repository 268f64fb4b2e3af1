"""The runner: suite -> cells -> victim (cached) -> attack -> record; an executor decides where.

Victims are content-addressed artifacts under ``<run dir>/victims/``: trained once per
(dataset, arch, defense chain, seed, settings) and shared by every cell and composition that
needs them. Each finished cell writes one record atomically, so Ctrl-C or a kill loses at most
the cell in progress, and a re-run computes only what is missing.
"""
from __future__ import annotations

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
from msbench.defenses import VictimContext, load_victim, save_victim
from msbench.executors import Executor, Job, make_executor
from msbench.logs import CellLines, failure_summary, start_line, teller
from msbench.models import build_model
from msbench.oracle import Oracle, check_probabilities
from msbench.progress import progress
from msbench.provenance import provenance
from msbench.registry import ATTACKS, DEFENSES
from msbench.results import RecordStore, results_frame, write_atomic, write_tables
from msbench.suite import Suite, check_data, load_suite
from msbench.training import accuracy, predict_labels

SUBSET_SEED = 0  # data subsets and the validation split are the same for every seed of a suite


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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
        roles = {role: (lambda role=role: self.role_data(dataset, role)) for role in ("ood", "hash") if self.suite.role(dataset, role)}
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
        torch.manual_seed(seed)
        base = None
        if defense.kind == "training":
            module = defense.build(ctx)
        else:
            base, _ = self.victim(dataset, arch, chain[:-1], seed)
            module = defense.build(base, ctx)
        module.to(self.device)
        path = self.run_dir / "victims" / f"{key}.pt"
        if path.exists():
            info = load_victim(module, path)
            module.to(self.device)
        else:
            started = time.perf_counter()
            torch.manual_seed(seed)
            defense.fit(module, ctx)
            seconds = time.perf_counter() - started
            module.eval()
            tuned = self.match_benign(defense, module, base, ctx) if defense.kind == "output" else None
            test = self.splits(dataset).test
            with torch.no_grad():
                check_probabilities(module(test.floats(slice(0, 256), self.device)))
            benign = accuracy(predict_labels(module, test.images, self.device), test.labels)
            info = {"benign_acc": benign, "seconds": seconds, "chain": chain, "dataset": dataset, "arch": arch,
                    "seed": seed, "config": as_dict(defense.config), "tuned": tuned}
            save_victim(module, path, info)
        if info.get("tuned"):
            setattr(module, defense.tunable, info["tuned"]["value"])
        module.eval()
        for parameter in module.parameters():
            parameter.requires_grad_(False)
        self._victims[key] = (module, info)
        return module, info

    @torch.no_grad()
    def match_benign(self, defense, module: nn.Module, base: nn.Module, ctx: VictimContext) -> dict[str, Any] | None:
        """Pick the strongest setting of the defense's ``tunable`` whose benign accuracy on the
        validation split stays within ``run.match_benign`` points of its base victim's, as the
        paper tunes MAD's epsilon and AM's tau. The wrapper reads the tunable from an attribute of
        the same name at inference, so trying a value costs one pass over the validation split."""
        tolerance = self.suite.run.match_benign
        if tolerance is None or not defense.tunable or not defense.tunable_grid:
            return None
        reference = accuracy(predict_labels(base, ctx.val.images, self.device), ctx.val.labels)
        for value in defense.tunable_grid:  # strongest first
            setattr(module, defense.tunable, value)
            val_acc = accuracy(predict_labels(module, ctx.val.images, self.device), ctx.val.labels)
            if reference - val_acc <= tolerance:
                break
        return {"name": defense.tunable, "value": value, "val_acc": val_acc, "base_val_acc": reference}

    # -- cells ------------------------------------------------------------------------------
    def run_cell(self, cell: Cell, cell_id: str) -> dict[str, Any]:
        record: dict[str, Any] = {**cell.__dict__, "cell_id": cell_id, "status": "ok", "error": "",
                                  "surrogate": self.suite.role(cell.dataset, "surrogate") or ""}
        chain = self.suite.chain(cell.defense)
        victim, info = self.victim(cell.dataset, cell.arch, chain, cell.seed)
        links = [self.victim(cell.dataset, cell.arch, chain[:i + 1], cell.seed)[1] for i in range(len(chain))]
        victim_seconds = sum(link["seconds"] for link in links)
        tuned = "; ".join(f"{name}.{link['tuned']['name']}={link['tuned']['value']:g}" for name, link in zip(chain, links) if link.get("tuned"))
        splits = self.splits(cell.dataset)
        spec = self.suite.spec(cell.dataset)
        settings = self.suite.attacks[cell.attack]
        attack = ATTACKS.get(cell.attack)(settings.config)
        oracle = Oracle(victim, cell.label_mode, settings.config.budget, spec.num_classes)
        victim_labels = predict_labels(victim, splits.test.images, self.device)
        curve: list[tuple[int, float]] = []

        def report(queries: int, clone: nn.Module) -> None:
            clone.eval()
            curve.append((queries, accuracy(predict_labels(clone, splits.test.images, self.device), splits.test.labels)))

        ctx = AttackContext(
            query_data=lambda: self.role_data(cell.dataset, "surrogate"),
            seed_data=lambda: splits.train, make_clone=self.model_factory(cell.dataset, cell.arch),
            recipe=settings.recipe, device=self.device, seed=cell.seed, num_classes=spec.num_classes, report=report,
            defense="+".join(chain), defense_config=public_settings(chain, links), input_shape=spec.shape)
        torch.manual_seed(cell.seed)
        started = time.perf_counter()
        clone = attack.run(oracle, ctx).eval()
        clone_labels = predict_labels(clone, splits.test.images, self.device)
        clone_acc = accuracy(clone_labels, splits.test.labels)
        record.update(budget=settings.config.budget, queries=oracle.queries, benign_acc=info["benign_acc"], clone_acc=clone_acc,
                      relative_perf=clone_acc / info["benign_acc"] if info["benign_acc"] else float("nan"),
                      fidelity=accuracy(clone_labels, victim_labels), victim_seconds=victim_seconds, tuned=tuned,
                      attack_seconds=time.perf_counter() - started, notes=json.dumps(ctx.notes) if ctx.notes else "",
                      curve=curve, msbench=msbench.__version__, torch=torch.__version__, device=str(self.device))
        record.update(provenance(self.device))
        return record


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
              report: bool = True, report_dir: str | Path | None = None, executor: str | Executor = "local") -> pd.DataFrame:
    """Run every cell of a suite not already done; returns the results table (also in results.csv).

    A cell that fails (an exception while training its victim, attacking or evaluating) does not
    stop the run and does not raise: it is a row with ``status == "failed"`` and its ``error`` (the
    record file keeps the traceback), it is not done, and a later run leaves it alone unless
    ``retry_failed``. ``frame.attrs["cells"]`` counts the suite's cells (``planned``, ``done``,
    ``failed``, ``pending``); ``msbench run`` exits 1 when ``failed`` is not 0.

    Messages (a start line, one line per finished cell with its clone accuracy, seconds and the
    ETA, failures, a summary of them) go to the ``msbench`` logger, are appended with UTC
    timestamps to ``<run dir>/run.log``, and go to ``echo`` when given; with neither ``echo`` nor
    a logging configuration, to stdout (see ``msbench.logs``).

    ``executor``: ``"local"`` (this process), ``"ray"`` (a Ray cluster: ``RAY_ADDRESS``, else a local
    one), or an ``Executor`` such as ``RayExecutor(address=..., gpus_per_task=1)``. With ``report``
    (default), renders the report from the run's tables into ``report_dir`` (default
    ``reports/<suite name>``); a failed rendering only warns, the results stay in the run dir.
    """
    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    root = Path(data_root) if data_root else default_data_root()
    check_data(suite, root)
    run_dir = Path(out) if out else Path("runs") / suite.name
    write_atomic(run_dir / "suite.json", json.dumps(suite.resolved(), indent=1, default=str))
    store = RecordStore(run_dir)
    tell = teller(run_dir, echo)
    cells = [(cell, cell_key(suite, cell)) for cell in expand(suite)]
    by_id = {cell_id: cell for cell, cell_id in cells}
    done = {cell_id: record for cell_id in by_id if (record := store.get(cell_id)) is not None}  # read once; kept current

    def finished() -> list[dict]:
        return [done[cell_id] for cell_id in by_id if cell_id in done]

    todo = [(cell, cell_id) for cell, cell_id in cells
            if cell_id not in done or (retry_failed and done[cell_id].get("status") != "ok")]
    executor = make_executor(executor)
    where = resolve_device(device or suite.run.device) if executor.in_process else f"the {executor.name} executor"
    tell(start_line(suite.name, len(cells), done, len(todo), where, run_dir))
    job = Job(suite, root.resolve(), run_dir.resolve(), device)
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


def summary(frame: pd.DataFrame) -> str:
    """The console table printed at the end of a run."""
    if frame.empty:
        return "(no results)"
    shown = frame[["dataset", "arch", "defense", "attack", "label_mode", "seed", "queries", "benign_acc", "clone_acc",
                   "relative_perf", "fidelity", "status"]].copy()
    return shown.to_string(index=False, float_format=lambda v: f"{v:.2f}")
