"""The threat model, enforced through the real runner: hostile attacks cannot forge their query
count, damage the victim later cells use, read labels, or have malformed queries blamed on the defense."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import msbench
from msbench.attacks.base import Attack, AttackContext
from msbench.oracle import Oracle
from msbench.registry import ATTACKS, register_attack
from msbench.training import fit
from tests.conftest import registry_scope, tiny_suite

SEEN: dict[str, object] = {}
PROBE = 20  # images queried to compare the victim's answers across cells


def victim_in(oracle: Oracle) -> nn.Module:
    """What a hostile attack can do in Python: dig the victim out of the oracle's closures."""
    functions, seen = [oracle._call], []
    while functions:
        function = functions.pop()
        for cell in getattr(function, "__closure__", None) or ():
            value = cell.cell_contents
            if isinstance(value, nn.Module):
                return value
            if callable(value) and value not in seen:
                seen.append(value)
                functions.append(value)
    raise LookupError("no module in the oracle's closures")


def honest_clone(oracle: Oracle, ctx: AttackContext, count: int) -> nn.Module:
    images = ctx.seed_data().floats(slice(0, count))
    return fit(ctx.new_clone(), images, oracle(images).argmax(dim=1), ctx.recipe, seed=ctx.seed_for("train"))


@dataclass
class HostileConfig:
    budget: int = 50


HOSTILE: dict[str, type] = {}


def hostile(name: str):
    """An attack class named ``name`` running the decorated function; registered only during the test."""
    def wrap(run):
        HOSTILE[name] = type(name.replace("-", "_"), (Attack,), {"Config": HostileConfig, "run": run})
        return run
    return wrap


@pytest.fixture
def hostile_attacks():
    with registry_scope(ATTACKS):
        for name, attack in HOSTILE.items():
            register_attack(name)(attack)
        yield


@hostile("tamper-victim")
def tamper_run(self, oracle: Oracle, ctx: AttackContext) -> nn.Module:
    """Soft cell: zero the victim's weights after recording its answers; hard cell: answers again."""
    probe = ctx.seed_data().floats(slice(0, PROBE))
    SEEN[f"answers {oracle.label_mode}"] = oracle(probe)
    clone = honest_clone(oracle, ctx, 10)
    if oracle.label_mode == "soft":
        with torch.no_grad():
            for parameter in victim_in(oracle).parameters():
                parameter.zero_()
    return clone


@hostile("forge-count")
def forge_run(self, oracle: Oracle, ctx: AttackContext) -> nn.Module:
    """Soft cell: try to reset the count and raise the budget, read labels; hard cell: send uint8."""
    if oracle.label_mode == "hard":
        oracle(ctx.seed_data().images[:5])  # uint8 images, not divided by 255
    refused = []
    for name, value in (("queries", 0), ("budget", 10**9)):
        try:
            setattr(oracle, name, value)
        except AttributeError:
            refused.append(name)
    clone = honest_clone(oracle, ctx, 30)
    object.__setattr__(oracle, "_facts", lambda: (0, {"budget": 10**9}))  # Python cannot stop this...
    SEEN["refused"], SEEN["oracle says"] = refused, oracle.queries  # ...but the runner counts for itself
    data = ctx.seed_data()
    reachable = [getattr(data, f.name) for f in dataclasses.fields(data)]
    reachable += [getattr(ctx, f.name) for f in dataclasses.fields(ctx)]
    SEEN["labels"] = hasattr(data, "labels") or any(isinstance(v, torch.Tensor) and not v.is_floating_point() and v.dtype != torch.uint8
                                                   for v in reachable)
    SEEN["data type"] = type(data).__name__
    try:
        ctx.query_data()
        SEEN["undeclared role"] = "handed over"
    except KeyError as refusal:
        SEEN["undeclared role"] = str(refusal)
    return clone


def test_hostile_attacks_are_contained(tmp_path, mnist_root, one_thread, hostile_attacks):
    SEEN.clear()
    suite = tiny_suite(tmp_path, matrix={"attacks": ["tamper-victim", "forge-count"]},
                       run={"train_subset": 200, "test_subset": 100}, victim={"epochs": 1}, attacks=None)
    frame = msbench.run_suite(suite, data_root=mnist_root, out=tmp_path / "run", report=False).set_index(["attack", "label_mode"])

    # an attack that damaged the victim fails its cell; the next cell queries the victim as trained
    tampered = frame.loc[("tamper-victim", "soft")]
    assert tampered.status == "failed" and tampered.error.startswith("VictimTampered") and "reloaded" in tampered.error
    assert frame.loc[("tamper-victim", "hard"), "status"] == "ok"
    soft, hard = SEEN["answers soft"], SEEN["answers hard"]
    assert torch.equal(hard, torch.nn.functional.one_hot(soft.argmax(dim=1), 10).to(hard.dtype))
    assert len(soft.argmax(dim=1).unique()) > 1  # a zeroed victim answers class 0 to all: the hard cell's answers prove the reload

    # the count and budget cannot be assigned, and the record keeps the runner's own count
    forged = frame.loc[("forge-count", "soft")]
    assert forged.status == "ok", forged.error
    assert SEEN["refused"] == ["queries", "budget"] and SEEN["oracle says"] == 0 and forged.queries == 30

    # the attack's data carries no labels, and an undeclared role dataset is not handed over
    assert SEEN["data type"] == "UnlabeledImages" and SEEN["labels"] is False
    assert "without declaring it" in SEEN["undeclared role"]

    # a malformed query fails the cell and is blamed on the query, not the defense
    malformed = frame.loc[("forge-count", "hard")]
    assert malformed.status == "failed" and malformed.error.startswith("InvalidQuery") and "uint8" in malformed.error


KEPT: dict[str, Oracle] = {}


@hostile("leak-state")
def leak_state_run(self, oracle: Oracle, ctx: AttackContext) -> nn.Module:
    """Soft cell: leaves float64 as the default dtype, gradients off, one thread; hard cell: reads what it starts from."""
    if oracle.label_mode == "hard":
        SEEN["hard starts with"] = (torch.get_default_dtype(), torch.is_grad_enabled(), torch.get_num_threads())
        return honest_clone(oracle, ctx, 10)
    clone = honest_clone(oracle, ctx, 10)
    torch.set_default_dtype(torch.float64)
    torch.set_grad_enabled(False)
    torch.set_num_threads(torch.get_num_threads() + 1)
    return clone


@hostile("keep-oracle")
def keep_oracle_run(self, oracle: Oracle, ctx: AttackContext) -> nn.Module:
    """Soft cell: keeps its oracle in a module global; hard cell: asks the kept soft oracle instead of its own."""
    if oracle.label_mode == "soft":
        KEPT["soft"] = oracle
        return honest_clone(oracle, ctx, 10)
    return honest_clone(KEPT["soft"], ctx, 10)


@hostile("patch-forward")
def patch_forward_run(self, oracle: Oracle, ctx: AttackContext) -> nn.Module:
    """Soft cell: replaces the victim's forward on the instance (weights untouched); hard cell: answers again."""
    probe = ctx.seed_data().floats(slice(0, PROBE))
    SEEN[f"patched answers {oracle.label_mode}"] = oracle(probe)
    clone = honest_clone(oracle, ctx, 10)
    if oracle.label_mode == "soft":
        victim = victim_in(oracle)
        victim.forward = lambda x: torch.full((len(x), 10), 0.1)
    return clone


def test_cells_are_isolated_from_each_other(tmp_path, mnist_root, one_thread, hostile_attacks):
    SEEN.clear(), KEPT.clear()
    suite = tiny_suite(tmp_path, matrix={"attacks": ["leak-state", "keep-oracle", "patch-forward"]},
                       run={"train_subset": 200, "test_subset": 100}, victim={"epochs": 1}, attacks=None)
    frame = msbench.run_suite(suite, data_root=mnist_root, out=tmp_path / "run", report=False).set_index(["attack", "label_mode"])

    # a cell that leaves torch's global state changed fails; the next starts from the run's state
    leaked = frame.loc[("leak-state", "soft")]
    assert leaked.status == "failed" and leaked.error.startswith("StateLeak")
    assert "default_dtype torch.float32 -> torch.float64" in leaked.error and "grad_enabled True -> False" in leaked.error
    assert SEEN["hard starts with"] == (torch.float32, True, 1) and frame.loc[("leak-state", "hard"), "status"] == "ok"
    assert torch.get_default_dtype() == torch.float32 and torch.is_grad_enabled()

    # an oracle kept past its cell answers no more, and its cell's count stays as it was
    assert frame.loc[("keep-oracle", "soft"), "status"] == "ok" and frame.loc[("keep-oracle", "soft"), "queries"] == 10
    stale = frame.loc[("keep-oracle", "hard")]
    assert stale.status == "failed" and stale.error.startswith("OracleClosed")
    assert KEPT["soft"].queries == 10

    # a forward replaced on the victim's instance voids the cell; the next cell queries the victim as trained
    patched = frame.loc[("patch-forward", "soft")]
    assert patched.status == "failed" and patched.error.startswith("VictimTampered")
    soft, hard = SEEN["patched answers soft"], SEEN["patched answers hard"]
    assert torch.equal(hard, torch.nn.functional.one_hot(soft.argmax(dim=1), 10).to(hard.dtype))
