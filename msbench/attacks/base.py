"""The attack plugin API: one small base class and a uniform call, like torchattacks.

An attack receives an Oracle (the only access to the victim), its query data, a clone factory
and a training recipe in an AttackContext, and returns the trained clone (a model returning
logits). It may report intermediate clones for query-budget curves through ``ctx.report``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from msbench.config import choice_problem
from msbench.data import UnlabeledImages
from msbench.oracle import LabelMode, Oracle
from msbench.seeds import build_seeded, derive_seed
from msbench.training import Recipe


@dataclass
class AttackContext:
    """What an attack may use. ``query_data`` is the surrogate set (KnockoffNets; offered to an
    attack that declares the ``"surrogate"`` role), ``seed_data`` the victim's training images
    (JBDA's seeds). Both are ``UnlabeledImages``, copies without labels: an attack's labels come
    from the oracle."""

    query_data: Callable[[], UnlabeledImages]
    seed_data: Callable[[], UnlabeledImages]
    make_clone: Callable[[], nn.Module]
    recipe: Recipe
    device: torch.device
    seed: int  # the attack's own stream: derived from the cell's seed, it reveals none of the defender's
    num_classes: int
    report: Callable[[int, nn.Module], None] = lambda queries, clone: None
    notes: dict[str, Any] = field(default_factory=dict)  # free-form facts for the record ("stopped early")
    # The defense chain the attacker faces ("ini+mad") and each link's public settings, as deployed
    # (benign matching's chosen value included): what a defense-aware attacker (``recovery``) is
    # told. Never the victim's weights, seeds or training data.
    defense: str = ""
    input_shape: tuple[int, int, int] | None = None  # (C, H, W) of the victim's queries (DFME's generator)
    defense_config: dict[str, dict[str, Any]] = field(default_factory=dict)

    def seed_for(self, purpose: str) -> int:
        """The seed of one random stream of the attack (``"knockoff.queries"``)."""
        return derive_seed(self.seed, purpose)

    def new_clone(self, purpose: str = "clone") -> nn.Module:
        """A fresh clone initialised from the ``purpose`` stream alone; the same purpose gives the
        same initial weights (KnockoffNets' budget-curve clones all start like its final clone)."""
        return build_seeded(self.make_clone, self.seed_for(purpose))


class Attack:
    """Base of every attack. ``Config`` is a dataclass of suite-settable settings; every attack
    has a query ``budget``.

    The framework calls only what is declared here; a plugin overrides what it needs and inherits
    the rest (docs/plugins.md lists them, tests/test_contracts.py checks them)."""

    registered_name: ClassVar[str] = ""  # set by ``register_attack``
    roles: ClassVar[tuple[str, ...]] = ()  # role datasets it queries with: "surrogate" (a pool attack)
    # Code identity of its cells' keys, read only where the class itself sets it (bump it when a
    # change alters results); None: the hash of the class's source file.
    version: ClassVar[str | int | None] = None
    # How reports show it (recorded in the run's suite.json; defaults: the registry name, after the paper's):
    label: ClassVar[str] = ""  # display name, e.g. "KnockoffNets"; "" = the registry name
    color: ClassVar[str | None] = None  # fixed colour where a figure colours attacks
    paper_order: ClassVar[int | None] = None  # position in the InI paper's tables; None = not the paper's
    spends_budget: ClassVar[bool] = False  # True: asks exactly ``budget`` queries whenever its query data allows
    contract_settings: ClassVar[dict[str, Any]] = {}  # [attacks.NAME] values for tests/test_contracts.py (test size)
    # Config fields added after runs were recorded, with the value those runs computed with: the report reads
    # a recorded config that lacks one as having it, so old runs combine only with runs that set it alike.
    former_defaults: ClassVar[dict[str, Any]] = {}
    # False: needs paper-scale budgets to learn (the contract checks its budget only)
    learns_at_test_size: ClassVar[bool] = True
    # For the run plan's cost model (``msbench plan``) where no record measured it: training passes
    # over its queries' images (None: the clone recipe's epochs, one clone trained on the answers).
    passes_per_query: ClassVar[float | None] = None

    @dataclass
    class Config:
        budget: int = 50000

    def __init__(self, config: Any | None = None):
        self.config = config if config is not None else self.Config()
        problem = choice_problem(self.config) or self.check_config(self.config)
        if problem:  # checked once, on construction, as Defense does: a bad setting never reaches ``run``
            raise ValueError(f"{self.registered_name or type(self).__name__.lower()}.{problem[0]}: {problem[1]}")

    @staticmethod
    def check_config(config: Any) -> tuple[str, str] | None:
        """``(key, what was expected)`` for a config value the types alone do not rule out (a
        negative round count); None when the config is valid. The suite reports it as one line.
        A closed vocabulary is a ``Literal[...]`` field of ``Config``, checked before this is called."""
        return None

    def wrapped(self) -> tuple[str, ...]:
        """The registered attacks whose code runs inside this one (an adaptive attacker's base): their
        code identity is part of its cells' keys. None by default."""
        return ()

    def run(self, oracle: Oracle, ctx: AttackContext) -> nn.Module:
        """Query ``oracle`` within its budget and return the trained clone (a model returning logits)."""
        raise NotImplementedError


def oracle_targets(oracle: Oracle, images: torch.Tensor, device: torch.device, batch_size: int = 512) -> torch.Tensor:
    """Query the oracle over uint8 or float images in batches; returns its answers on the CPU.

    Soft mode gives probability vectors; hard mode one-hots, which callers turn into labels.
    """
    answers = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device)
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x
        answers.append(oracle(x).cpu())
    return torch.cat(answers)


def training_targets(answers: torch.Tensor, label_mode: LabelMode) -> torch.Tensor:
    """Soft labels train on the probabilities, hard labels on the top-1 class."""
    return answers if label_mode == "soft" else answers.argmax(dim=1)
