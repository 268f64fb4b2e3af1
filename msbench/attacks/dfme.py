"""DFME, data-free model extraction (Truong et al., CVPR 2021).

No query data at all: a generator G turns noise z ~ N(0, I) into images, and G and the clone S
play a min-max game on the disagreement between victim V and clone,

    l(x) = (1/K) * || S(x) - v(x) ||_1,   v(x) = log p_V(x) - mean_k log p_V(x)_k,

the victim's logits recovered from its probabilities (log p, floored at 1e-8, centred over the
classes: the paper's "mean correction"). S minimises l on G's images; G maximises it.

- **Clone step** (``clone_steps`` per iteration): x = G(z) for a batch of ``batch_size`` fresh z,
  one query per image, an SGD step of S on mean l(x).
- **Generator step** (``generator_steps`` per iteration): V gives no gradients, so the gradient of
  -l w.r.t. G's pre-activation output a (the image is x = (tanh(a) + 1) / 2, so every probe stays
  a valid image) is estimated by forward differences along ``directions`` = m random unit
  directions u_j per sample:

      grad_a ~= (d / m) * sum_j [ -l(a + eps * u_j) + l(a) ] / eps * u_j,   d = C * H * W,

  then back-propagated through G (Adam). The m probes and the point itself are each one query:
  a generator step costs (m + 1) * batch_size queries.

An iteration costs ``(generator_steps * (m + 1) + clone_steps) * batch_size`` queries; the attack
runs whole iterations while the budget covers one, so the query count is exact and known in advance,
and what remains is left unspent (notes). Defaults are the authors' released CIFAR-10 settings:
batch 256, m = 1, eps = 1e-3, 1 generator and 5 clone steps per iteration, z of 256 dimensions, clone
SGD lr 0.1 (momentum 0.9, weight decay 5e-4), generator Adam lr 1e-4, both learning rates x0.3 at
10%, 30% and 50% of the iterations (``milestones``). At small budgets those fractions decay the
rates after a handful of iterations (100,000 queries at batch 256 are 55 iterations: x0.3 from
iteration 5, x0.027 from 27), which freezes an unlucky start; ``decay_after`` (default 0, the
official schedule) holds every decay back to at least that many iterations. Decays that land on
one iteration are applied once (so ``decay_after = 40`` at 55 iterations is one x0.3 at 40), and a
milestone at or beyond the run's last iteration is dropped; the record's notes list where the
rates decayed (``lr_decays_at``). The generator is the authors' DCGAN-style one (linear to a
(2 ngf, H/4, W/4) map, two upsampling convolution blocks with BatchNorm and LeakyReLU 0.2, a final
convolution to C channels and an affine-free BatchNorm), with tanh mapped to [0, 1] (msbench
victims take [0, 1] images; the authors' generator works in normalised space).

DFME trains with these optimisers, not the suite's clone recipe (``[clone]`` does not apply).
Paper scale is millions of queries (20M on CIFAR-10, about 2M on MNIST-size tasks for > 90%); a
CPU suite runs it on small budgets and measures how far that gets.

Hard labels: the paper's attack needs probabilities. Here it runs unchanged on one-hot answers
(their floored logits), where the forward differences are zero almost everywhere: the generator
learns nearly nothing, which is what DFME's loss gives a hard-label API (notes say so).
The clone's intermediate states are reported every ``report_every`` queries for budget curves.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from msbench.attacks.base import Attack, AttackContext, oracle_targets
from msbench.compute import full_precision
from msbench.oracle import Oracle
from msbench.registry import register_attack
from msbench.seeds import build_seeded
from msbench.training import Once, Optimiser, train_loop

LOG_FLOOR = 1e-8
MILESTONES = (0.1, 0.3, 0.5)
LR_SCALE = 0.3


class Generator(nn.Module):
    """DFME's DCGAN-style generator; ``forward`` returns the pre-activation a, ``image`` (tanh(a) + 1) / 2."""

    def __init__(self, shape: tuple[int, int, int], nz: int = 256, ngf: int = 64):
        super().__init__()
        channels, height, width = shape
        self.shape = shape
        self.start = (max(1, math.ceil(height / 4)), max(1, math.ceil(width / 4)))
        self.project = nn.Linear(nz, 2 * ngf * self.start[0] * self.start[1])
        self.bn0 = nn.BatchNorm2d(2 * ngf)
        self.block1 = nn.Sequential(nn.Conv2d(2 * ngf, 2 * ngf, 3, padding=1), nn.BatchNorm2d(2 * ngf),
                                    nn.LeakyReLU(0.2))
        self.block2 = nn.Sequential(nn.Conv2d(2 * ngf, ngf, 3, padding=1), nn.BatchNorm2d(ngf), nn.LeakyReLU(0.2),
                                    nn.Conv2d(ngf, channels, 3, padding=1), nn.BatchNorm2d(channels, affine=False))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.bn0(self.project(z).view(len(z), -1, *self.start))
        out = self.block1(F.interpolate(out, scale_factor=2))
        return self.block2(F.interpolate(out, size=self.shape[1:]))

    @staticmethod
    def image(pre: torch.Tensor) -> torch.Tensor:
        return (torch.tanh(pre) + 1) / 2


def victim_logits(probabilities: torch.Tensor) -> torch.Tensor:
    """log p floored at 1e-8 and centred over the classes (the paper's logit recovery)."""
    log_p = probabilities.clamp_min(LOG_FLOOR).log()
    return log_p - log_p.mean(dim=1, keepdim=True)


def disagreement(clone_logits: torch.Tensor, victim: torch.Tensor) -> torch.Tensor:
    """Per-sample l = mean_k |S(x)_k - v(x)_k|."""
    return (clone_logits - victim).abs().mean(dim=1)


def forward_difference_gradient(loss: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, directions: int,
                                epsilon: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Zeroth-order estimate of the gradient of ``loss`` at each sample of ``x``.

    ``loss`` maps a batch of points (N, ...) to per-sample values (N,); it is called once, on
    ``len(x) * (directions + 1)`` points (the probes of each sample, then the samples). Returns
    (gradient estimate shaped like x, loss at x): (d / m) sum_j [loss(x + eps u_j) - loss(x)] / eps u_j.
    """
    n, dim = len(x), x[0].numel()
    u = torch.randn((n, directions, dim), generator=generator).to(x.device)
    u = u / u.norm(dim=2, keepdim=True)
    points = torch.cat([(x.reshape(n, 1, dim) + epsilon * u).reshape(n * directions, *x.shape[1:]), x])
    values = loss(points)
    probed, at_x = values[:n * directions].view(n, directions), values[n * directions:]
    slopes = (probed - at_x[:, None]) / epsilon
    estimate = dim * (slopes[:, :, None] * u).mean(dim=1)
    return estimate.view_as(x), at_x


@register_attack("dfme")
class DFME(Attack):
    """DFME: generator and clone in a min-max game on their disagreement, victim gradients by forward differences."""

    label = "DFME"
    roles = ()
    contract_settings = {"budget": 700, "batch_size": 32, "nz": 32, "ngf": 16}  # test size: 3 iterations
    learns_at_test_size = False  # data-free: millions of queries at paper scale
    passes_per_query = 2.0  # each query is a forward of the clone and generator, a clone step a backward too

    @dataclass
    class Config:
        budget: int = 20_000_000
        batch_size: int = 256
        directions: int = 1  # m random directions per sample and generator step
        epsilon: float = 1e-3  # forward-difference step, on the generator's pre-activation output
        generator_steps: int = 1
        clone_steps: int = 5
        nz: int = 256
        ngf: int = 64
        lr_clone: float = 0.1
        lr_generator: float = 1e-4
        # fractions of the iterations: x0.3 each
        milestones: list[float] = field(default_factory=lambda: list(MILESTONES))
        decay_after: int = 0  # no learning-rate decay before this iteration (0: the official fractions as they fall)
        report_every: int = 0  # queries between reported clones for budget curves; 0: the end only

    @staticmethod
    def check_config(config: "DFME.Config") -> tuple[str, str] | None:
        for key in ("budget", "batch_size", "directions", "nz", "ngf", "clone_steps"):
            if getattr(config, key) < 1:
                return key, f"expected a positive integer, got {getattr(config, key)}"
        if config.generator_steps < 0 or config.report_every < 0:
            return "generator_steps", "expected non-negative generator_steps and report_every"
        for key in ("epsilon", "lr_clone", "lr_generator"):
            if not getattr(config, key) > 0:
                return key, f"expected a positive number, got {getattr(config, key)}"
        if any(not 0 < f < 1 for f in config.milestones) or list(config.milestones) != sorted(set(config.milestones)):
            return "milestones", (f"expected increasing fractions of the run strictly between 0 and 1, "
                                  f"got {list(config.milestones)}")
        if config.decay_after < 0:
            return "decay_after", f"expected a non-negative number of iterations, got {config.decay_after}"
        cost = (config.generator_steps * (config.directions + 1) + config.clone_steps) * config.batch_size
        if config.budget < cost:
            return "budget", f"expected at least one iteration's {cost} queries, got {config.budget}"
        return None

    def schedule(self, iterations: int) -> list[int]:
        """The iterations after which both learning rates are scaled by 0.3 (see the module docstring)."""
        c = self.config
        return sorted({m for m in (max(1, c.decay_after, int(f * iterations)) for f in c.milestones) if m < iterations})

    def iteration_cost(self) -> int:
        c = self.config
        return (c.generator_steps * (c.directions + 1) + c.clone_steps) * c.batch_size

    def run(self, oracle: Oracle, ctx: AttackContext) -> nn.Module:
        config = self.config
        device = ctx.device
        cost = self.iteration_cost()
        iterations = min(config.budget, oracle.remaining) // cost
        if iterations == 0:
            raise ValueError(f"dfme: one iteration costs {cost} queries; the budget is "
                             f"{min(config.budget, oracle.remaining)}")
        ctx.notes["iterations"] = iterations
        if iterations * cost < config.budget:
            ctx.notes["unspent"] = f"{config.budget - iterations * cost} queries unspent (an iteration costs {cost})"
        if oracle.label_mode == "hard":
            ctx.notes["hard_labels"] = ("DFME needs probabilities; on one-hot answers its generator gets almost "
                                        "no signal")
        clone = ctx.new_clone().to(device)
        if ctx.input_shape is None:
            raise ValueError("dfme: the attack context gives no input shape for the generator's images")
        shape = ctx.input_shape
        generator_net = build_seeded(lambda: Generator(shape, config.nz, config.ngf),
                                     ctx.seed_for("dfme.generator")).to(device)
        milestones = self.schedule(iterations)
        ctx.notes["lr_decays_at"] = milestones
        clone_opt = Optimiser.milestone_sgd(clone.parameters(), config.lr_clone, 0.9, 5e-4, milestones, LR_SCALE,
                                            "dfme clone")
        # the generator's schedule only where it steps (a schedule stepped before its optimiser warns)
        gen_opt = Optimiser.adam(generator_net.parameters(), config.lr_generator,
                                 milestones if config.generator_steps > 0 else (), LR_SCALE, "dfme generator")
        noise = torch.Generator().manual_seed(ctx.seed_for("dfme.noise"))  # z draws
        probes = torch.Generator().manual_seed(ctx.seed_for("dfme.probes"))  # forward-difference directions
        next_report = config.report_every or math.inf

        def oracle_logits(images: torch.Tensor) -> torch.Tensor:
            return victim_logits(oracle_targets(oracle, images, device).to(device))

        def iteration(_: None) -> dict[str, torch.Tensor]:
            """One round of the game: the generator's steps, then the clone's (both modules start in training mode)."""
            for _ in range(config.generator_steps):
                z = torch.randn((config.batch_size, config.nz), generator=noise).to(device)
                pre = generator_net(z)
                clone.eval()

                @torch.no_grad()
                def loss(points: torch.Tensor) -> torch.Tensor:  # the generator maximises l: it descends -l
                    images = Generator.image(points)  # in fp32 even under bf16: eps = 1e-3 differences vanish in bf16
                    with full_precision(images):
                        return -disagreement(clone(images.float()), oracle_logits(images.float()))

                estimate, _ = forward_difference_gradient(loss, pre.detach(), config.directions, config.epsilon, probes)
                gen_opt.step_through(pre, estimate / len(pre))  # d(mean -l)/da
                clone.train()
            for _ in range(config.clone_steps):
                z = torch.randn((config.batch_size, config.nz), generator=noise).to(device)
                with torch.no_grad():
                    images = Generator.image(generator_net(z))
                target = oracle_logits(images)
                value = disagreement(clone(images), target).mean()
                clone_opt.step_on(value)
            return {"loss": value.detach()}

        def report(_: int) -> None:
            nonlocal next_report
            if oracle.queries >= next_report:
                ctx.report(oracle.queries, clone)
                clone.train()
                while next_report <= oracle.queries:
                    next_report += config.report_every

        train_loop(iteration, Once(), iterations, [clone, generator_net], [clone_opt, gen_opt], "dfme", report)
        ctx.report(oracle.queries, clone)
        return clone
