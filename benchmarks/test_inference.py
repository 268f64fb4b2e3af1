"""Inference cost of each defense's deployed API, the paper's Table 4 as ratios (pytest-benchmark).

    python -m pytest benchmarks --benchmark-only
    MSBENCH_BENCH_ARCHS=smallcnn,resnet18 MSBENCH_BENCH_THREADS=2 python -m pytest benchmarks --benchmark-only

Each registered composition (Vanilla, InI, MAD, AM, EDM, InI+MAD, InI+AM; absent ones are skipped)
is built through the runner's ``Workspace.victim``, the exact module a suite deploys, on synthetic
28x28 images with a one-epoch recipe: structurally complete, not trained to accuracy. Defenses
with ``implementation = "fast" | "reference"`` are timed in both forms. Benchmarks are grouped per
(arch, batch size), so the table's ratio column reads as the slowdown against the fastest entry,
which is Vanilla's forward. Timing runs on one CPU thread unless ``MSBENCH_BENCH_THREADS`` says
otherwise, so that other load on the machine disturbs the ratios less (it still does: compare
runs on a quiet machine). AM's gate depends on how confident the briefly fitted base victim is,
so its fast form's figure here says little about deployment; ``msbench time`` on trained victims
with ``inputs = ["id", "random"]`` measures that.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from msbench.registry import DEFENSES, UnknownPluginError
from msbench.runner.workspace import Workspace
from msbench.runner.suite import parse_suite, resolve_chain
from msbench.timing.cost import chain_cost

ARCHS = [a.strip() for a in os.environ.get("MSBENCH_BENCH_ARCHS", "smallcnn").split(",") if a.strip()]
BATCH_SIZES = (1, 128)
ROUNDS = {1: 40, 128: 8}  # timed calls per benchmark: the whole run stays within minutes on 2 cores
THREADS = int(os.environ.get("MSBENCH_BENCH_THREADS", "1"))  # one thread: ratios that other load barely disturbs
COMPOSITIONS = [("vanilla", None), ("ini", None), ("mad", "reference"), ("mad", "fast"), ("am", "reference"),
                ("am", "fast"), ("edm", "reference"), ("edm", "fast"), ("ini+mad", "reference"), ("ini+mad", "fast"),
                ("ini+am", "fast")]

_VICTIMS: dict[tuple[str, str | None, str], tuple[torch.nn.Module, list[str], list]] = {}  # built once per session


@pytest.fixture(scope="session", autouse=True)
def threads():
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench-data")
    (root / "synth").mkdir()
    rng = np.random.default_rng(0)
    for split, size in (("train", 128), ("test", 128)):
        np.savez(root / "synth" / f"{split}.npz", images=rng.integers(0, 256, (size, 28, 28), dtype=np.uint8),
                 labels=rng.integers(0, 10, size))
    return root


def deployed(root: Path, composition: str, implementation: str | None, arch: str):
    """The deployed victim of a composition, built and briefly fitted by the runner's Workspace."""
    key = (composition, implementation, arch)
    if key in _VICTIMS:
        return _VICTIMS[key]
    try:
        chain = resolve_chain(composition)
    except UnknownPluginError as missing:
        pytest.skip(f"not registered: {missing}")
    settable = [name for name in chain if hasattr(DEFENSES.get(name).Config(), "implementation")]
    if implementation and not settable:
        pytest.skip(f"{composition} has no implementation setting")
    suite = parse_suite({
        "name": "bench", "matrix": {"datasets": ["synth"], "archs": [arch], "defenses": [composition], "attacks": ["knockoff"]},
        "run": {"device": "cpu"}, "victim": {"epochs": 1, "batch_size": 32},
        "datasets": {"synth": {"format": "npz", "like": "mnist", "train": "synth/train.npz", "test": "synth/test.npz",
                               "ood": "synth", "hash": "synth", "surrogate": "synth"}},
        "defenses": {name: {"implementation": implementation} for name in settable} if implementation else {},
    })
    ws = Workspace(suite, root, root.parent / "bench-run", torch.device("cpu"))
    module, _ = ws.victim("synth", arch, chain, 0)
    parts = [DEFENSES.get(name)(suite.defenses[name].config) for name in chain]
    _VICTIMS[key] = (module, chain, parts)
    return _VICTIMS[key]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("composition, implementation", COMPOSITIONS,
                         ids=[c + (f"[{i}]" if i else "") for c, i in COMPOSITIONS])
def test_predict(benchmark, synth_root, arch, batch_size, composition, implementation):
    module, chain, parts = deployed(synth_root, composition, implementation, arch)
    x = torch.rand((batch_size, 1, 28, 28), generator=torch.Generator().manual_seed(batch_size))
    benchmark.group = f"{arch}, batch {batch_size}"
    benchmark.extra_info.update(chain="+".join(chain), implementation=implementation or "", threads=THREADS,
                                cost_model=chain_cost(parts, batch_size))

    def predict() -> torch.Tensor:
        with torch.no_grad():
            return module(x)

    answer = benchmark.pedantic(predict, rounds=ROUNDS[batch_size], iterations=1, warmup_rounds=1)
    assert answer.shape == (batch_size, 10) and torch.allclose(answer.sum(dim=1), torch.ones(batch_size), atol=1e-4)
