"""Shared test setup: real data from ../shared/data when present, no downloads, quiet progress."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pytest
import tomli_w
import torch

if TYPE_CHECKING:  # msbench is imported only after the environment below is set
    from msbench.registry import Registry

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("MSBENCH_DOWNLOAD", "0")
os.environ.setdefault("MSBENCH_PROGRESS", "0")
if SHARED_DATA.exists():
    os.environ.setdefault("MSBENCH_DATA", str(SHARED_DATA))
if os.environ.get("MSBENCH_CHECK_PLUGIN"):  # `msbench check-plugin FILE`: the file's plugins join the registries
    from msbench.plugin_modules import import_plugin_file

    import_plugin_file(Path(os.environ["MSBENCH_CHECK_PLUGIN"]))


def data_root() -> Path | None:
    root = os.environ.get("MSBENCH_DATA")
    return Path(root) if root and (Path(root) / "MNIST").exists() else None


@pytest.fixture
def mnist_root() -> Path:
    root = data_root()
    if root is None:
        pytest.skip("MNIST not found: set MSBENCH_DATA to a folder holding MNIST/raw")
    return root


TINY_SUITE = {
    "name": "tiny",
    "matrix": {"datasets": ["mnist"], "archs": ["smallcnn"], "defenses": ["vanilla"], "attacks": ["knockoff"],
               "label_modes": ["soft", "hard"], "seeds": [0]},
    "run": {"train_subset": 600, "test_subset": 200, "device": "cpu"},
    "victim": {"epochs": 3, "lr": 0.05, "batch_size": 32},
    "clone": {"epochs": 1, "lr": 0.05, "batch_size": 32},
    "attacks": {"knockoff": {"budget": 300}},
    "datasets": {"mnist": {"surrogate": "emnist-letters"}},
}
"""A suite of seconds on MNIST subsets; tests state only what they change."""


def merged(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` merged in, table by table; a value of None removes the key."""
    out = dict(base)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def tiny_suite(tmp_path: Path, file: str = "tiny.toml", **changes: object) -> Path:
    """Write TINY_SUITE with ``changes`` (e.g. ``matrix={"defenses": ["mad"]}``) to ``tmp_path / file``."""
    path = tmp_path / file
    path.write_text(tomli_w.dumps(merged(TINY_SUITE, changes)))
    return path


@pytest.fixture(autouse=True)
def _plugins_of_the_test_only() -> Iterator[None]:
    """Plugins a test registers (its own, or a suite's ``plugins``) are unregistered after it."""
    from msbench.registry import plugin_scope

    with plugin_scope():
        yield


@pytest.fixture(autouse=True)
def _no_recorded_presentation_left() -> Iterator[None]:
    """A report installs its runs' recorded labels until the next report: none leaks into another test."""
    from msbench.report.labels import use_recorded

    use_recorded(None)
    yield
    use_recorded(None)


def unregister(registry: Registry, name: str) -> None:
    """Drop one registration made by hand in a test. The package never removes a plugin, so this
    lives with the tests rather than on ``Registry``."""
    registry._items.pop(name.lower(), None)


@contextmanager
def registry_scope(registry: Registry) -> Iterator[Registry]:
    """Registrations made inside the block are undone at its end (as are entry points first loaded
    there), so a plugin registered for one test does not outlive it; one registry only, where
    ``plugin_scope`` covers every registry and forgets plugin modules too."""
    items, loaded = dict(registry._items), registry._entry_points_loaded
    try:
        yield registry
    finally:
        registry._items, registry._entry_points_loaded = items, loaded


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path, monkeypatch):
    """Runs default to ./runs and ./reports: keep every test's output out of the checkout."""
    monkeypatch.chdir(tmp_path)


@contextmanager
def single_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads, and on a shared CPU they stall waiting for them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def one_thread() -> Iterator[None]:
    with single_thread():
        yield


# -- a learnable synthetic benchmark: runs everywhere, no shared data -------------------------------

SYNTHETIC_CLASSES = 10
SYNTHETIC_SIDE = 28


def _templates(family: int) -> "np.ndarray":
    """Ten class patterns of one family: each the sum of three Gaussian blobs at seeded places, in [0, 1]."""
    import numpy as np

    rng = np.random.default_rng(1000 + family)
    grid = np.arange(SYNTHETIC_SIDE)
    rows, cols = grid[:, None], grid[None, :]
    patterns = np.zeros((SYNTHETIC_CLASSES, SYNTHETIC_SIDE, SYNTHETIC_SIDE))
    for pattern in patterns:
        for row, col in rng.uniform(5, SYNTHETIC_SIDE - 5, size=(3, 2)):
            pattern += np.exp(-((rows - row) ** 2 + (cols - col) ** 2) / (2 * 3.0 ** 2))
    return patterns / patterns.max(axis=(1, 2), keepdims=True)


def synthetic_images(family: int, count: int, seed: int, blend: bool = False) -> tuple["np.ndarray", "np.ndarray"]:
    """``count`` uint8 images (N, 28, 28) of a pattern family and their labels, deterministic in ``seed``.

    Each image is its class's pattern, shifted by up to 2 pixels, plus Gaussian noise: a small
    CNN learns the classes in a few epochs, and a model that learnt nothing stays at 10%.
    ``blend`` mixes two classes' patterns with a random weight: query images related to, not
    drawn from, the victim's distribution, as EMNIST letters are for MNIST. Their labels are then
    random, so an attack that trained on them instead of the oracle's answers stays at chance.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    patterns = _templates(family)
    labels = np.arange(count) % SYNTHETIC_CLASSES
    rng.shuffle(labels)
    images = patterns[labels]
    if blend:
        others = rng.integers(0, SYNTHETIC_CLASSES, size=count)
        weight = rng.uniform(0.5, 1.0, size=(count, 1, 1))
        images = weight * images + (1 - weight) * patterns[others]
        labels = rng.integers(0, SYNTHETIC_CLASSES, size=count)
    shifts = rng.integers(-2, 3, size=(count, 2))
    images = np.stack([np.roll(image, tuple(shift), axis=(0, 1)) for image, shift in zip(images, shifts)])
    images = images * rng.uniform(0.6, 1.0, size=(count, 1, 1)) + rng.normal(0, 0.15, size=images.shape)
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8), labels.astype(np.int64)


SYNTHETIC_SETS = {  # name: (pattern family, images per split, blended)
    "synth": (0, 400, False),  # the victim's dataset
    "synth-surrogate": (0, 600, True),  # KnockoffNets' query set: blends of the victim's patterns
    "synth-ood": (1, 400, False),  # OOD and hash set: another family of ten patterns
}


def write_synthetic_data(folder: Path) -> dict[str, dict[str, str]]:
    """Write each synthetic set's train and test split as ``.npz`` under ``folder`` (once); returns
    the suite's ``[datasets]`` tables declaring them (absolute paths, so any data root works)."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    tables = {}
    for number, (name, (family, count, blend)) in enumerate(SYNTHETIC_SETS.items()):
        table = {"format": "npz", "like": "mnist", "note": "synthetic test data"}
        for split_number, split in enumerate(("train", "test")):
            path = folder / f"{name}-{split}.npz"
            if not path.exists():
                images, labels = synthetic_images(family, count, seed=10 * number + split_number, blend=blend)
                np.savez(path, images=images, labels=labels)
            table[split] = str(path)
        tables[name] = table
    tables["synth"].update(ood="synth-ood", hash="synth-ood", surrogate="synth-surrogate")
    return tables


SYNTHETIC_SUITE = {
    "name": "synthetic",
    "matrix": {"datasets": ["synth"], "archs": ["smallcnn"], "defenses": ["vanilla"], "attacks": ["knockoff"],
               "label_modes": ["soft", "hard"], "seeds": [0]},
    "run": {"device": "cpu", "val_fraction": 0.2},
    "victim": {"epochs": 3, "lr": 0.05, "batch_size": 32},
    "clone": {"epochs": 4, "lr": 0.05, "batch_size": 32},
    "attacks": {"knockoff": {"budget": 300}},
}
"""Seconds on synthetic data (SYNTHETIC_SETS); tests state only what they change."""


def synthetic_suite(tmp_path: Path, file: str = "synthetic.toml", **changes: object) -> Path:
    """Write the synthetic data under ``tmp_path / "synthetic-data"`` and SYNTHETIC_SUITE with ``changes``
    to ``tmp_path / file``; the suite needs no data root."""
    base = merged(SYNTHETIC_SUITE, {"datasets": write_synthetic_data(tmp_path / "synthetic-data")})
    path = tmp_path / file
    path.write_text(tomli_w.dumps(merged(base, changes)))
    return path
