import sys
import textwrap

import pytest

from msbench.registry import DEFENSES, Registry, UnknownPluginError, plugin_scope
from tests.conftest import registry_scope, unregister


def test_lookup_suggests_the_nearest_name():
    registry = Registry("widget")
    registry.register("vanilla")(object())
    registry.register("ini")(object())
    with pytest.raises(UnknownPluginError) as error:
        registry.get("inl")
    assert "did you mean 'ini'" in str(error.value)
    assert registry.names() == ["ini", "vanilla"]


def test_duplicate_registration_is_refused():
    registry = Registry("widget")
    registry.register("a")(int)
    with pytest.raises(ValueError):
        registry.register("a")(str)


def test_builtin_plugins_are_registered():
    import msbench.runner.suite  # noqa: F401

    assert "vanilla" in DEFENSES


def test_entry_point_plugin_is_discovered(tmp_path, monkeypatch):
    """A third-party package declares an entry point; msbench imports it without being told."""
    module = tmp_path / "thirdparty_defense.py"
    module.write_text(textwrap.dedent("""
        from msbench.defenses.vanilla import Vanilla
        from msbench.registry import register_defense

        @register_defense("thirdparty")
        class ThirdParty(Vanilla):
            '''A third-party defense found through its entry point.'''
    """))
    dist = tmp_path / "thirdparty_defense-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-defense\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[msbench.defenses]\nthirdparty = thirdparty_defense\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with plugin_scope():
        DEFENSES.load_entry_points(again=True)
        assert "thirdparty" in DEFENSES
        assert DEFENSES.get("thirdparty").__name__ == "ThirdParty"
    monkeypatch.undo()  # the package is uninstalled: its entry point is gone too
    assert "thirdparty" not in DEFENSES and "thirdparty_defense" not in sys.modules


def test_reimporting_a_plugin_module_replaces_its_registration():
    registry = Registry("widget")

    def make():
        class Widget:  # the same qualified name each time, as after re-importing its module
            pass
        return Widget

    first, second = make(), make()
    registry.register("w")(first)
    registry.register("w")(second)
    assert registry.get("w") is second


def test_a_scope_undoes_its_registrations_and_keeps_earlier_ones():
    registry = Registry("widget")
    registry.register("kept")(int)
    with registry_scope(registry):
        registry.register("scoped")(str)
        unregister(registry, "kept")
        assert registry.names() == ["scoped"]
    assert registry.names() == ["kept"] and registry.get("kept") is int


def test_plugin_scope_forgets_a_plugin_module_so_it_registers_again(tmp_path, monkeypatch):
    """A suite's plugin module imported in one scope (one test) is imported, and registered, afresh in the next."""
    (tmp_path / "scoped_plugin.py").write_text(textwrap.dedent("""
        from msbench.defenses.vanilla import Vanilla
        from msbench.registry import register_defense

        @register_defense("scoped-plugin")
        class Scoped(Vanilla):
            '''Registered on import.'''
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    for _ in range(2):
        with plugin_scope():
            importlib.import_module("scoped_plugin")
            assert DEFENSES.get("scoped-plugin").__name__ == "Scoped"
        assert "scoped-plugin" not in DEFENSES and "scoped_plugin" not in sys.modules
    assert "vanilla" in DEFENSES  # built-ins stay


def test_the_readme_plugin_example_registers_a_free_name():
    """The README's plugin example runs as printed and registers a name no built-in plugin holds."""
    import re
    from pathlib import Path

    from msbench.registry import DEFENSES

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    example = next(block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "register_defense" in block)
    name = re.search(r'register_defense\("([^"]+)"\)', example).group(1)
    assert name not in DEFENSES
    exec(compile(example, "README.md", "exec"), {})  # noqa: S102 (the documented example, as a user runs it)
    assert name in DEFENSES


PLUGIN_FILE = '''
from dataclasses import dataclass
from msbench.defenses import OutputDefense
from msbench.registry import register_defense


@register_defense("twice_imported")
class TwiceImported(OutputDefense):
    """Passes answers through."""

    def build(self, base, ctx):
        return base
'''


def _import_as(name: str, path):
    import importlib.util

    import sys

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as an import does
    spec.loader.exec_module(module)
    return module


def test_one_plugin_file_imported_under_two_names_is_one_plugin(tmp_path):
    """An entry point of an installed package and a suite's ``plugins`` may import the same file
    under two module names: the same definition, not a clash."""
    from msbench.registry import DEFENSES, plugin_scope

    path = tmp_path / "twice.py"
    path.write_text(PLUGIN_FILE)
    with plugin_scope():
        _import_as("mypackage.twice", path)
        _import_as("twice", path)  # no error
        assert DEFENSES.get("twice_imported").__qualname__ == "TwiceImported"  # one plugin, registered once
        other = tmp_path / "other.py"
        other.write_text(PLUGIN_FILE.replace("Passes answers through.", "Another class under the same name."))
        with pytest.raises(ValueError) as clash:
            _import_as("other", other)
        message = str(clash.value)
        assert len(message.splitlines()) == 1 and str(path) in message and str(other) in message and "rename one" in message
