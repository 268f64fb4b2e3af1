"""The same suite twice gives the same records, every field but times, dates and where it ran,
whatever ran before a cell in its process (here: the hard cells first, then the soft ones from the
checkpointed victims), randomised defenses and distortion included."""
from __future__ import annotations

import json

import msbench
from tests.conftest import tiny_suite

UNCOMPARED = {"victim_seconds", "victim_train_seconds", "attack_seconds", "date", "host", "git_commit"}


def records(run) -> dict[str, dict]:
    return {path.name: {k: v for k, v in json.loads(path.read_text()).items() if k not in UNCOMPARED}
            for path in sorted((run / "records").glob("*.json"))}


def test_the_same_suite_twice_gives_the_same_records(tmp_path, mnist_root, one_thread):
    changes = dict(matrix={"defenses": ["mad", "random_noise", "reverse_sigmoid"]}, victim={"epochs": 1})
    suite = tiny_suite(tmp_path, **changes)
    msbench.run_suite(suite, data_root=mnist_root, out=tmp_path / "a", report=False, echo=lambda _: None)
    hard_first = tiny_suite(tmp_path, "hard.toml", **{**changes, "matrix": {**changes["matrix"], "label_modes": ["hard"]}})
    msbench.run_suite(hard_first, data_root=mnist_root, out=tmp_path / "b", report=False, echo=lambda _: None)
    msbench.run_suite(suite, data_root=mnist_root, out=tmp_path / "b", report=False, echo=lambda _: None)  # from the checkpoints
    a, b = records(tmp_path / "a"), records(tmp_path / "b")
    assert len(a) == 6 and a.keys() == b.keys()
    for name in a:
        assert a[name] == b[name], name
