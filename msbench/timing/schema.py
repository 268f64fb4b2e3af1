"""The ``[timing]`` section of a suite: what the inference-cost stage times, checked at load time.

``suite.py`` imports this module for the section, so it imports nothing from the suite module;
the suite it checks is handed to ``TimingOptions.validate``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from msbench.config import SuiteError
from msbench.plugin_config import plugin_config
from msbench.registry import ARCHITECTURES, DEFENSES
from msbench.runner.suite_checks import check_composition, plugin_name

if TYPE_CHECKING:
    from msbench.runner.suite_schema import Suite

InputKind = Literal["random", "id", "ood"]  # random images, the test split's, the ood role's
VictimSource = Literal["auto", "suite", "short"]  # which victims are timed (see ``victims`` below)


@dataclass
class TimingOptions:
    """The ``[timing]`` table of a suite. ``None`` fields default to the suite's matrix."""

    archs: list[str] | None = None  # default: the matrix's archs
    dataset: str | None = None  # default: the matrix's first dataset
    defenses: list[str] | None = None  # compositions; default: the matrix's (the reference, Vanilla, is always timed)
    batch_sizes: list[int] = field(default_factory=lambda: [1, 128])
    repeats: int = 2000  # timed calls per measurement (the paper's 2000)
    warmup: int = 10  # untimed calls first (allocator, cuDNN autotuning, lazy init)
    # "random", "id" (test images), "ood" (ood role)
    inputs: list[InputKind] = field(default_factory=lambda: ["random"])
    with_run: bool = True  # false: `msbench run` skips this stage; `msbench time` runs it
    # "auto": the suite's victims where the matrix has the arch, else short; "suite"; "short"
    victims: VictimSource = "auto"
    epochs: int = 1  # short recipe: epochs of every defense's training recipe
    batch_size: int | None = None  # short recipe: training batch size (None: each recipe's own); small batches
    # take more SGD steps per image, which is what a deep victim trained on few images needs
    train_subset: int | None = 5000  # short recipe: victim training images (None: the suite's)
    test_subset: int | None = 2000  # short recipe: test images for the victims' benign accuracy (None: the suite's)
    threads: int | None = None  # CPU threads while timing (None: torch's default); 1 is steadiest on a shared machine
    overrides: dict[str, Any] = field(default_factory=dict)  # [timing.overrides.<defense>]: settings over the suite's
    # for the short-recipe victims only (a deeper timing arch may need other weights than the matrix's small model)

    def validate(self, suite: "Suite") -> None:
        """Check names against the suite and the registries; raises SuiteError naming ``timing.<key>``.
        The closed vocabularies (``inputs``, ``victims``) are ``Literal`` fields, checked by
        ``config.coerce`` when the table is read, so they are not checked again here."""
        file = str(suite.path)
        for i, arch in enumerate(self.archs or []):
            plugin_name(ARCHITECTURES, arch, file, f"timing.archs[{i}]")
        if self.dataset is not None and self.dataset not in suite.matrix.datasets:
            raise SuiteError(file, "timing.dataset", f"expected one of the matrix's datasets "
                                                     f"({', '.join(suite.matrix.datasets)}), got '{self.dataset}'")
        for i, composition in enumerate(self.defenses or []):
            check_composition(composition, file, f"timing.defenses[{i}]")
        for key in ("archs", "defenses", "batch_sizes", "inputs"):
            if getattr(self, key) is not None and not getattr(self, key):
                raise SuiteError(file, f"timing.{key}", "expected a non-empty list")
        for i, size in enumerate(self.batch_sizes):
            if size < 1:
                raise SuiteError(file, f"timing.batch_sizes[{i}]", f"expected a positive integer, got {size}")
        for i, kind in enumerate(self.inputs):
            if kind == "ood" and suite.role(self.dataset or suite.matrix.datasets[0], "ood") is None:
                raise SuiteError(file, f"timing.inputs[{i}]", "'ood' inputs need an ood role dataset; none is set")
        for name, table in self.overrides.items():
            key = f"timing.overrides.{name}"
            plugin_name(DEFENSES, name, file, key)
            override_config(suite, name, table, file)
        for key, least in (("repeats", 1), ("warmup", 0), ("epochs", 0), ("batch_size", 1), ("train_subset", 1),
                           ("test_subset", 1), ("threads", 1)):
            value = getattr(self, key)
            if value is not None and value < least:
                raise SuiteError(file, f"timing.{key}", f"expected an integer >= {least}, got {value}")


def override_config(suite: "Suite", name: str, table: Any, file: str) -> Any:
    """Defense ``name``'s config with ``[timing.overrides.<name>]`` over the suite's (or the default)."""
    key = f"timing.overrides.{name}"
    if not isinstance(table, dict):
        raise SuiteError(file, key, f"expected a table of {name}'s settings, got {table!r}")
    base = suite.defenses[name].config if name in suite.defenses else DEFENSES.get(name).Config()
    return plugin_config(DEFENSES, name, table, file, key, base=base)


__all__ = ["TimingOptions", "override_config", "InputKind", "VictimSource"]
