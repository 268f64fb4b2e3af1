"""Every bad input is one line ``msbench: <file>: <key>: <expectation>``, exit 2, nothing written or trained.

Suite values, suite files, plugins, data files and a run's tables (``msbench report``) are checked
through ``msbench.cli.main`` in this process (a subprocess per case would cost seconds each on a
shared CPU); one case runs the real command to show that no traceback reaches the terminal.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from msbench.cli import main
from msbench.config import InputError
from msbench.defenses.vanilla import Vanilla
from msbench.report import load_results
from tests.conftest import tiny_suite
from tests.report_fixtures import full_run


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a bad input started training")
    monkeypatch.setattr(Vanilla, "fit", refuse)


def run_cli(capsys, suite: Path, *args: str) -> tuple[int, str]:
    code = main(["run", str(suite), "--out", str(suite.parent / "run"), "--no-report", *args])
    return code, capsys.readouterr().err


def assert_refused(code: int, err: str, *expected: str, run: Path | None = None) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("msbench: ") and "Traceback" not in err
    for part in expected:
        assert part in lines[0], (part, lines[0])
    if run is not None:
        assert not run.exists(), f"{run} was written for a bad input"


SUITE_VALUES = [
    ({"run": {"test_subset": 0}}, "run.test_subset", "positive"),
    ({"run": {"train_subset": -5}}, "run.train_subset", "positive"),
    ({"run": {"val_fraction": 1.5}}, "run.val_fraction", "[0, 1)"),
    ({"run": {"val_fraction": -0.1}}, "run.val_fraction", "[0, 1)"),
    ({"run": {"match_benign": -3.0}}, "run.match_benign", ">= 0"),
    ({"run": {"match_benign": 1.0, "val_fraction": 0.0}}, "run.val_fraction", "validation split"),
    ({"attacks": {"knockoff": {"budget": 0}}}, "attacks.knockoff.budget", "positive"),
    ({"attacks": {"knockoff": {"budget": -1}}}, "attacks.knockoff.budget", "positive"),
    ({"attacks": {"knockoff": {"budget": 2.5}}}, "attacks.knockoff.budget", "integer"),
    ({"victim": {"epochs": 0}}, "victim.epochs", "positive integer"),
    ({"clone": {"epochs": -1}}, "clone.epochs", "positive integer"),
    ({"victim": {"lr": -0.1}}, "victim.lr", "finite number > 0"),
    ({"victim": {"lr": float("nan")}}, "victim.lr", "finite number > 0"),
    ({"clone": {"lr": float("inf")}}, "clone.lr", "finite number > 0"),
    ({"victim": {"lr": 0}}, "victim.lr", "finite number > 0"),
    ({"victim": {"momentum": -0.5}}, "victim.momentum", ">= 0"),
    ({"victim": {"weight_decay": float("nan")}}, "victim.weight_decay", "finite"),
    ({"victim": {"batch_size": 0}}, "victim.batch_size", "positive integer"),
    ({"matrix": {"seeds": [-1]}}, "matrix.seeds[0]", "non-negative"),
    ({"matrix": {"seeds": [0, 1, 0]}}, "matrix.seeds[2]", "listed twice"),
    ({"matrix": {"defenses": ["vanilla", "Vanilla"]}}, "matrix.defenses[1]", "listed twice"),
    ({"matrix": {"attacks": ["knockoff", "knockoff"]}}, "matrix.attacks[1]", "listed twice"),
    ({"matrix": {"label_modes": ["soft", "soft"]}}, "matrix.label_modes[1]", "listed twice"),
    ({"matrix": {"seeds": ["0"]}}, "matrix.seeds[0]", "integer"),
    ({"run": {"device": "tpu"}}, "run.device", "'cpu'"),
    ({"run": {"device": "cuda:x"}}, "run.device", "'cuda:N'"),
    ({"name": "../escape"}, "name", "plain folder name"),
    ({"name": "/tmp/absolute"}, "name", "plain folder name"),
    ({"name": ""}, "name", "plain folder name"),
    ({"name": ".."}, "name", "plain folder name"),
    ({"name": "a/b"}, "name", "plain folder name"),
    ({"datasets": {"mnist": {"surrogate": "emnist-letters", "test_subset": 0}}}, "datasets.mnist.test_subset", "positive"),
    # closed vocabularies (Literal fields) are refused by config.coerce, all in one wording
    ({"victim": {"schedule": "linear"}}, "victim.schedule", "expected one of 'step', 'cosine', 'constant', got 'linear'"),
    ({"clone": {"augment": "flip"}}, "clone.augment", "expected one of 'auto', 'none', 'crop_flip', got 'flip'"),
    ({"matrix": {"label_modes": ["soft", "logits"]}}, "matrix.label_modes[1]", "expected one of 'soft', 'hard', got 'logits'"),
    ({"defenses": {"mad": {"implementation": "slow"}}}, "defenses.mad.implementation", "expected one of 'fast', 'reference', got 'slow'"),
    ({"attacks": {"activethief": {"strategy": "dfal"}}}, "attacks.activethief.strategy", "expected one of 'entropy', 'kcenter', 'random'"),
    ({"datasets": {"mine": {"format": "csv", "like": "mnist", "train": "x.csv"}}}, "datasets.mine.format", "expected one of 'idx', 'npz', got 'csv'"),
]


@pytest.mark.parametrize("changes, key, expected", SUITE_VALUES, ids=[f"{case[1]}-{i}" for i, case in enumerate(SUITE_VALUES)])
def test_bad_suite_value_is_one_line_exit_2(tmp_path, capsys, no_training, changes, key, expected):
    suite = tiny_suite(tmp_path, **changes)
    code, err = run_cli(capsys, suite)
    assert_refused(code, err, str(suite), f": {key}: ", expected, run=tmp_path / "run")


def test_unavailable_device_is_refused_before_work(tmp_path, capsys, no_training, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    suite = tiny_suite(tmp_path, run={"device": "cuda"})
    assert_refused(*run_cli(capsys, suite), str(suite), ": run.device: ", "not available", run=tmp_path / "run")
    suite = tiny_suite(tmp_path)
    assert_refused(*run_cli(capsys, suite, "--device", "cuda:1"), "--device", "not available", run=tmp_path / "run")
    timed = tiny_suite(tmp_path, file="timed.toml", timing={"batch_sizes": [1], "repeats": 1})
    code = main(["time", str(timed), "--out", str(tmp_path / "timing"), "--device", "cuda"])  # timing checks it too
    assert_refused(code, capsys.readouterr().err, "--device", "not available", run=tmp_path / "timing")
    from msbench import SuiteError, time_suite

    with pytest.raises(SuiteError, match="--device: 'cuda' is not available"):  # and so does the API
        time_suite(timed, out=tmp_path / "timing", device="cuda")


@pytest.mark.parametrize("content, expected", [
    (None, "is a folder"),
    (b"", "empty file"),
    (b"   \n# only a comment\n", "empty file"),
    (b"\x7fELF\x02\x01\x01\x00\xd0\xff\xfe\x00", "not a text file"),
    (b"[matrix\n", "not valid TOML"),
    (b"this is not toml {", "not valid TOML"),
    (b'name = "x"\n', "matrix: missing table"),
    (b'matrix = 3\n', "matrix: expected a table, got 3"),
])
def test_bad_suite_file_is_one_line_exit_2(tmp_path, capsys, no_training, content, expected):
    suite = tmp_path / "s.toml"
    suite.mkdir() if content is None else suite.write_bytes(content)
    assert_refused(*run_cli(capsys, suite), str(suite), expected, run=tmp_path / "run")


@pytest.mark.parametrize("source, error", [
    ("def broken(:\n", "SyntaxError"),
    ("raise RuntimeError('plugin refuses to load')\n", "RuntimeError: plugin refuses to load"),
    ("import no_such_module_for_msbench\n", "ModuleNotFoundError"),
    ("1 / 0\n", "ZeroDivisionError"),
])
def test_plugin_that_fails_to_import_names_plugin_and_key(tmp_path, capsys, monkeypatch, no_training, source, error):
    (tmp_path / "broken_plugin.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "broken_plugin", raising=False)
    suite = tiny_suite(tmp_path, plugins=["os", "broken_plugin"])
    assert_refused(*run_cli(capsys, suite), str(suite), ": plugins[1]: ", "'broken_plugin'", error, run=tmp_path / "run")


# -- data files ---------------------------------------------------------------------------------
RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (40, 28, 28), dtype=np.uint8)
LABELS = RNG.integers(0, 10, 40)


def _npz(path: Path, **arrays) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


BAD_NPZ = [
    ({"images": IMAGES.astype(np.float32) / 255, "labels": LABELS}, "images", "uint8"),
    ({"images": RNG.integers(0, 256, (40, 32, 32), dtype=np.uint8), "labels": LABELS}, "images", "shape (1, 28, 28)"),
    ({"images": RNG.integers(0, 256, (40, 28, 28, 3), dtype=np.uint8), "labels": LABELS}, "images", "shape (1, 28, 28)"),
    ({"images": RNG.integers(0, 256, (40, 5, 28, 28), dtype=np.uint8), "labels": LABELS}, "images", "1 or 3 channels"),
    ({"images": IMAGES.reshape(40, 1, 1, 28, 28), "labels": LABELS}, "images", "(N, H, W)"),
    ({"images": IMAGES, "labels": LABELS[:30]}, "labels", "40 images but 30 labels"),
    ({"images": IMAGES, "labels": LABELS + 10}, "labels", "labels in 0..9"),
    ({"images": IMAGES, "labels": LABELS - 1 - LABELS.min()}, "labels", "labels in 0..9"),
    ({"images": IMAGES, "labels": LABELS + 0.5}, "labels", "integer class labels"),
    ({"images": IMAGES, "labels": LABELS.astype(np.float64)}, "labels", "integer class labels"),
    ({"images": IMAGES, "labels": np.stack([LABELS, LABELS], 1)}, "labels", "shape (N,)"),
    ({"images": IMAGES[:0], "labels": LABELS[:0]}, "images", "empty"),
    ({"images": IMAGES}, "labels", "expected an array 'labels'"),
]


def _file_suite(tmp_path: Path, role: bool, train_file: str) -> Path:
    mine = {"format": "npz", "like": "mnist", "train": train_file}
    if role:  # the bad file is KnockoffNets' query set
        return tiny_suite(tmp_path, datasets={"mnist": {"surrogate": "mine"}, "mine": mine})
    return tiny_suite(tmp_path, matrix={"datasets": ["mine"]}, datasets={"mine": {**mine, "surrogate": "emnist-letters"}})


@pytest.mark.parametrize("role", [False, True], ids=["victim-data", "role-data"])
@pytest.mark.parametrize("arrays, key, expected", BAD_NPZ, ids=[f"{c[1]}-{i}" for i, c in enumerate(BAD_NPZ)])
def test_bad_npz_file_is_one_line_exit_2(tmp_path, capsys, mnist_root, no_training, arrays, key, expected, role):
    data = tmp_path / "data"
    data.mkdir()
    for entry in mnist_root.iterdir():
        (data / entry.name).symlink_to(entry)
    _npz(data / "bad.npz", **arrays)
    suite = _file_suite(tmp_path, role, "bad.npz")
    code, err = run_cli(capsys, suite, "--data-root", str(data))
    assert_refused(code, err, f"{data / 'bad.npz'}: {key}: ", expected, str(suite), run=tmp_path / "run")


@pytest.mark.parametrize("content, expected", [
    (b"hello, not a zip\n", "not an .npz archive"),
    (None, "not an .npz archive"),  # a plain .npy file under an .npz name
    (b"PK\x03\x04truncated", "not an .npz archive"),
    ("truncated", "not an .npz archive"),
    ("pickle", "not a readable .npz archive"),
])
def test_file_that_is_not_npz_is_one_line_exit_2(tmp_path, capsys, mnist_root, no_training, content, expected):
    data = tmp_path / "data"
    data.mkdir()
    for entry in mnist_root.iterdir():
        (data / entry.name).symlink_to(entry)
    bad = data / "bad.npz"
    if content is None:
        with open(bad, "wb") as handle:
            np.save(handle, IMAGES)
    elif content == "truncated":
        _npz(bad, images=IMAGES, labels=LABELS)
        bad.write_bytes(bad.read_bytes()[:-200])
    elif content == "pickle":
        _npz(bad, images=np.array([{"a": 1}], dtype=object), labels=LABELS)
    else:
        bad.write_bytes(content)
    suite = _file_suite(tmp_path, False, "bad.npz")
    assert_refused(*run_cli(capsys, suite, "--data-root", str(data)), str(bad), expected, run=tmp_path / "run")


@pytest.mark.parametrize("which, expected", [("images", "IDX file of uint8 images"), ("labels", "IDX file of uint8 labels"),
                                             ("mismatch", "60000 images but 10000 labels")])
def test_bad_idx_file_is_one_line_exit_2(tmp_path, capsys, mnist_root, no_training, which, expected):
    data = tmp_path / "data"
    data.mkdir()
    for entry in mnist_root.iterdir():
        (data / entry.name).symlink_to(entry)
    (data / "garbage").write_bytes(bytes(range(256)) * 4)
    images, labels = "MNIST/raw/train-images-idx3-ubyte", "MNIST/raw/train-labels-idx1-ubyte"
    files = {"images": {"images": "garbage", "labels": labels}, "labels": {"images": images, "labels": "garbage"},
             "mismatch": {"images": images, "labels": "MNIST/raw/t10k-labels-idx1-ubyte"}}[which]
    suite = tiny_suite(tmp_path, datasets={"mnist": {"surrogate": "mine"}, "mine": {"format": "idx", "like": "mnist", "train": files}})
    code, err = run_cli(capsys, suite, "--data-root", str(data))
    assert_refused(code, err, expected, str(suite), run=tmp_path / "run")


TIMING_ROW = {"defense": "vanilla", "arch": "smallcnn", "dataset": "mnist", "input": "test", "batch_size": 1, "repeats": 5,
              "total_seconds": 0.01, "ms_per_query": 2.0, "slowdown": "", "cost_model": "M_f", "victim_trained": True}
BAD_TABLES = [  # (file, row, column, value, what the line says)
    ("results.csv", 1, "clone_acc", "ninety", "results.csv: clone_acc: row 2: expected a number, got 'ninety'"),
    ("results.csv", 0, "seed", "1.5", "results.csv: seed: row 1: expected a whole number, got '1.5'"),
    ("results.csv", 0, "budget", "lots", "results.csv: budget: row 1: expected a whole number, got 'lots'"),
    ("curves.csv", 2, "queries", "many", "curves.csv: queries: row 3: expected a whole number, got 'many'"),
    ("curves.csv", 0, "clone_acc", "9O.5", "curves.csv: clone_acc: row 1: expected a number, got '9O.5'"),
    ("timing.csv", 0, "ms_per_query", "fast", "timing.csv: ms_per_query: row 1: expected a number, got 'fast'"),
    ("results.csv", None, None, b"\x00\xff\xfe binary", "results.csv: not a CSV table msbench can read"),
    ("curves.csv", None, None, b'dataset,seed\n"mnist,0\n', "curves.csv: not a CSV table msbench can read"),
]


def _run_dir(tmp_path: Path) -> Path:
    run = full_run(tmp_path / "run", datasets=("mnist",), defenses=["vanilla", "mad"], attacks=("knockoff",), modes=("soft",))
    pd.DataFrame([TIMING_ROW]).to_csv(run / "timing.csv", index=False)
    return run


@pytest.mark.parametrize("table, row, column, value, expected", BAD_TABLES, ids=[f"{c[0]}-{c[2]}" for c in BAD_TABLES])
def test_malformed_run_table_is_one_line_exit_2(tmp_path, capsys, table, row, column, value, expected):
    """``msbench report`` (and ``load_results``) on a table edited by hand or cut short: the file, column,
    row and expectation, not a traceback (``clone_acc = ninety`` used to end in 45 lines of pandas)."""
    run = _run_dir(tmp_path)
    assert main(["report", str(run), "--out", str(tmp_path / "ok"), "--format", "latex"]) == 0
    capsys.readouterr()
    if row is None:
        (run / table).write_bytes(value)
    else:
        frame = pd.read_csv(run / table, dtype=str, keep_default_na=False)
        frame.loc[row, column] = value
        frame.to_csv(run / table, index=False)
    code = main(["report", str(run), "--out", str(tmp_path / "report"), "--format", "html"])
    assert_refused(code, capsys.readouterr().err, f"msbench: {run / table}", expected, run=tmp_path / "report")
    with pytest.raises(InputError, match=re.escape(expected.split(": ", 1)[1])):
        load_results(run, table.removesuffix(".csv"))


def test_real_command_prints_one_line_without_traceback(tmp_path):
    suite = tiny_suite(tmp_path, run={"val_fraction": 1.5})
    result = subprocess.run([sys.executable, "-m", "msbench.cli", "run", str(suite), "--out", str(tmp_path / "run")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"msbench: {suite}: run.val_fraction: expected a fraction in [0, 1), got 1.5"
