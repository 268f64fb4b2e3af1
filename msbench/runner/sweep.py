"""The trade-off sweep: output defenses run at every value of their tunable setting, not only at
the one benign matching picks, so clone accuracy can be plotted against benign accuracy and
distortion along each defense's knob (ModelGuard's and GRAD^2's methodology).

A suite asks for it with a ``[sweep]`` table (docs/suites.md); ``msbench.runner.suite`` reads the table
into ``SweepOptions``. Each swept value is one more cell per (dataset, arch, attack, label mode,
seed) with ``setting`` set; its victim is the composition's trained victim (trained and cached
once) with the tunable set to that value, so a sweep costs attacks, not victim training. Swept
cells are kept apart from the matched ones in the report.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from msbench.config import SuiteError
from msbench.defenses import OutputDefense
from msbench.registry import DEFENSES

if TYPE_CHECKING:
    from msbench.runner.suite_schema import Suite


@dataclass
class SweepOptions:
    """The ``[sweep]`` table. ``None`` fields default to the suite's matrix."""

    defenses: list[str] = field(default_factory=list)  # compositions of the matrix whose last defense has a tunable
    datasets: list[str] | None = None
    attacks: list[str] | None = None
    label_modes: list[str] | None = None
    grid: dict[str, list[float]] = field(default_factory=dict)  # values per defense name; default: its tunable_grid

    def validate(self, suite: "Suite") -> None:
        """Check the table against the suite's matrix and each swept defense's config; raises SuiteError
        naming ``sweep.<key>``."""
        file = str(suite.path)
        matrix = [c.lower() for c in suite.matrix.defenses]
        for i, composition in enumerate(self.defenses):
            key = f"sweep.defenses[{i}]"
            if composition.lower() not in matrix:
                raise SuiteError(file, key, f"expected a composition of matrix.defenses ({', '.join(matrix)}), "
                                            f"got '{composition}'")
            last = DEFENSES.get(suite.chain(composition)[-1])
            if not issubclass(last, OutputDefense) or not last.tunable:
                raise SuiteError(file, key, f"'{composition}' ends in '{last.registered_name}', which has no "
                                            f"tunable setting to sweep")
        for name, values in (("datasets", self.datasets), ("attacks", self.attacks), ("label_modes", self.label_modes)):
            allowed = [str(v).lower() for v in getattr(suite.matrix, name)]
            for i, value in enumerate(values or []):
                if str(value).lower() not in allowed:
                    raise SuiteError(file, f"sweep.{name}[{i}]",
                                     f"expected one of the matrix's {name} ({', '.join(allowed)}), got '{value}'")
        swept = {suite.chain(c)[-1] for c in self.defenses}
        for name, values in self.grid.items():
            if name.lower() not in swept:
                raise SuiteError(file, f"sweep.grid.{name}",
                                 f"expected the name of a swept defense ({', '.join(sorted(swept))})")
            if not isinstance(values, list) or not values or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                raise SuiteError(file, f"sweep.grid.{name}", f"expected a non-empty list of numbers, got {values!r}")
            defense = DEFENSES.get(name)
            for j, value in enumerate(values):
                problem = defense.check_config(_with(defense, value))
                if problem:
                    raise SuiteError(file, f"sweep.grid.{name}[{j}]", problem[1])

    def values(self, defense: Any) -> list[float]:
        """The swept values of a defense class: the suite's grid for it, else its tunable grid."""
        return list(self.grid.get(defense.registered_name, defense.tunable_grid))


def _with(defense: Any, value: float) -> Any:
    config = defense.Config()
    setattr(config, defense.tunable, value)
    return config


def sweep_options(suite: "Suite") -> SweepOptions | None:
    """The suite's ``[sweep]`` table when it sweeps anything, else None."""
    options = suite.extra.get("sweep")
    return options if options is not None and options.defenses else None
