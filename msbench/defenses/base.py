"""The defense plugin API.

A defense has two faces: how its victim is trained and what the deployed API returns. msbench
models both with one object, the *victim*: an ``nn.Module`` mapping float images in [0, 1] to
probability vectors. Two kinds of defense make victims:

- a ``TrainingDefense`` (Vanilla, InI, EDM, outlier exposure) builds and trains a victim from data;
- an ``OutputDefense`` (MAD, AM's gate) wraps a base victim and changes its answers.

A suite composes them with ``+``: ``ini+mad`` is MAD over InI's victim; plain ``mad`` is MAD over
its ``default_base`` (Vanilla's victim). Trained victims are cached by content, so InI's victim is
trained once and serves ``ini``, ``ini+mad`` and ``ini+am``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from msbench.config import choice_problem
from msbench.data import DatasetSpec, ImageData
from msbench.seeds import build_seeded, derive_seed
from msbench.training import Augmentation, Recipe


@dataclass
class VictimContext:
    """Everything a defense may use to build and train its victim on one (dataset, arch, seed).

    ``seed`` is the cell's seed; every random stream of the defense derives its own seed from it
    with ``seed_for(purpose)``, and every model it makes comes from ``new_model(purpose)``, so
    that the victim, a surrogate and an auxiliary model never share an initialisation.
    """

    spec: DatasetSpec
    arch: str
    train: ImageData
    val: ImageData  # held out from ``train``; used to match benign accuracy, never for training
    recipe: Recipe
    device: torch.device
    seed: int
    roles: dict[str, Callable[[], ImageData]] = field(default_factory=dict)  # lazily loaded OOD / hash sets
    make_model: Callable[[], nn.Module] = lambda: nn.Identity()  # a fresh classifier returning logits
    augment: Augmentation = "none"  # the recipe's, or the dataset's default where the recipe says "auto"

    def seed_for(self, purpose: str) -> int:
        """The seed of one random stream of this victim (``"ini.train"``: InI's shuffles)."""
        return derive_seed(self.seed, purpose)

    def new_model(self, purpose: str) -> nn.Module:
        """A fresh classifier initialised from the ``purpose`` stream alone: ``"victim"`` is the
        victim's own initialisation (shared by the training defenses, so Vanilla and InI start
        alike); a surrogate or auxiliary model names its own purpose (``"ini.surrogate"``)."""
        return build_seeded(self.make_model, self.seed_for(purpose))

    def role(self, name: str) -> ImageData:
        """The role dataset (``ood``, ``hash``), conformed to the victim's input shape."""
        if name not in self.roles:
            raise KeyError(f"no '{name}' dataset for {self.spec.name}: the defense must declare it in its `roles` "
                           "and the suite or the dataset must name one")
        return self.roles[name]()


class Defense:
    """Base of every defense. ``Config`` is a dataclass of the suite-settable hyperparameters.

    A plugin subclasses one of the two real types below, never this class: the framework tells
    them apart with ``isinstance`` and calls only what they declare here."""

    registered_name: ClassVar[str] = ""  # set by ``register_defense``
    roles: ClassVar[tuple[str, ...]] = ()  # role datasets it trains on: "ood", "hash"
    # Code identity of its victims' cache keys, read only where the class itself sets it (bump it
    # when a change alters results); None: the hash of the class's source file.
    version: ClassVar[str | int | None] = None
    # How reports show it (recorded in the run's suite.json; a defense without them shows its
    # registry name, a colour from a colour-blind-safe palette, and sorts after the paper's):
    label: ClassVar[str] = ""  # display name, e.g. "InI"; "" = the registry name
    color: ClassVar[str | None] = None  # fixed colour in every figure, e.g. "#D55E00"
    paper_order: ClassVar[int | None] = None  # position in the InI paper's tables (Vanilla 0); None = not the paper's
    contract_settings: ClassVar[dict[str, Any]] = {}  # [defenses.NAME] values for tests/test_contracts.py (test size)
    # Config fields added after runs were recorded, with the value those runs computed with: the report reads
    # a recorded config that lacks one as having it, so old runs combine only with runs that set it alike.
    former_defaults: ClassVar[dict[str, Any]] = {}
    # Where reports put it: ``reference`` marks the undefended victim every defense is compared
    # with (Vanilla; exactly one registered defense declares it, see ``reference_defense``);
    # ``ablation_reference`` the defense whose ablations are tabulated beside it (InI).
    reference: ClassVar[bool] = False
    ablation_reference: ClassVar[bool] = False
    # Its inference cost for `msbench time`, in the InI paper's Table 4 notation (M_f: one forward
    # of the victim's model): a formula string; a dict {"single": ..., "batch": ...} by query size;
    # or a method ``cost_model(self, batch_size) -> str`` where the formula depends on the config
    # (a fast form costs other than the paper's). "?" until a plugin states it.
    cost_model: ClassVar[str | dict[str, str]] = "?"
    # Its training cost relative to one Vanilla training on the same data and recipe, for the run
    # plan's cost model (``msbench plan``) where no record measured it (the InI paper's Table B.1).
    training_cost: ClassVar[float] = 1.0

    @dataclass
    class Config:
        pass

    def __init__(self, config: Any | None = None):
        self.config = config if config is not None else self.Config()
        problem = choice_problem(self.config) or self.check_config(self.config)
        if problem:
            raise ValueError(f"{self.registered_name or type(self).__name__.lower()}: {problem[0]}: {problem[1]}")

    @staticmethod
    def check_config(config: Any) -> tuple[str, str] | None:
        """``(key, what was expected)`` for a config value the types alone do not rule out (a
        negative weight); None when the config is valid. The suite reports it as one line.
        A closed vocabulary is a ``Literal[...]`` field of ``Config``, checked before this is called."""
        return None


class TrainingDefense(Defense):
    """Produces a victim from data. ``build`` must be deterministic in structure so a cached
    state dict can be loaded back into it; ``fit`` trains it in place."""

    def build(self, ctx: VictimContext) -> nn.Module:
        raise NotImplementedError

    def fit(self, victim: nn.Module, ctx: VictimContext) -> None:
        raise NotImplementedError


L1_GRID: tuple[float, ...] = (2.0, 1.5, 1.0, 0.75, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01, 0.0)
"""L1 budgets on an answer (strongest first, 2 = the whole simplex): MAD's grid. Every defense whose
tunable is an L1 budget (MAD, random noise, GRAD^2, ModelGuard-S and -W) tunes over this one tuple, so
their benign matching tries the same budgets and a change of the grid reaches all of them."""


class OutputDefense(Defense):
    """Wraps a base victim at inference. ``fit`` trains any auxiliary model (AM's misinformation
    model); MAD needs none (``training_cost`` 0, the default here).

    ``tunable`` names the setting benign matching may tune (a field of ``Config``, read by the
    wrapper module at inference), ``tunable_grid`` its values from strongest to weakest. The
    runner changes it only through ``tune``, so a wrapper that keeps its setting elsewhere
    overrides ``tune`` and ``setting`` and nothing else."""

    default_base: ClassVar[str] = "vanilla"
    training_cost: ClassVar[float] = 0.0  # an output defense usually trains nothing of its own
    tunable: ClassVar[str | None] = None
    tunable_grid: ClassVar[tuple[float, ...]] = ()
    color_over_base: ClassVar[str | None] = None  # colour when stacked on another defense's victim (InI + MAD)

    def build(self, base: nn.Module, ctx: VictimContext) -> nn.Module:
        raise NotImplementedError

    def fit(self, defended: nn.Module, ctx: VictimContext) -> None:
        """Train auxiliary models; the base victim is frozen. Default: nothing to train."""

    def tune(self, defended: nn.Module, value: float) -> None:
        """Deploy ``defended`` at ``value`` of the tunable setting (benign matching, a sweep, a
        cached victim's matched value). Refuses a module that has no such setting to change."""
        if not self.tunable or not hasattr(defended, self.tunable):
            raise ValueError(f"{self.registered_name}: declares tunable '{self.tunable}', but its module "
                             f"({type(defended).__name__}) has no attribute '{self.tunable}' to tune")
        setattr(defended, self.tunable, type(getattr(defended, self.tunable))(value))

    def setting(self, defended: nn.Module) -> float:
        """The value of the tunable setting ``defended`` answers with now. The runner never reads it
        (it records the value it gave ``tune``); it is the read-back half of the plugin contract:
        ``tests/test_contracts.py`` checks that it returns what ``tune`` set, so a plugin that
        keeps its setting elsewhere overrides both and is checked like the built-in ones."""
        return getattr(defended, self.tunable)


def renormalise(p: torch.Tensor) -> torch.Tensor:
    """Rows clipped at 0 and scaled to sum to 1; a row with no mass left becomes uniform.

    Post-processing defenses end with it so every answer is a probability vector, as an API's must be."""
    p = p.clamp_min(0)
    total = p.sum(dim=1, keepdim=True)
    uniform = torch.full_like(p, 1.0 / p.shape[1])
    return torch.where(total > 0, p / total.clamp_min(torch.finfo(p.dtype).tiny), uniform)


class Softmax(nn.Module):
    """A classifier made into a deployed API: probabilities of one model's logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)
