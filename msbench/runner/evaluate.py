"""One cell: its victim attacked through the oracle, the clone evaluated, the record made.

``run_cell`` is the only place a record's numbers come from, whatever executor computed it: the
victim (cached by ``ws.victims``), the oracle with the runner's own query ledger, the distortion
meter, the attack's context (its own random stream, the label-free data, the defense's public
settings) and, after the attack, the check that the victim was left as it was.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from msbench.attacks import AttackContext
from msbench.runner.cells import Cell
from msbench.compute import using
from msbench.data import UnlabeledImages
from msbench.detection.measure import watch as detection_watch
from msbench.isolation import isolated
from msbench.distortion import DistortionMeter, mean_distortion, restart_randomness
from msbench.oracle import Oracle, QueryLedger
from msbench.provenance import provenance
from msbench.registry import ATTACKS
from msbench.seeds import derive_seed, seeded
from msbench.training import accuracy, predict_labels
from msbench.version import __version__
from msbench.runner.workspace import Workspace


def run_cell(ws: Workspace, cell: Cell, cell_id: str) -> dict[str, Any]:
    """Attack one cell's victim and return its record (raises what the victim, attack or evaluation
    raised), every training step at the run's precision and layout (``msbench.compute``), starting
    from the workspace's torch state and checked to leave it so (``msbench.isolation``)."""
    with isolated(ws.torch_state, f"cell {cell.label()}"), using(ws.compute):  # no torch state leaks in or out
        return _run_cell(ws, cell, cell_id)


@dataclass
class Deployed:
    """The victim a cell attacks, as deployed (at the cell's swept setting, if any), with each link's
    record, first to last: what the record says of the victim and a defense-aware attacker is told."""

    chain: list[str]
    victim: nn.Module
    links: list[dict[str, Any]]

    @property
    def info(self) -> dict[str, Any]:
        return self.links[-1]

    @property
    def seconds(self) -> float:
        """The whole chain's training; the last link's own is ``info["seconds"]``."""
        return sum(link["seconds"] for link in self.links)

    @property
    def device(self) -> str:
        devices = [link.get("device", "") for link in self.links]  # "": saved before victims recorded a device
        return " + ".join(dict.fromkeys(devices)) if all(devices) else ""

    @property
    def tuned(self) -> str:
        return "; ".join(f"{name}.{link['tuned']['name']}={link['tuned']['value']:g}"
                         for name, link in zip(self.chain, self.links) if link.get("tuned"))


def _deploy(ws: Workspace, cell: Cell) -> Deployed:
    """Step 1: the cell's victim and its chain's links, trained or loaded once (``ws.victims``)."""
    victims = ws.victims
    chain = ws.suite.chain(cell.defense)
    victim, _ = victims.get(cell.dataset, cell.arch, chain, cell.seed)
    links = [victims.get(cell.dataset, cell.arch, chain[:i + 1], cell.seed)[1] for i in range(len(chain))]
    if cell.setting is not None:
        victim, links[-1] = victims.at_setting(victim, links[-1], chain[-1], cell.setting, ws.splits(cell.dataset).test)
    return Deployed(chain, victim, links)


def _measure_victim(ws: Workspace, cell: Cell, deployed: Deployed) -> tuple[torch.Tensor, nn.Module | None, float]:
    """Step 2, before any query: the victim's test labels (for fidelity), the undefended base of a
    chain and the defense's distortion on the test set, each measured from the victim's seed."""
    test, device, victim = ws.splits(cell.dataset).test, ws.device, deployed.victim
    restart_randomness(victim)  # a randomised defense answers from its seed, whatever was asked before
    victim_labels = predict_labels(victim, test.images, device)
    chain = deployed.chain
    undefended = ws.victims.get(cell.dataset, cell.arch, chain[:1], cell.seed)[0] if len(chain) > 1 else None
    restart_randomness(victim)
    distortion = mean_distortion(victim, undefended, test.images, device) if undefended is not None else float("nan")
    restart_randomness(victim)  # the attack's queries from the seed too
    return victim_labels, undefended, distortion


def _attack_context(ws: Workspace, cell: Cell, attack: Any, deployed: Deployed,
                    report: Callable[[int, nn.Module], None]) -> AttackContext:
    """Step 3: what the attacker is given: its own random stream, label-free data, a clone factory,
    the defense's public settings; never the victim's weights, seed or labelled data."""
    splits, spec = ws.splits(cell.dataset), ws.suite.spec(cell.dataset)
    return AttackContext(
        query_data=lambda: attack_role(ws, cell.dataset, attack, "surrogate"),
        seed_data=lambda: splits.train.unlabeled(), make_clone=ws.model_factory(cell.dataset, cell.arch),
        recipe=ws.suite.attacks[cell.attack].recipe, device=ws.device,
        seed=derive_seed(cell.seed, "attack"),  # the attack's stream only
        num_classes=spec.num_classes, report=report, defense="+".join(deployed.chain),
        defense_config=public_settings(deployed.chain, deployed.links), input_shape=spec.shape)


def _run_cell(ws: Workspace, cell: Cell, cell_id: str) -> dict[str, Any]:
    """Deploy (1), measure the victim (2), give the attacker its context (3), attack through the
    oracle (4), evaluate the clone and make the record (5)."""
    suite, device = ws.suite, ws.device
    reads_surrogate = "surrogate" in ATTACKS.get(cell.attack).roles
    record: dict[str, Any] = {**cell.__dict__, "cell_id": cell_id, "status": "ok", "error": "",
                              "surrogate": (suite.role(cell.dataset, "surrogate") or "") if reads_surrogate else ""}
    deployed = _deploy(ws, cell)
    test, spec, settings = ws.splits(cell.dataset).test, suite.spec(cell.dataset), suite.attacks[cell.attack]
    attack = ATTACKS.get(cell.attack)(settings.config)
    victim_labels, undefended, distortion_test = _measure_victim(ws, cell, deployed)
    meter = DistortionMeter(undefended) if undefended is not None else None
    ledger = QueryLedger()  # the runner's own count: the attack holds only the oracle
    oracle = Oracle(deployed.victim, cell.label_mode, settings.config.budget, spec.num_classes, input_shape=spec.shape,
                    ledger=ledger, observe=meter.observe if meter is not None else None)
    watched = detection_watch(deployed.victim, oracle)  # a detection defense serves accounts (None for the others)
    curve: list[tuple[int, float]] = []

    def report(queries: int, clone: nn.Module) -> None:
        clone.eval()
        curve.append((queries, accuracy(predict_labels(clone, test.images, device), test.labels)))

    ctx = _attack_context(ws, cell, attack, deployed, report)
    started = time.perf_counter()
    try:  # step 4
        with seeded(ctx.seed_for("run")):
            clone = attack.run(oracle if watched is None else watched.relay, ctx).eval()
        if watched is not None:  # the attacker keeps what was answered before its accounts were stopped
            unstopped = accuracy(predict_labels(clone, test.images, device), test.labels)
            clone = watched.kept_clone(clone, ctx, cell.label_mode)
        clone_labels = predict_labels(clone, test.images, device)
        clone_acc = accuracy(clone_labels, test.labels)
        stuck = learned_nothing(clone_acc, test.labels)
        if stuck:
            ctx.notes["learned_nothing"] = stuck
    finally:  # also when the attack failed: a kept oracle answers no more, a damaged victim serves no later cell
        oracle.close()
        ws.victims.check(cell.dataset, cell.arch, deployed.chain, cell.seed)
    benign = deployed.info["benign_acc"]  # step 5
    record.update(budget=settings.config.budget, queries=ledger.queries, benign_acc=benign, clone_acc=clone_acc,
                  relative_perf=clone_acc / benign if benign else float("nan"),
                  fidelity=accuracy(clone_labels, victim_labels), victim_seconds=deployed.seconds,
                  tuned=deployed.tuned, victim_train_seconds=deployed.info["seconds"], victim_device=deployed.device,
                  distortion_queries=meter.mean if meter is not None else float("nan"),
                  distortion_test=distortion_test, attack_seconds=time.perf_counter() - started,
                  notes=json.dumps(ctx.notes) if ctx.notes else "", curve=curve, msbench=__version__,
                  torch=torch.__version__, device=str(device))
    record.update(provenance(device))
    if watched is not None:
        record.update(watched.facts(test, cell.seed, device, deployed.chain[-1], unstopped))
    return record


def learned_nothing(clone_acc: float, labels: torch.Tensor) -> str:
    """A note when the clone is no better than guessing (at most 1.5 x the majority class's share of the
    test set), so a stuck attack shows in the record instead of reading as a strong defense; else ""."""
    chance = 100.0 * float(torch.bincount(labels).max()) / max(1, len(labels))
    if clone_acc <= 1.5 * chance:
        return (f"clone accuracy {clone_acc:.1f}% is at chance level ({chance:.1f}% for the majority class): "
                "it learned nothing")
    return ""


def attack_role(ws: Workspace, dataset: str, attack: Any, role: str) -> UnlabeledImages:
    """A role dataset's images, without labels, for an attack that declares the role (its cell
    key covers exactly the roles it declares)."""
    if role not in type(attack).roles:
        raise KeyError(f"{type(attack).registered_name or type(attack).__name__}: reads the '{role}' dataset "
                       f"without declaring it: add roles = (\"{role}\",) to the attack class")
    return ws.role_data(dataset, role).unlabeled()


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
