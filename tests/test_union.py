"""Union datasets: a union holds exactly its members' images, keeps their classes apart, reaches an
attacker without labels, and a bad union is one line naming its key. Small synthetic npz files only."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import msbench
from msbench.attacks import Attack, AttackContext
from msbench.config import SuiteError
from msbench.data import UnlabeledImages, load_split
from msbench.oracle import Oracle
from msbench.registry import register_attack
from msbench.runner.suite import parse_suite
from tests.conftest import tiny_suite


def npz(root: Path, name: str, n: int, classes: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    np.savez(root / f"{name}.npz", images=rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
             labels=rng.integers(0, classes, n).astype(np.int64))
    return f"{name}.npz"


def datasets(root: Path) -> dict:
    return {"digits": {"format": "npz", "like": "mnist", "train": npz(root, "digits", 40, 10, 1)},
            "letters": {"format": "npz", "like": "mnist", "train": npz(root, "letters", 30, 26, 2), "num_classes": 26},
            "mix": {"union": ["digits", "letters"]},
            "victim": {"format": "npz", "like": "mnist", "train": npz(root, "victim-train", 300, 10, 3),
                       "test": npz(root, "victim-test", 100, 10, 4), "surrogate": "mix"}}


def suite(root: Path, **changes) -> dict:
    return {"matrix": {"datasets": ["victim"], "archs": ["smallcnn"], "defenses": ["vanilla"], "attacks": ["knockoff"]},
            "datasets": {**datasets(root), **changes}}


def test_a_union_holds_exactly_its_members_images_with_their_classes_apart(tmp_path):
    parsed = parse_suite(suite(tmp_path), "s.toml")
    union = load_split(parsed.spec("mix"), tmp_path, "train")
    digits = load_split(parsed.spec("digits"), tmp_path, "train")
    letters = load_split(parsed.spec("letters"), tmp_path, "train")
    assert torch.equal(union.images, torch.cat([digits.images, letters.images]))
    assert torch.equal(union.labels, torch.cat([digits.labels, letters.labels + 10]))  # letters after the 10 digits
    assert parsed.spec("mix").num_classes == 36 and parsed.spec("mix").shape == (1, 28, 28)
    assert parsed.resolved()["datasets"]["mix"]["union"] == ["digits", "letters"]


SEEN: dict = {}


@dataclass
class _Config:
    budget: int = 10


def test_an_attacker_gets_the_union_without_labels_and_a_clone_that_learned_nothing_is_noted(tmp_path):
    @register_attack("spy-pool")
    class SpyPool(Attack):
        """Records what ctx.query_data() hands it; queries nothing."""

        roles = ("surrogate",)
        Config = _Config

        def run(self, oracle: Oracle, ctx: AttackContext) -> nn.Module:
            SEEN["pool"] = ctx.query_data()
            return ctx.new_clone()

    path = tiny_suite(tmp_path, "u.toml", matrix={"datasets": ["victim"], "attacks": ["spy-pool"], "label_modes": ["soft"]},
                      victim={"epochs": 1}, run={"train_subset": None, "test_subset": None},
                      attacks={"knockoff": None}, datasets=datasets(tmp_path))
    frame = msbench.run_suite(path, data_root=tmp_path, out=tmp_path / "run", echo=lambda *_: None, report=False)
    assert list(frame.status) == ["ok"]
    assert "it learned nothing" in json.loads(frame.notes.iloc[0])["learned_nothing"]  # an untrained clone: stuck, said so
    pool = SEEN["pool"]
    assert isinstance(pool, UnlabeledImages) and not hasattr(pool, "labels")
    parsed = parse_suite(suite(tmp_path), "s.toml")
    assert torch.equal(pool.images, load_split(parsed.spec("mix"), tmp_path, "train").images)


@pytest.mark.parametrize("change, key, message", [
    ({"mix": {"union": ["digits", "cifar10"]}}, "datasets.mix.union[1]", "share one shape"),
    ({"mix": {"union": []}}, "datasets.mix.union", "non-empty list"),
    ({"mix": {"union": ["digits", "digits"]}}, "datasets.mix.union[1]", "twice"),
    ({"mix": {"union": ["digits", "nope"]}}, "datasets.mix.union[1]", "unknown dataset 'nope'"),
    ({"mix": {"union": ["digits", "victim"]}}, "datasets.victim.surrogate", "contains 'victim', the victim's own dataset"),
    ({"mix": {"union": ["digits"], "format": "npz", "like": "mnist", "train": "x.npz"}}, "datasets.mix.union", "not both"),
])
def test_a_bad_union_is_one_line_naming_its_key(tmp_path, change, key, message):
    with pytest.raises(SuiteError) as error:
        parse_suite(suite(tmp_path, **change), "s.toml")
    text = str(error.value)
    assert len(text.splitlines()) == 1 and f"s.toml: {key}: " in text and message in text


def test_an_empty_member_is_refused_when_the_data_are_checked(tmp_path):
    np.savez(tmp_path / "empty.npz", images=np.zeros((0, 28, 28), np.uint8), labels=np.zeros(0, np.int64))
    parsed = parse_suite(suite(tmp_path, empty={"format": "npz", "like": "mnist", "train": "empty.npz"},
                               mix={"union": ["digits", "empty"]}), "s.toml")
    with pytest.raises(Exception, match="empty"):
        load_split(parsed.spec("mix"), tmp_path, "train")
