"""The inference-cost stage: table shape, slowdown, repeats, victim reuse, validation, CLI."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from msbench.runner.checkpoints import read_checkpoint
from torch import nn

import msbench
from msbench.cli import main
from msbench.config import SuiteError
from msbench.defenses import TrainingDefense
from msbench.registry import ARCHITECTURES, DEFENSES
from msbench.runner.suite import load_suite
from msbench.timing.cost import chain_cost, defense_cost
from msbench.timing.measure import cycling, time_calls
from msbench.timing.stage import time_suite
from tests.conftest import unregister

PLUGINS = str(Path(__file__).parent / "plugins")

SUITE = """
name = "timing-test"
plugins = ["constant_defense"]

[matrix]
datasets = ["synth"]
archs = ["smallcnn"]
defenses = ["vanilla", "flatten"]
attacks = ["knockoff"]
label_modes = ["soft"]

[run]
device = "cpu"

[victim]
epochs = 1
batch_size = 32

[clone]
epochs = 1
batch_size = 32

[attacks.knockoff]
budget = 40

[datasets.synth]
format = "npz"
like = "mnist"
train = "synth/train.npz"
test = "synth/test.npz"
ood = "synth"
hash = "synth"
surrogate = "synth"
"""

TIMING = """
[timing]
batch_sizes = [1, 4]
repeats = 3
warmup = 1
inputs = ["random", "id"]
"""


@pytest.fixture
def synth_root(tmp_path: Path) -> Path:
    """Random 28x28 grey images with random labels: enough to train and run a victim, nothing to learn."""
    root = tmp_path / "data"
    (root / "synth").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, size in (("train", 160), ("test", 48)):
        np.savez(root / "synth" / f"{split}.npz", images=rng.integers(0, 256, (size, 28, 28), dtype=np.uint8),
                 labels=rng.integers(0, 10, size))
    return root


@pytest.fixture
def plugins(monkeypatch):
    monkeypatch.syspath_prepend(PLUGINS)


@pytest.fixture
def linear_arch():
    """A one-layer architecture the matrix does not use, so timing must train its own victims."""
    ARCHITECTURES.register("timing-linear")(lambda shape, classes: nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(shape)), classes)))
    yield "timing-linear"
    unregister(ARCHITECTURES, "timing-linear")


def write_suite(tmp_path: Path, timing: str = TIMING) -> Path:
    path = tmp_path / "suite.toml"
    path.write_text(SUITE + timing)
    return path


class Counter(nn.Module):
    """Records every call and whether autograd was on, so repeats and no_grad are observable."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[int, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((len(x), torch.is_grad_enabled()))
        return x.flatten(1)


def test_time_calls_makes_warmup_plus_repeats_calls_without_grad():
    counter = Counter()
    seconds = time_calls(counter, cycling(torch.rand(10, 1, 2, 2), 3), repeats=7, warmup=2, device=torch.device("cpu"))
    assert len(counter.calls) == 9 and seconds >= 0
    assert all(size == 3 and not grad for size, grad in counter.calls)


def test_cycling_walks_distinct_slices_and_tiles_small_pools():
    pool = torch.arange(10.0).view(10, 1, 1, 1)
    batch = cycling(pool, 3)
    assert [batch(i).flatten().tolist() for i in range(4)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [0, 1, 2]]
    assert cycling(pool[:2], 5)(0).flatten().tolist() == [0, 1, 0, 1, 0]


def test_table_has_one_row_per_measurement_and_reuses_suite_victims(tmp_path, synth_root, plugins):
    out = tmp_path / "run"
    lines: list[str] = []
    frame = time_suite(write_suite(tmp_path), data_root=synth_root, out=out, echo=lines.append, figure=False)
    assert len(frame) == 2 * 2 * 2  # defenses x batch sizes x inputs (one arch)
    assert not frame.duplicated(["defense", "arch", "input", "batch_size"]).any()
    assert set(frame.defense) == {"vanilla", "flatten"} and set(frame.input) == {"random", "id"}
    assert (frame.repeats == 3).all() and (frame.warmup == 1).all()
    vanilla = frame[frame.defense == "vanilla"]
    assert (vanilla.slowdown == 1.0).all()
    merged = frame.merge(vanilla[["input", "batch_size", "total_seconds"]], on=["input", "batch_size"], suffixes=("", "_v"))
    assert np.allclose(merged.slowdown, merged.total_seconds / merged.total_seconds_v)
    assert np.allclose(frame.ms_per_query, 1000 * frame.total_seconds / 3)
    assert np.allclose(frame.ms_per_image, frame.ms_per_query / frame.batch_size)
    assert (frame[frame.defense == "vanilla"].cost_model == "M_f").all()
    assert (frame[frame.defense == "flatten"].cost_model == "?").all()  # undeclared, not in the paper's table
    assert (frame.victim_source == "suite").all() and frame.victim_trained.all()
    assert frame.device.notna().all() and (frame.torch == torch.__version__).all()
    # the suite's own victims (one per defense link) serve the timing; none trained elsewhere
    assert len(list((out / "victims").glob("*.pt"))) == 2 and not (out / "timing_victims").exists()
    written = pd.read_csv(out / "timing.csv")
    assert list(written.columns) == list(frame.columns) and len(written) == len(frame)
    assert np.allclose(written.total_seconds, frame.total_seconds)
    assert any("cost_model" in line and "M_f" in line for line in lines)  # console table beside the cost model


def test_other_archs_get_short_recipe_victims_in_their_own_folder(tmp_path, synth_root, plugins, linear_arch):
    timing = (f'[timing]\narchs = ["{linear_arch}"]\ndefenses = ["flatten"]\nbatch_sizes = [2]\ninputs = ["ood"]\n'
              'repeats = 3\nwarmup = 1\nepochs = 2\nbatch_size = 16\ntrain_subset = 64\n'
              'overrides = { flatten = { temperature = 2.0 } }\n')
    out = tmp_path / "run"
    suite = write_suite(tmp_path, timing)  # a per-dataset recipe override must not undo the short recipe
    suite.write_text(suite.read_text().replace('surrogate = "synth"\n', 'surrogate = "synth"\nvictim = { epochs = 3, batch_size = 64 }\n'))
    frame = time_suite(suite, data_root=synth_root, out=out, echo=lambda _: None)
    assert list(frame.defense) == ["vanilla", "flatten"]  # vanilla is always timed, first
    assert (frame.arch == linear_arch).all() and (frame.input == "ood").all()
    assert (frame.victim_source == "timing").all()
    assert (frame.victim_recipe == "timing: epochs=2, batch_size=16, train_subset=64").all()
    victims = [read_checkpoint(p)["info"] for p in (out / "timing_victims" / "victims").glob("*.pt")]
    assert len(victims) == 2
    assert next(v for v in victims if v["chain"][-1] == "flatten")["config"] == {"temperature": 2.0}  # the override
    assert (out / "timing_victims" / "suite.json").exists() and not (out / "victims").exists()


def test_run_suite_times_and_reuses_an_up_to_date_table(tmp_path, synth_root, plugins):
    suite = write_suite(tmp_path, TIMING.replace('inputs = ["random", "id"]', 'inputs = ["random"]'))
    out = tmp_path / "run"
    msbench.run_suite(suite, data_root=synth_root, out=out, echo=lambda _: None, report=False)
    first = pd.read_csv(out / "timing.csv")
    assert len(first) == 4 and (out / "results.csv").exists()
    if importlib.util.find_spec("msbench.report.figures"):
        assert (out / "inference_time.png").exists() and (out / "inference_time.pdf").exists()
    lines: list[str] = []
    again = time_suite(suite, data_root=synth_root, out=out, echo=lines.append, reuse=True)
    assert any("up to date" in line for line in lines)
    assert np.array_equal(again.total_seconds.to_numpy(), first.total_seconds.to_numpy())
    suite.write_text(suite.read_text().replace("repeats = 3", "repeats = 2"))  # a changed setting measures again
    changed = time_suite(suite, data_root=synth_root, out=out, echo=lambda _: None, reuse=True)
    assert (changed.repeats == 2).all() and (pd.read_csv(out / "timing.csv").repeats == 2).all()


@pytest.mark.parametrize("table, key", [
    ("x = 1", "timing.x"),
    ('inputs = ["noise"]', "timing.inputs[0]"),
    ('archs = ["resnet81"]', "timing.archs[0]"),
    ('defenses = ["vanila"]', "timing.defenses[0]"),
    ('defenses = ["flatten+vanilla"]', "timing.defenses[0]"),
    ('dataset = "cifar10"', "timing.dataset"),
    ("batch_sizes = [0]", "timing.batch_sizes[0]"),
    ("repeats = 0", "timing.repeats"),
    ('victims = "old"', "timing.victims"),
    ("repeats = 1.5", "timing.repeats"),
    ("batch_size = 0", "timing.batch_size"),
    ("overrides = { flaten = {} }", "timing.overrides.flaten"),
    ("overrides = { flatten = { temprature = 2.0 } }", "timing.overrides.flatten.temprature"),
    ("overrides = { mad = { epsilon = -1.0 } }", "timing.overrides.mad.epsilon"),
])
def test_timing_section_is_validated(tmp_path, plugins, table, key):
    with pytest.raises(SuiteError) as bad:
        load_suite(write_suite(tmp_path, f"[timing]\n{table}\n"))
    assert bad.value.key == key


def test_suggestions_and_defaults():
    with pytest.raises(SuiteError, match="did you mean 'resnet18'"):
        msbench.runner.suite.parse_suite({"matrix": {"datasets": ["mnist"], "archs": ["smallcnn"], "defenses": ["vanilla"],
                                              "attacks": ["knockoff"]}, "timing": {"archs": ["resnet81"]}})
    suite = msbench.runner.suite.parse_suite({"matrix": {"datasets": ["mnist"], "archs": ["smallcnn"], "defenses": ["vanilla"],
                                                  "attacks": ["knockoff"]}})
    options = suite.extra["timing"]
    assert options.batch_sizes == [1, 128] and options.repeats == 2000 and options.inputs == ["random"]
    assert suite.resolved()["timing"]["repeats"] == 2000


def test_cost_model_is_declared_by_each_plugin():
    """Each plugin states its formula (the paper's Table 4 for the reference forms, msbench's own for
    the fast ones); timing reads it, whichever of the three forms it takes."""
    def part(name, implementation=None):
        plugin = DEFENSES.get(name)
        return plugin(plugin.Config(implementation=implementation)) if implementation else plugin()

    class Undeclared(TrainingDefense):
        pass

    class Single(TrainingDefense):
        cost_model = "own"

    class BySize(TrainingDefense):
        cost_model = {"single": "a", "batch": "b"}

    class Method(TrainingDefense):
        def cost_model(self, batch_size: int) -> str:
            return f"{batch_size} M_f"

    assert defense_cost(part("mad", "reference"), 1) == "M_f + C M_b + S"
    assert defense_cost(part("mad", "reference"), 128) == "M_f + B(C M_b + S)"
    assert defense_cost(part("mad", "fast"), 128) == "2 M_f + S"
    assert defense_cost(part("edm", "reference"), 1) == "M_f + M_h"
    assert defense_cost(part("edm", "reference"), 128) == "n M_f + M_h"
    assert defense_cost(part("edm", "fast"), 128) == "M_f + M_h"
    assert defense_cost(part("am", "reference"), 1) == "2 M_f"
    assert defense_cost(part("am", "fast"), 1) == "(1 + r) M_f"
    assert all(defense_cost(part(name), size) == "M_f" for name in ("vanilla", "ini", "oe") for size in (1, 128))
    assert defense_cost(Undeclared(), 1) == "?"
    assert defense_cost(Single(), 1) == "own"
    assert defense_cost(BySize(), 1) == "a" and defense_cost(BySize(), 8) == "b"
    assert defense_cost(Method(), 8) == "8 M_f"
    assert chain_cost([part("ini"), part("mad", "reference")], 1) == "M_f + C M_b + S"
    assert chain_cost([part("edm", "reference"), part("am", "reference")], 4) == "n M_f + M_h | 2 M_f"


def test_cli_time_on_mnist(tmp_path, mnist_root, capsys):
    suite = tmp_path / "tiny.toml"
    suite.write_text("""
name = "tiny-time"
[matrix]
datasets = ["mnist"]
archs = ["smallcnn"]
defenses = ["vanilla"]
attacks = ["knockoff"]
[run]
train_subset = 200
test_subset = 100
device = "cpu"
[victim]
epochs = 1
batch_size = 32
[timing]
batch_sizes = [1, 8]
repeats = 2
warmup = 1
inputs = ["random", "id"]
""")
    assert main(["time", str(suite), "--data-root", str(mnist_root), "--out", str(tmp_path / "run")]) == 0
    table = pd.read_csv(tmp_path / "run" / "timing.csv")
    assert len(table) == 4 and (table.slowdown == 1.0).all() and (table.repeats == 2).all()
    assert "ms_per_query" in capsys.readouterr().out
    suite.write_text(suite.read_text() + "speed = 1\n")
    assert main(["time", str(suite), "--data-root", str(mnist_root), "--out", str(tmp_path / "run")]) == 2
    assert "timing.speed" in capsys.readouterr().err
