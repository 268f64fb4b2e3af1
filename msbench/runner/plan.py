"""What a run will cost before it starts: cells cached and to run, victims to train, and an estimate.

``plan_suite`` reads only the suite and what the run directory already holds (records, victim
checkpoints); it loads no data, trains nothing and creates nothing, so a GPU suite can be planned on
a laptop. Each part of the estimate comes from the best source there is, and the plan says which:

- **measured**: the mean of this run directory's records for the same (dataset, arch, defense)
  victim (``victim_train_seconds``) or the same (dataset, arch, attack) cells (``attack_seconds``);
- **cost model** where nothing was measured: images x epochs x a per-image training cost of the
  architecture on the device (``IMAGE_SECONDS``, measured once on a 2-core CPU for the small CNN and
  ResNet-18; the GPU figures are assumptions), times the defense link's declared ``training_cost``
  (relative to one Vanilla training, the InI paper's Table B.1), and for an attack one clone
  training on its budget's answers (or the attack's declared ``passes_per_query``). It is a rough
  floor for multi-round attacks (JBDA, ActiveThief, DFME) and says so.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


from msbench.runner.cells import cell_key, expand, victim_key
from msbench.defenses.chain import resolve_chain
from msbench.logs import duration
from msbench.registry import ATTACKS, DEFENSES
from msbench.runner.results import record_problem
from msbench.runner.suite_schema import Suite
from msbench.runner.workspace import requested_device, resolve_device

IMAGE_SECONDS = {("smallcnn", "cpu"): 12.0 / 60000, ("resnet18", "cpu"): 540.0 / 60000, ("vgg16", "cpu"): 800.0 / 60000,
                 ("smallcnn", "cuda"): 12.0 / 60000 / 10, ("resnet18", "cuda"): 540.0 / 60000 / 100,
                 ("vgg16", "cuda"): 800.0 / 60000 / 100}
"""Seconds to train on one image for one epoch. CPU: measured on 2 cores (a 60,000-image MNIST epoch
takes about 12 s for the small CNN, 9 min for ResNet-18); CUDA: assumed 10x and 100x faster."""
TRAIN_SIZES = {"mnist": 60000, "fashionmnist": 60000, "kmnist": 60000, "emnist-letters": 124800, "cifar10": 50000,
               "cifar100": 50000, "svhn": 73257, "tinyimagenet": 100000}
"""Training-split sizes of the built-in datasets (a suite's ``train_subset`` caps them; other
datasets: 50,000 assumed)."""
WARN_SECONDS = 4 * 3600.0
"""``msbench run`` warns before starting a suite whose estimate on its device exceeds this."""


@dataclass
class Plan:
    suite: str
    device: str
    cells: int
    cached: int  # finished records that will be kept
    failed: int  # failed records (run again only with --retry-failed)
    to_run: int
    victims: int  # distinct victims (every defense link of every chain) the cells need
    victims_to_train: int  # of those, without a checkpoint in the run directory
    seconds: float  # estimated for the cells to run, their victims' training included
    basis: list[str] = field(default_factory=list)  # one line per source of the estimate

    def lines(self) -> list[str]:
        return [f"{self.suite} on {self.device}: {self.cells} cells, {self.cached} cached, {self.failed} failed, "
                f"{self.to_run} to run; {self.victims_to_train} of {self.victims} victims to train; "
                f"estimated {duration(self.seconds)}", *(f"  {line}" for line in self.basis)]


def _image_seconds(arch: str, device: str) -> float:
    kind = "cuda" if device.startswith("cuda") else "cpu"
    return IMAGE_SECONDS.get((arch, kind), IMAGE_SECONDS[("resnet18", kind)])


def _records(run_dir: Path) -> dict[str, dict]:
    out = {}
    for path in sorted((run_dir / "records").glob("*.json")) if (run_dir / "records").is_dir() else []:
        try:
            out[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # the run itself reports and sets aside an unreadable record
    return out


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if isinstance(v, (int, float)) and v == v]
    return sum(values) / len(values) if values else None


def _last_link(defense: str) -> str | None:
    """The last defense of a record's chain; None for a name no registered plugin resolves (a stale record)."""
    try:
        return resolve_chain(defense)[-1]
    except Exception:
        return None


def plan_suite(suite: Suite, out: str | Path | None = None, device: str | None = None, retry_failed: bool = False,
               force: bool = False) -> Plan:
    """The plan of ``msbench run`` on ``suite`` into ``out`` (default ``runs/<suite name>``) on ``device``."""
    run_dir = Path(out) if out else Path("runs") / suite.name
    where = str(resolve_device(requested_device(device, suite)[0]))
    cells = [(cell, cell_key(suite, cell)) for cell in expand(suite)]
    by_id = {key: cell for cell, key in cells}
    # as the run will find them: invalid ones recompute
    records = {key: record for key, record in _records(run_dir).items()
               if record_problem(record, key, *((by_id[key].__dict__, suite.attacks[by_id[key].attack].config.budget)
                                                if key in by_id else ())) is None}
    ok = {k for k, r in records.items() if r.get("status") == "ok"}
    failed = {k for k, r in records.items() if r.get("status") != "ok"}
    todo = [(c, k) for c, k in cells if force or k not in records or (retry_failed and k in failed)]
    checkpoints = {p.stem for p in (run_dir / "victims").glob("*.pt")} if (run_dir / "victims").is_dir() else set()
    measured_victims = [r for r in records.values() if r.get("status") == "ok"]
    victims: dict[str, tuple[str, str, str]] = {}
    for cell, _ in todo:
        chain = resolve_chain(cell.defense)
        for end in range(1, len(chain) + 1):
            victims.setdefault(victim_key(suite, cell.dataset, cell.arch, chain[:end], cell.seed),
                               (cell.dataset, cell.arch, chain[end - 1]))
    to_train = {k: v for k, v in victims.items() if force or k not in checkpoints}
    seconds, sources = 0.0, {"measured": 0, "model": 0}
    for dataset, arch, link in to_train.values():
        same = [r.get("victim_train_seconds") for r in measured_victims
                if (r.get("dataset"), r.get("arch")) == (dataset, arch)
                and _last_link(r.get("defense", "")) == link]
        value = _mean(same)
        sources["model" if value is None else "measured"] += 1
        if value is None:
            images = min(suite.subset(dataset, "train") or TRAIN_SIZES.get(dataset, 50000),
                         TRAIN_SIZES.get(dataset, 10 ** 9))
            epochs = suite.victim_recipe(dataset, link).epochs
            value = images * epochs * _image_seconds(arch, where) * DEFENSES.get(link).training_cost
        seconds += value
    attack_sources = {"measured": 0, "model": 0}
    for cell, _ in todo:
        same = [r.get("attack_seconds") for r in records.values() if r.get("status") == "ok"
                and (r.get("dataset"), r.get("arch"), r.get("attack")) == (cell.dataset, cell.arch, cell.attack)]
        value = _mean(same)
        if value is None:
            settings = suite.attacks[cell.attack]
            passes = ATTACKS.get(cell.attack).passes_per_query
            value = (getattr(settings.config, "budget", 10000) * (settings.recipe.epochs if passes is None else passes)
                     * _image_seconds(cell.arch, where))
            attack_sources["model"] += 1
        else:
            attack_sources["measured"] += 1
        seconds += value
    basis = [f"victims: {sources['measured']} from this run's records, {sources['model']} from the cost model "
             f"(images x epochs x per-image cost x the defense's declared training_cost)",
             f"cells: {attack_sources['measured']} from this run's records, {attack_sources['model']} from the cost "
             f"model (one clone training on the budget's answers: a floor for multi-round attacks)"]
    if where.startswith("cuda"):
        basis.append("GPU per-image costs are assumptions until measured on the device (benchmarks/gpu_check.sh)")
    return Plan(suite.name, where, len(cells), len(ok & {k for _, k in cells}) if not force else 0,
                len(failed & {k for _, k in cells}), len(todo), len(victims), len(to_train), seconds, basis)


__all__ = ["Plan", "plan_suite", "WARN_SECONDS", "IMAGE_SECONDS", "TRAIN_SIZES"]
