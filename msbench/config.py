"""Turning TOML tables into typed dataclasses, with one-line errors naming file, key and expectation."""
from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class InputError(ValueError):
    """A bad input (suite, data file, run directory): ``file: key: what was expected``, on one line.
    The CLI prints it as ``msbench: <file>: <key>: <message>`` and exits 2."""

    def __init__(self, file: str, key: str, message: str):
        message = " ".join(str(message).split())  # one line, whatever the underlying error printed
        self.file, self.key, self.message = file, key, message
        super().__init__(f"{file}: {key}: {message}" if key else f"{file}: {message}")


class SuiteError(InputError):
    """A bad suite: ``file: key.path: what was expected``."""


class SuiteProblems(SuiteError):
    """Every problem found in one pass over a suite, one line each; ``file``, ``key`` and ``message``
    are the first problem's, for a caller that reads one."""

    def __init__(self, problems: list[SuiteError]):
        first = problems[0]
        super().__init__(first.file, first.key, first.message)
        self.problems = problems

    def __str__(self) -> str:
        return "\n".join(str(problem) for problem in self.problems)


class Problems:
    """Collects the SuiteErrors of independent checks, so a suite's every problem is reported at once."""

    def __init__(self) -> None:
        self.found: list[SuiteError] = []

    def check(self, work: Callable[[], T], default: T | None = None) -> T | None:
        """``work()``, or ``default`` after noting the SuiteError(s) it raised."""
        try:
            return work()
        except SuiteError as problem:
            self.found.extend(getattr(problem, "problems", [problem]))
            return default

    def raise_any(self, last: SuiteError | None = None) -> None:
        """Raise what was found (with ``last``, a problem that stops the pass), one error for all."""
        found = self.found + ([last] if last is not None else [])
        if len(found) == 1:
            raise found[0]
        if found:
            raise SuiteProblems(found)


def choices(tp: Any) -> tuple[Any, ...] | None:
    """The values of a closed vocabulary (a ``Literal[...]`` annotation); None for any other type.

    A setting with a fixed set of values (a schedule, a label mode, an implementation) is typed
    ``Literal["a", "b"]``, so ``coerce`` and ``choice_problem`` check it and word the refusal,
    and no plugin spells out its own "expected one of"."""
    return typing.get_args(tp) if typing.get_origin(tp) is typing.Literal else None


def not_one_of(allowed: tuple[Any, ...], value: Any) -> str:
    """The one refusal of every closed vocabulary: ``expected one of 'a', 'b', got 'c'``."""
    return f"expected one of {', '.join(map(repr, allowed))}, got {value!r}"


def _is_one_of(value: Any, allowed: tuple[Any, ...]) -> bool:
    return any(type(value) is type(option) and value == option for option in allowed)  # True is not 1


def choice_problem(obj: Any) -> tuple[str, str] | None:
    """``(field, message)`` for the first field of the dataclass ``obj`` whose value is outside its
    closed vocabulary; None when every one is allowed. A plugin's ``Config`` made in code, not read
    from a suite, is checked with it on the plugin's construction, so both paths refuse alike."""
    for name, allowed, optional in _vocabularies(type(obj)):
        value = getattr(obj, name)
        if not (_is_one_of(value, allowed) or (optional and value is None)):
            return name, not_one_of(allowed, value)
    return None


@functools.cache
def _vocabularies(cls: type) -> tuple[tuple[str, tuple[Any, ...], bool], ...]:
    """Each ``Literal`` field of a dataclass: (name, its values, whether None is allowed too)."""
    found = []
    for name, tp in typing.get_type_hints(cls).items():
        options = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
        literals = [o for o in options if choices(o) is not None]
        if len(literals) == 1 and all(o is type(None) for o in options if o is not literals[0]):
            found.append((name, choices(literals[0]), len(options) > 1))
    return tuple(found)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return f"one of {', '.join(map(repr, typing.get_args(tp)))}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        return f"a list of {_type_name(inner)}"
    if tp is type(None):
        return "none"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp,
            getattr(tp, "__name__", str(tp)))


def coerce(value: Any, tp: Any, file: str, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is typing.Literal:
        if _is_one_of(value, typing.get_args(tp)):
            return value
        raise SuiteError(file, key, not_one_of(typing.get_args(tp), value))
    if origin in (typing.Union, types.UnionType):
        options = [o for o in typing.get_args(tp) if o is not type(None)]
        if value is not None and len(options) == 1 and choices(options[0]) is not None:
            return coerce(value, options[0], file, key)  # an optional vocabulary: name its values, not "or none"
        for option in typing.get_args(tp):
            try:
                return coerce(value, option, file, key)
            except SuiteError:
                continue
        raise SuiteError(file, key, f"expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, list):
            raise SuiteError(file, key, f"expected {_type_name(tp)}, got {value!r}")
        return [coerce(v, inner, file, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SuiteError(file, key, f"expected a table, got {value!r}")
        return value
    if tp is type(None):
        if value is None:
            return None
        raise SuiteError(file, key, f"expected none, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            return build(tp, value, file, key)
    else:
        return value
    raise SuiteError(file, key, f"expected {_type_name(tp)}, got {value!r}")


def unknown_key(file: str, prefix: str, key: str, known: list[str]) -> SuiteError:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = (f"; did you mean '{close[0]}'?" if close
            else (f"; expected one of: {', '.join(sorted(known))}" if known else "; this table takes no keys"))
    return SuiteError(file, f"{prefix}.{key}" if prefix else key, f"unknown key{hint}")


def build(cls: type[T], table: dict[str, Any], file: str, prefix: str, base: T | None = None) -> T:
    """Instantiate dataclass ``cls`` from a TOML table, over ``base``'s values when given. Any other
    value where the table belongs (``matrix = 3``, an array of tables) is a SuiteError naming ``prefix``."""
    if not isinstance(table, dict):
        raise SuiteError(file, prefix, f"expected a table, got {table!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {}
    for key, value in table.items():
        if key not in fields:
            raise unknown_key(file, prefix, key, list(fields))
        values[key] = coerce(value, hints[key], file, f"{prefix}.{key}" if prefix else key)
    if base is not None:
        return dataclasses.replace(base, **values)  # type: ignore[type-var]
    try:
        return cls(**values)
    except TypeError as missing:
        raise SuiteError(file, prefix, str(missing)) from None


def as_dict(obj: Any) -> Any:
    """A dataclass (nested) as plain data, for hashing and for the resolved-suite file."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: as_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [as_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: as_dict(v) for k, v in obj.items()}
    return obj
