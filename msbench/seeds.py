"""Independent random streams: one seed per (cell seed, purpose), and models built under it.

Every random choice of a cell (the victim's initialisation, InI's and MAD's surrogates, AM's
misinformation model, EDM's members and hash model, the attacker's clone, the attacker's query
sample, each training run's shuffles) draws from its own stream, seeded by ``derive_seed(seed,
purpose)``. So no two models start from the same weights by accident (InI's surrogate is not the
victim's initialisation, the attacker's clone is neither), and one stream never depends on how
many numbers another drew: adding an objective that draws noise does not move the victim's
initialisation. The attack sees only its own stream's seed (``AttackContext.seed``), from which
nothing about the defender's seeds can be computed.
"""
from __future__ import annotations

import hashlib
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import torch

T = TypeVar("T")


def derive_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed for one purpose of one seed: SHA-256 of both, so it is the same in every
    process and on every machine (Python's ``hash`` is salted per process) and two purposes or two
    seeds collide only as SHA-256 does."""
    if not purpose:
        raise ValueError("a random stream needs a purpose")
    blob = hashlib.sha256(f"msbench/{int(seed)}/{purpose}".encode()).digest()
    return int.from_bytes(blob[:8], "little") >> 1


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block on torch's global generators seeded with ``seed``, then restore them as they
    were: what the block draws neither depends on nor changes what was drawn outside it."""
    devices = (list(range(torch.cuda.device_count())) if torch.cuda.is_available() and torch.cuda.is_initialized()
               else [])
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def build_seeded(factory: Callable[[], T], seed: int) -> T:
    """``factory()`` (a model constructor) under ``seeded(seed)``: its initial weights depend on
    ``seed`` only."""
    with seeded(seed):
        return factory()
