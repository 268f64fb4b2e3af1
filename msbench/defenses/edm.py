"""EDM, ensemble of diverse models (Kariyappa, Prakash & Qureshi, ICLR 2021).

N members are trained to be accurate on in-distribution data and to disagree on
out-of-distribution data; a deterministic hash of each query picks the member that answers it.
An attacker's OOD queries then get answers from different members in different regions of input
space, so the labels it learns from are discontinuous; benign users get an accurate member.

The authors' code was released only as a conference supplement, so parts of this are a
reconstruction (``shared/reference/edm.md``); each is a setting:

- *(reconstruction)* Training loss: sum_i CE(f_i(x), y) on ID data plus
  ``lambda_d`` * LSE_{a<b} cos(f_a(x_o), f_b(x_o)) on OOD data, where f are the members' softmax
  probability vectors, LSE(z) = log sum exp(z) is a smooth maximum over member pairs (no
  temperature), averaged over the batch. ``lambda_d`` was not recovered; 1.0 is a starting value.
  Epochs and optimiser are not recovered either: the suite's victim recipe is used (the InI
  paper's: SGD lr 0.1, momentum 0.5, weight decay 1e-3).
- *(reconstruction)* Hash model: a small CNN, conv 32 -> conv 64 -> max-pool -> conv 128 ->
  max-pool -> linear 512 -> class output (3x3 convolutions, padding 1, ReLU; the pooling positions
  are this reading of "three conv layers with two max-pools"), inputs larger than 32x32
  downsampled to 32x32, trained as an ordinary classifier (cross-entropy, the suite's recipe,
  ``hash_epochs`` epochs, no augmentation) on the hash dataset, with that dataset's per-channel
  mean and standard deviation as input normalisation.
- *(reconstruction)* Index: with s = softmax(h(x)), c = argmax s, p = max s,
  H(x) = (m*c + floor((M*p - 1)*m/(M - 1))) mod N, M = ``hash_M``, m = ``hash_m``. For a 10-class
  hash model that is bucket 2c + [p >= 0.55] folded onto N members, except at p = 1.0 exactly
  where the floor gives 2; the formula is computed, not the shortcut.

Each OOD role defaults to KMNIST for MNIST-family victims, and so does the hash role: the two are
then the same dataset.

Inference answers f_{H(x)}(x), the chosen member's full probability vector. ``implementation =
"reference"`` evaluates every member on the whole batch and picks (N member forwards, as the
public reimplementations do); ``"fast"`` sorts the batch by member and runs one forward per
non-empty group (one hash forward plus the work of one member forward). The index depends on the
input alone, so an attacker cannot average members by re-querying (up to floating-point
differences between batch compositions right at a bucket boundary).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from msbench.data import ImageData
from msbench.defenses.base import TrainingDefense, VictimContext
from msbench.models import Normalize
from msbench.registry import register_defense
from msbench.seeds import build_seeded
from msbench.training import Optimiser, Shuffled, augment_batch, cycle_batches, fit, train_loop

HASH_SIDE = 32


# -- hashing ----------------------------------------------------------------------------------

def hash_bucket(probs: torch.Tensor, M: int = 10, m: int = 2) -> torch.Tensor:
    """m*c + floor((M*p - 1)*m/(M - 1)) for each row of hash-model probabilities (before the modulo)."""
    p, c = probs.max(dim=1)
    return m * c + torch.floor((M * p - 1) * m / (M - 1)).long()


def hash_index(probs: torch.Tensor, members: int, M: int = 10, m: int = 2) -> torch.Tensor:
    """The member answering each query: the bucket folded onto ``members``."""
    return torch.remainder(hash_bucket(probs, M, m), members)


class HashNet(nn.Module):
    """The small CNN whose confident class picks the member (see the module docstring)."""

    def __init__(self, shape: tuple[int, int, int], classes: int):
        super().__init__()
        channels, height, width = shape
        self.side = (min(height, HASH_SIDE), min(width, HASH_SIDE))
        self.normalize = Normalize((0.0,) * channels, (1.0,) * channels)  # set from the hash data in fit
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(128 * (self.side[0] // 4) * (self.side[1] // 4), 512), nn.ReLU(inplace=True),
            nn.Linear(512, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[2:]) != self.side:
            x = F.interpolate(x, size=self.side, mode="bilinear", antialias=True, align_corners=False)
        return self.classifier(self.features(self.normalize(x)))

    @torch.no_grad()
    def set_statistics(self, images: torch.Tensor) -> None:
        """Normalise inputs with the hash dataset's per-channel mean and standard deviation."""
        total = torch.zeros(images.shape[1], dtype=torch.float64)
        squares = torch.zeros_like(total)
        for chunk in images.split(4096):  # a float copy of a whole colour dataset would not fit comfortably
            x = chunk.double().div_(255.0)
            total += x.sum(dim=(0, 2, 3))
            squares += x.square().sum(dim=(0, 2, 3))
        count = images.numel() / images.shape[1]
        mean = total / count
        std = (squares / count - mean.square()).clamp_min(1e-12).sqrt()
        self.normalize.mean.copy_(mean.view_as(self.normalize.mean))
        self.normalize.std.copy_(std.view_as(self.normalize.std))


# -- the deployed ensemble --------------------------------------------------------------------

class EDMVictim(nn.Module):
    """Members (logits models), a hash model and the routing; answers probability vectors.

    The fast form: the batch grouped by member, one forward per non-empty group, scattered back."""

    def __init__(self, members: list[nn.Module], hasher: HashNet, M: int = 10, m: int = 2):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.hasher = hasher
        self.M, self.m = M, m

    def member_index(self, x: torch.Tensor) -> torch.Tensor:
        return hash_index(torch.softmax(self.hasher(x), dim=1), len(self.members), self.M, self.m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = self.member_index(x)
        if len(x) == 0:
            return torch.softmax(self.members[0](x), dim=1)
        order = torch.argsort(index, stable=True)
        counts = torch.bincount(index, minlength=len(self.members)).tolist()  # one sync for the routing
        groups = x[order].split(counts)
        answers = torch.cat([torch.softmax(member(group), dim=1)
                             for member, group, count in zip(self.members, groups, counts) if count])
        out = torch.empty_like(answers)
        out[order] = answers
        return out


class ReferenceEDMVictim(EDMVictim):
    """The same answers as the public reimplementations compute them: every member on the whole
    batch, then each sample's member picked."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = self.member_index(x)
        every = torch.stack([torch.softmax(member(x), dim=1) for member in self.members])  # (N, B, K)
        return every[index, torch.arange(len(x), device=x.device)]


FORMS: dict[str, type[EDMVictim]] = {"fast": EDMVictim, "reference": ReferenceEDMVictim}
"""The module of each ``implementation``, chosen once when the victim is built."""


def diversity_loss(probs: torch.Tensor) -> torch.Tensor:
    """Coherence of the members on a batch: LSE over member pairs a<b of cos(f_a, f_b), batch mean.

    ``probs`` is (members, batch, classes) of softmax outputs.
    """
    unit = F.normalize(probs, dim=2)
    cosine = torch.einsum("abk,cbk->bac", unit, unit)  # (batch, members, members)
    first, second = torch.triu_indices(len(probs), len(probs), offset=1, device=probs.device)
    return torch.logsumexp(cosine[:, first, second], dim=1).mean()


# -- the defense ------------------------------------------------------------------------------

@register_defense("edm")
class EDM(TrainingDefense):
    """EDM: ensemble of diverse models; a hash of each query picks the member that answers."""

    roles = ("ood", "hash")
    label, color, paper_order = "EDM", "#009E73", 3
    training_cost = 8.69  # Table B.1: EDM 8.69x Vanilla (five members and the hash model)
    # test size: the hash CNN costs more than the members (as in suites/quick.toml)
    contract_settings = {"hash_epochs": 1}

    def cost_model(self, batch_size: int) -> str:
        """The paper's formula runs every member on a batch (n M_f); the fast form routes each sample
        to its member only."""
        if self.config.implementation == "fast" or batch_size <= 1:
            return "M_f + M_h"
        return "n M_f + M_h"

    @dataclass
    class Config:
        members: int = 5  # N
        lambda_d: float = 1.0  # weight of the diversity (coherence) term; not recovered from the paper
        hash_M: int = 10  # M of the index formula
        hash_m: int = 2  # m of the index formula
        hash_classes: int = 10  # classes of the hash dataset (KMNIST, SVHN: 10)
        hash_epochs: int | None = None  # hash-model epochs; unset: the recipe's epochs
        implementation: Literal["fast", "reference"] = "fast"  # route each sample to its member, or run all members

    @staticmethod
    def check_config(config: Any) -> tuple[str, str] | None:
        if config.members < 2:
            return "members", f"an ensemble needs at least 2 members, got {config.members}"
        if config.hash_M < 2 or config.hash_m < 1 or config.hash_classes < 2:
            return "hash_M", "expected hash_M >= 2, hash_m >= 1 and hash_classes >= 2"
        if config.hash_epochs is not None and config.hash_epochs < 0:
            return "hash_epochs", f"expected a non-negative integer, got {config.hash_epochs}"
        if config.lambda_d < 0:
            return "lambda_d", f"expected a non-negative weight, got {config.lambda_d}"
        return None

    def build(self, ctx: VictimContext) -> nn.Module:
        cfg = self.config
        members = [ctx.new_model(f"edm.member{i}") for i in range(cfg.members)]  # each its own initialisation
        hasher = build_seeded(lambda: HashNet(ctx.spec.shape, cfg.hash_classes), ctx.seed_for("edm.hasher"))
        return FORMS[cfg.implementation](members, hasher, cfg.hash_M, cfg.hash_m)

    def fit(self, victim: nn.Module, ctx: VictimContext) -> None:
        self.fit_hash(victim.hasher, ctx.role("hash"), ctx)
        self.fit_members(victim, ctx.train, ctx.role("ood"), ctx)
        victim.eval()

    def fit_hash(self, hasher: HashNet, data: ImageData, ctx: VictimContext) -> None:
        if len(data) and int(data.labels.max()) >= self.config.hash_classes:
            raise ValueError(f"edm: the hash dataset has labels up to {int(data.labels.max())} but hash_classes is "
                             f"{self.config.hash_classes}")
        hasher.set_statistics(data.images)
        epochs = ctx.recipe.epochs if self.config.hash_epochs is None else self.config.hash_epochs
        fit(hasher, data.images, data.labels, ctx.recipe.with_(epochs=epochs), device=ctx.device,
            seed=ctx.seed_for("edm.hasher.train"),
            augment="none", desc=f"edm hash {ctx.spec.name}")

    def step(self, victim: EDMVictim, optimiser: Optimiser, x: torch.Tensor, y: torch.Tensor,
             x_ood: torch.Tensor) -> dict[str, float]:
        """One joint step of all members: their summed CE plus lambda_d times the coherence."""
        classification = sum(F.cross_entropy(member(x), y) for member in victim.members)
        probs = torch.stack([torch.softmax(member(x_ood), dim=1) for member in victim.members])
        coherence = diversity_loss(probs)
        loss = classification + self.config.lambda_d * coherence
        optimiser.step_on(loss)
        ce, div = torch.stack([classification.detach(), coherence.detach()]).tolist()
        return {"ce": ce, "coherence": div}

    def fit_members(self, victim: EDMVictim, train: ImageData, ood: ImageData, ctx: VictimContext) -> None:
        recipe = ctx.recipe
        victim.members.to(ctx.device)  # train_loop sets the modes
        generator = torch.Generator().manual_seed(ctx.seed_for("edm.members.train"))
        optimiser = Optimiser.sgd(list(chain.from_iterable(m.parameters() for m in victim.members)), recipe, "edm")
        ood_batches = cycle_batches(len(ood), recipe.batch_size, generator)

        def step(index: torch.Tensor) -> dict[str, float]:
            x = augment_batch(train.floats(index, ctx.device), ctx.augment, generator)
            y = train.labels[index].to(ctx.device)
            x_ood = augment_batch(ood.floats(next(ood_batches), ctx.device), ctx.augment, generator)
            return self.step(victim, optimiser, x, y, x_ood)

        train_loop(step, Shuffled(len(train), recipe.batch_size, generator), recipe.epochs, [victim.members],
                   [optimiser],
                   f"edm {ctx.spec.name}/{ctx.arch}")
