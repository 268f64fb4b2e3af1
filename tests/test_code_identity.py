"""Cache keys hash the code that computed a result: a plugin's import closure and its stage's.

Each test edits one file of a temporary copy of the package and asks the keys of the copy: a
helper's edit must move exactly the keys of the results that ran it, a report edit none.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import msbench
from msbench.code_identity import CELL_STAGE, VICTIM_STAGE, closure, code_identity, stage_identity
from msbench.registry import ATTACKS, DEFENSES

PACKAGE = Path(msbench.__file__).parent


@pytest.fixture()
def copy(tmp_path):
    """A copy of the package and a locator that finds each msbench module in the copy."""
    root = tmp_path / "msbench"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))

    def find(name: str) -> Path | None:
        if name != "msbench" and not name.startswith("msbench."):
            return None
        base = root.parent.joinpath(*name.split("."))
        return base / "__init__.py" if base.is_dir() else base.with_suffix(".py") if base.with_suffix(".py").exists() else None

    return root, find


def identities(find) -> dict[str, str]:
    return {"victim stage": stage_identity(VICTIM_STAGE, find=find), "cell stage": stage_identity(CELL_STAGE, find=find),
            **{f"defense {name}": code_identity(DEFENSES.get(name), find) for name in ("vanilla", "ini", "mad", "modelguard_s")},
            **{f"attack {name}": code_identity(ATTACKS.get(name), find) for name in ("knockoff", "jbda")}}


def moved_by(copy, relative: str, edit: str = "\nEDITED = 1\n") -> set[str]:
    root, find = copy
    before = identities(find)
    with open(root / relative, "a") as source:
        source.write(edit)
    after = identities(find)
    return {name for name in before if before[name] != after[name]}


def test_comments_and_docstrings_move_nothing(copy):
    assert moved_by(copy, "training.py", "\n# a comment\n") == set()
    root, _ = copy
    source = (root / "defenses" / "pcgrad.py").read_text()
    (root / "defenses" / "pcgrad.py").write_text(source.replace('"""', '"""Reworded. ', 1))
    assert moved_by(copy, "defenses/pcgrad.py", "\n") == set()


def test_the_training_loop_is_in_every_victim_and_cell_key(copy):
    assert moved_by(copy, "training.py") >= {"victim stage", "cell stage"}


def test_pcgrad_moves_ini_only(copy):
    assert moved_by(copy, "defenses/pcgrad.py") == {"defense ini"}


def test_mads_source_moves_modelguard_s_too(copy):
    assert moved_by(copy, "defenses/mad.py") == {"defense mad", "defense modelguard_s"}


def test_the_oracle_moves_cells_but_not_victims_trained_without_it(copy):
    moved = moved_by(copy, "runner/evaluate.py")
    assert "cell stage" in moved and "victim stage" not in moved


def test_the_report_moves_nothing(copy):
    assert moved_by(copy, "report/tables.py") == set()
    assert moved_by(copy, "runner/plan.py") == set()


def test_a_model_module_is_in_every_victim_key(copy):
    assert "victim stage" in moved_by(copy, "models/small.py")


def test_the_closure_follows_a_name_to_the_module_defining_it():
    modules = closure([DEFENSES.get("mad").__module__])
    assert "msbench.defenses.base" in modules  # from msbench.defenses.base import OutputDefense
    assert "msbench.defenses.ini" not in modules and "msbench.report.tables" not in modules


def test_a_plugin_outside_the_package_hashes_its_sibling_helpers(tmp_path, monkeypatch):
    (tmp_path / "helper_of_plugin.py").write_text("SCALE = 1.0\n")
    (tmp_path / "sibling_plugin.py").write_text("from helper_of_plugin import SCALE\n\nclass Plugin:\n    scale = SCALE\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib
    import sys

    plugin = importlib.import_module("sibling_plugin").Plugin
    before = code_identity(plugin)
    (tmp_path / "helper_of_plugin.py").write_text("SCALE = 2.0  # changed\n")
    assert code_identity(plugin) == before  # this process runs the helper it imported: its key stays
    sys.modules.pop("helper_of_plugin", None)  # as a new process would: the edited helper is what runs
    after = code_identity(plugin)
    sys.modules.pop("sibling_plugin", None), sys.modules.pop("helper_of_plugin", None)
    assert before != after and before.startswith("source:")


def test_a_plugin_helper_in_a_subfolder_and_off_the_path_is_hashed(tmp_path):
    import importlib.util
    import sys

    (tmp_path / "helpers").mkdir()
    (tmp_path / "helpers" / "__init__.py").write_text("")
    (tmp_path / "helpers" / "util.py").write_text("SCALE = 1.0\n")
    (tmp_path / "nested_plugin.py").write_text("class Plugin:\n    def run(self):\n        from helpers.util import SCALE\n        return SCALE\n")
    spec = importlib.util.spec_from_file_location("nested_plugin", tmp_path / "nested_plugin.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["nested_plugin"] = module
    spec.loader.exec_module(module)  # imported by path: helpers is not importable now, as after a suite's import
    try:
        before = code_identity(module.Plugin)
        (tmp_path / "helpers" / "util.py").write_text("SCALE = 2.0\n")
        assert code_identity(module.Plugin) != before
    finally:
        sys.modules.pop("nested_plugin", None)


def test_an_adaptive_attacks_cells_move_with_the_attack_it_wraps(monkeypatch):
    from msbench.runner.cells import cell_key, expand
    from msbench.runner.suite import load_suite

    suite = load_suite(PACKAGE.parent / "suites" / "detection.toml")
    spread = next(cell for cell in expand(suite) if cell.attack == "spread")
    other = next(cell for cell in expand(suite) if cell.attack == "knockoff")
    base = ATTACKS.get(suite.attacks["spread"].config.base)
    before = cell_key(suite, spread), cell_key(suite, other)
    monkeypatch.setattr(base, "version", "edited", raising=False)  # as if the wrapped attack's code changed
    after = cell_key(suite, spread), cell_key(suite, other)
    assert after[0] != before[0] and (base.registered_name == "knockoff" or after[1] == before[1])
