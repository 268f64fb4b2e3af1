"""SEAT (Zhang, Chen and Wagner, AISec 2021): a similarity encoder trained by adversarial
training, and per account a count of query pairs that are close in its space.

The defender trains the encoder contrastively on its own training data: a positive pair is an
image and a PGD perturbation of it chosen to move it as far as possible in encoder space (the
adversarial training that names the method: an attacker's small perturbations must not hide a
near-duplicate), a negative pair an image and a randomly transformed other image, pushed at
least ``margin`` apart. The pair threshold is calibrated on the defender's data: the
``percentile``-th percentile of each image's nearest-neighbour distance among ``calibration``
training images (the authors' code takes the 0.1th percentile of benign k-NN distances). Per
account, every new query adds the number of earlier queries of the account closer than the
threshold; the account is flagged once that count of pairs passes ``bound``.

Departures, at benchmark size: the encoder is the victim's architecture started from the
defender's own trained classifier (its Softmax's model), and its output layer is the embedding;
the PGD radius, steps and epochs are small CPU settings (see ``Config``); ``bound`` takes the
unofficial re-implementation's default (200), the paper tunes it per dataset.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from msbench.defenses.base import Softmax, VictimContext
from msbench.detection.blinding import blind
from msbench.defenses.detection import DetectionDefense, benign_problem
from msbench.detection.monitor import Monitor, Monitored
from msbench.registry import register_defense
from msbench.training import Optimiser, Shuffled, train_loop


class SeatMonitor(Monitor):
    """One account's encoded history and its count of close pairs."""

    def __init__(self, encoder: nn.Module, delta: float, bound: int):
        self.encoder, self.delta, self.bound = encoder, delta, bound
        self.history: torch.Tensor | None = None
        self.pairs = 0

    def screen(self, x: torch.Tensor, labels: torch.Tensor) -> int | None:
        with torch.no_grad():
            e = self.encoder(x).float()
        close = torch.tril((torch.cdist(e, e) < self.delta), diagonal=-1).sum(dim=1)  # earlier queries of the batch
        if self.history is not None:
            close = close + (torch.cdist(e, self.history) < self.delta).sum(dim=1)
        counts = self.pairs + torch.cumsum(close, dim=0)
        over = (counts > self.bound).nonzero()
        self.history = e if self.history is None else torch.cat([self.history, e])
        self.pairs = int(counts[-1])
        return int(over[0]) if len(over) else None


class SeatVictim(Monitored):
    def __init__(self, base: nn.Module, encoder: nn.Module, config: "Seat.Config"):
        super().__init__(base, config)
        self.encoder, self.bound = encoder, config.bound
        self.register_buffer("delta", torch.zeros(()))  # calibrated in fit, kept in the checkpoint

    def new_monitor(self) -> SeatMonitor:
        self.encoder.eval()
        return SeatMonitor(self.encoder, float(self.delta), self.bound)


def nearest_distances(encoder: nn.Module, images: torch.Tensor, device: torch.device,
                      batch_size: int = 500) -> np.ndarray:
    """Each image's distance to its nearest other image in encoder space (float images in [0, 1])."""
    with torch.no_grad():
        e = torch.cat([encoder(images[i:i + batch_size].to(device)).float() for i in range(0, len(images), batch_size)])
    d = torch.cdist(e, e)
    d.fill_diagonal_(float("inf"))
    return d.min(dim=1).values.cpu().numpy()


@register_defense("seat")
class Seat(DetectionDefense):
    """SEAT: stops an account after more than `bound` pairs of queries close in a similarity encoder's space."""

    label = "SEAT"
    paper_claim = "an attacker needs 3.8 to 16 times more accounts, even adaptive ones using query blinding"
    color = "#117733"
    cost_model = "M_f + M_enc + O(history) per query"
    training_cost = 1.5  # the encoder's adversarial fine-tuning
    # test size: the contract's test split holds 400 images
    contract_settings = {"epochs": 1, "calibration": 300, "benign_queries": 200}

    @dataclass
    class Config:
        bound: int = 200  # pairs an account may make before it is stopped
        percentile: float = 0.1  # of benign nearest-neighbour distances: the pair threshold
        calibration: int = 2000  # defender's images the threshold is calibrated on
        epochs: int = 2
        lr: float = 1e-3  # Adam
        batch_size: int = 128
        eps: float = 0.1  # L-inf radius of the PGD positives
        pgd_steps: int = 3
        margin: float = 3.2  # negatives pushed at least this far apart
        benign_users: int = 10
        benign_queries: int = 1000

    @staticmethod
    def check_config(config: "Seat.Config") -> tuple[str, str] | None:
        if not 0.0 < config.percentile < 100.0:
            return "percentile", f"expected a percentile in (0, 100), got {config.percentile!r}"
        for key in ("bound", "epochs", "batch_size", "pgd_steps"):
            if getattr(config, key) < (0 if key == "bound" else 1):
                return key, (f"expected a {'non-negative' if key == 'bound' else 'positive'} integer, "
                             f"got {getattr(config, key)!r}")
        if config.calibration < 2:
            return "calibration", (f"expected at least 2 images (a nearest neighbour needs two), "
                                   f"got {config.calibration!r}")
        for key in ("lr", "eps", "margin"):
            if not getattr(config, key) > 0:
                return key, f"expected a positive number, got {getattr(config, key)!r}"
        return benign_problem(config)

    def build(self, base: nn.Module, ctx: VictimContext) -> nn.Module:
        encoder = ctx.new_model("seat.encoder")
        if isinstance(base, Softmax):  # the defender's trained classifier is where the encoder starts
            encoder.load_state_dict(base.model.state_dict())
        return SeatVictim(base, encoder, self.config)

    def fit(self, defended: nn.Module, ctx: VictimContext) -> None:
        c, encoder, device = self.config, defended.encoder, ctx.device
        encoder.to(device)
        images = ctx.train.images
        generator = torch.Generator().manual_seed(ctx.seed_for("seat.train"))
        optimiser = Optimiser.adam(encoder.parameters(), c.lr, desc="seat encoder")

        def step(index: torch.Tensor) -> dict[str, torch.Tensor]:
            x = images[index].to(device).float().div_(255.0)
            with torch.no_grad():
                anchor = encoder(x)
            adv = (x + c.eps * (2 * torch.rand(x.shape, generator=generator).to(device) - 1)).clamp(0, 1)
            for _ in range(c.pgd_steps):  # the perturbation that moves x furthest in encoder space
                adv.requires_grad_(True)
                gap = (encoder(adv) - anchor).pow(2).sum()
                grad, = torch.autograd.grad(gap, adv)
                adv = (adv.detach() + (2.5 * c.eps / c.pgd_steps) * grad.sign())
                adv = torch.min(torch.max(adv, x - c.eps), x + c.eps).clamp(0, 1)
            negative = blind(x.roll(1, dims=0), generator)
            e, e_adv, e_neg = encoder(x), encoder(adv.detach()), encoder(negative)
            positive_loss = (e - e_adv).pow(2).sum(dim=1).mean()
            negative_loss = torch.relu(c.margin - (e - e_neg).norm(dim=1)).pow(2).mean()
            loss = positive_loss + negative_loss
            optimiser.step_on(loss)
            return {"pos": positive_loss.detach(), "neg": negative_loss.detach()}

        train_loop(step, Shuffled(len(images), c.batch_size, generator), c.epochs, [encoder], [optimiser],
                   "seat encoder")
        encoder.eval()
        order = torch.randperm(len(images), generator=generator)[:c.calibration]
        distances = nearest_distances(encoder, images[order].float().div_(255.0), device)
        defended.delta.fill_(float(np.percentile(distances, c.percentile)))
