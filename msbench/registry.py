"""One registry type for every kind of plugin: defenses, attacks, datasets, architectures, executors.

A plugin registers itself with a decorator (``@register_defense("vanilla")``), the way timm
registers models. Third-party packages need not touch msbench: they declare an entry point
in the group ``msbench.<kind>s`` pointing at a module whose import runs its decorators.
"""
from __future__ import annotations

import inspect
import os

import difflib
import sys
from contextlib import contextmanager
from importlib import metadata
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownPluginError(KeyError):
    """A name that no plugin of that kind is registered under."""

    def __init__(self, kind: str, name: str, suggestion: str | None, known: list[str]):
        self.kind, self.name, self.suggestion, self.known = kind, name, suggestion, known
        hint = f"; did you mean '{suggestion}'?" if suggestion else f"; known: {', '.join(known)}"
        super().__init__(f"unknown {kind} '{name}'{hint}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


def _source(obj: object) -> tuple[str | None, str | None]:
    """(source file, qualified name) of a class or function: what identifies a definition whatever its
    module is called."""
    try:
        path = inspect.getsourcefile(obj)  # type: ignore[arg-type]
    except TypeError:
        path = None
    return (os.path.realpath(path) if path else None, getattr(obj, "__qualname__", None))


def _same_definition(old: object, new: object) -> bool:
    """True for the same object, or the same class/function defined again: its module re-imported, or
    one file imported under two names (an entry point of a package and a suite's ``plugins``)."""
    if old is new:
        return True
    name = lambda o: (getattr(o, "__module__", None), getattr(o, "__qualname__", None))  # noqa: E731
    if name(old) == name(new) and name(old) != (None, None):
        return True
    return _source(old) == _source(new) and _source(old)[0] is not None


def _where(obj: object) -> str:
    path, qualname = _source(obj)
    return f"{getattr(obj, '__module__', '?')}.{qualname} ({path or 'no source file'})"


class Registry(Generic[T]):
    """Name -> plugin map with did-you-mean lookup and entry-point discovery."""

    def __init__(self, kind: str):
        self.kind = kind
        self.group = f"msbench.{kind}s"
        self._items: dict[str, T] = {}
        self._entry_points_loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        key = name.lower()

        def decorator(obj: T) -> T:
            if key in self._items and not _same_definition(self._items[key], obj):
                old = self._items[key]
                raise ValueError(f"{self.kind} '{key}' is already registered by {_where(old)}; {_where(obj)} registers "
                                 f"another definition under the same name: rename one")
            self._items[key] = obj
            try:
                obj.registered_name = key  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
            return obj

        return decorator

    def load_entry_points(self, again: bool = False) -> None:
        """Import every installed module that declared itself a plugin of this kind (once, unless ``again``)."""
        if self._entry_points_loaded and not again:
            return
        self._entry_points_loaded = True
        for entry_point in metadata.entry_points(group=self.group):
            loaded = entry_point.load()
            if entry_point.name.lower() not in self._items and not isinstance(loaded, type(metadata)):
                self.register(entry_point.name)(loaded)

    def suggest(self, name: str) -> str | None:
        matches = difflib.get_close_matches(name.lower(), self.names(), n=1, cutoff=0.5)
        return matches[0] if matches else None

    def get(self, name: str) -> T:
        self.load_entry_points()
        try:
            return self._items[name.lower()]
        except KeyError:
            raise UnknownPluginError(self.kind, name, self.suggest(name), self.names()) from None

    def __contains__(self, name: str) -> bool:
        self.load_entry_points()
        return name.lower() in self._items

    def names(self) -> list[str]:
        self.load_entry_points()
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(sorted(self._items.items()))


DEFENSES: Registry = Registry("defense")
ATTACKS: Registry = Registry("attack")
DATASETS: Registry = Registry("dataset")
ARCHITECTURES: Registry = Registry("architecture")
EXECUTORS: Registry = Registry("executor")  # where a run's cells are computed (msbench.executors)

REGISTRIES = (DEFENSES, ATTACKS, DATASETS, ARCHITECTURES, EXECUTORS)

register_defense = DEFENSES.register
register_attack = ATTACKS.register
register_dataset = DATASETS.register
register_architecture = ARCHITECTURES.register
register_executor = EXECUTORS.register


@contextmanager
def plugin_scope() -> Iterator[None]:
    """Plugins of every kind registered inside the block are unregistered at its end, and the
    modules that registered them, when first imported inside the block, are forgotten (removed
    from ``sys.modules``), so importing one again (a later suite's ``plugins``) registers it again.
    msbench's own plugins stay: their package registers them once, when it is first imported."""
    before = {registry: (dict(registry._items), registry._entry_points_loaded) for registry in REGISTRIES}
    modules = set(sys.modules)
    try:
        yield
    finally:
        dropped: set[str] = set()
        for registry, (items, loaded) in before.items():
            for key, plugin in registry._items.items():
                module = getattr(plugin, "__module__", None) or ""
                if items.get(key) is plugin:
                    continue
                if hasattr(plugin, "__qualname__") and (module == "msbench" or module.startswith("msbench.")):
                    items[key] = plugin  # a built-in class whose package was first imported inside the block
                else:
                    dropped.add(module)
            registry._items, registry._entry_points_loaded = items, loaded
        for module in dropped - modules:
            sys.modules.pop(module, None)


def describe(obj: object) -> str:
    """First line of a plugin's docstring: what `msbench list` shows."""
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""
