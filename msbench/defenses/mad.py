"""MAD, prediction poisoning (Orekondy et al., ICLR 2020): answers that turn a clone's gradient away.

For each query MAD picks a target distribution y* whose gradient signal, on a surrogate attacker
model A, points as far as possible from that of the true answer y, then moves y towards y* within
an L1 budget epsilon. Gradients are taken w.r.t. A's last linear weight only, as in the official
code. Two implementations compute the same answers:

- ``reference``: the official procedure, per sample: K backward passes of -log p_k to build the
  Jacobian G, then target selection by scoring candidates through G. Kept as the test oracle.
- ``fast``: for the last linear layer (input features h, probabilities p of A) row k of G is
  (p - e_k) h^T, so G^T v = (p - v) h^T for a probability vector v; after normalisation h cancels
  and the angular deviation depends on p, y and y* only. Every candidate of a whole batch is then
  scored with tensor ops: one surrogate forward, no backward pass, no loop over samples.

The surrogate is a randomly initialised model of the victim's architecture kept in eval mode (the
official code leaves a loaded surrogate's BatchNorm in train mode; msbench does not).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from msbench.defenses.base import L1_GRID, OutputDefense, VictimContext
from msbench.models import last_linear
from msbench.registry import register_defense

Strategy = Literal["extreme", "argmax"]  # one-hot targets, or uniform sets keeping the top-1 label
Objective = Literal["angular", "l2"]  # the official objmax=True, or its default objmax=False
EXHAUSTIVE_MAX_CLASSES = 10  # up to this K, MAD-argmax scores all 2^(K-1) sets containing k1
GREEDY_MAX_CANDIDATES = 1024  # beyond it, the greedy search stops after this many scored sets
TOP1_BONUS = 1e-5  # added at k1 before normalising a set, so y* keeps k1 as its strict top-1


def mix(y: torch.Tensor, ystar: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Move y towards y* by at most ``epsilon`` in L1: (1 - a) y + a y*, a = eps / ||y - y*||_1."""
    distance = (y - ystar).abs().sum(dim=1, keepdim=True)
    alpha = (epsilon / (distance + 1e-7)).clamp(0.0, 1.0)
    return (1.0 - alpha) * y + alpha * ystar


def uniform_over(sets: torch.Tensor, top1: torch.Tensor) -> torch.Tensor:
    """MAD-argmax's candidates: uniform over each 0/1 set (..., K), with TOP1_BONUS at k1.

    ``top1`` holds k1 broadcastable to ``sets`` without its last axis.
    """
    k1 = F.one_hot(top1, sets.shape[-1]).to(sets.dtype)
    weights = sets + TOP1_BONUS * k1.expand_as(sets)
    return weights / weights.sum(dim=-1, keepdim=True)


# -- reference: the official per-sample procedure ---------------------------------------------------

def surrogate_jacobian(surrogate: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """G (K, D) for one input (1, C, H, W): row k is d(-log p_k)/dW for A's last linear weight W.

    K separate backward passes through one graph, as the official code does. The weight is swapped
    for a fresh leaf via ``functional_call`` so a frozen, cached surrogate needs no changes.
    """
    weight = last_linear(surrogate).weight
    name = next(n for n, p in surrogate.named_parameters() if p is weight)
    leaf = weight.detach().requires_grad_(True)
    with torch.enable_grad():
        log_p = F.log_softmax(functional_call(surrogate, {name: leaf}, (x,)), dim=1)[0]
        rows = [torch.autograd.grad(-log_p[k], leaf, retain_graph=k + 1 < len(log_p))[0].flatten()
                for k in range(len(log_p))]
    return torch.stack(rows)


def jacobian_objective(G: torch.Tensor, candidates: torch.Tensor, y: torch.Tensor, objective: str) -> torch.Tensor:
    """Score candidates (M, K) through G: angular ||u/|u| - v/|v|||^2 or l2 ||G^T (y* - y)||^2."""
    if objective == "l2":
        return ((candidates - y) @ G).pow(2).sum(dim=1)
    u = candidates @ G
    v = y @ G
    return (u / u.norm(dim=1, keepdim=True) - v / v.norm()).pow(2).sum(dim=1)


def reference_target(G: torch.Tensor, y: torch.Tensor, strategy: str, objective: str) -> torch.Tensor:
    """y* for one sample (y of shape (K,)), chosen by scoring candidates through G."""
    num_classes = len(y)
    score: Callable[[torch.Tensor], torch.Tensor] = lambda c: jacobian_objective(G, c, y, objective)
    if strategy == "extreme":
        vertices = torch.eye(num_classes, dtype=y.dtype, device=y.device)
        return vertices[score(vertices).argmax()]
    top1 = y.argmax()
    if num_classes <= EXHAUSTIVE_MAX_CLASSES:
        codes = [i for i in range(2 ** num_classes) if (i >> top1.item()) & 1]
        sets = torch.tensor([[(i >> k) & 1 for k in range(num_classes)] for i in codes], dtype=y.dtype, device=y.device)
        candidates = uniform_over(sets, top1)
        return candidates[score(candidates).argmax()]
    # greedy: grow {k1} one class a round, keep the best set seen, stop after the candidate cap
    members = F.one_hot(top1, num_classes).to(y.dtype)
    best = uniform_over(members, top1)
    best_score = score(best[None])[0]
    scored = 1
    while scored < GREEDY_MAX_CANDIDATES and members.sum() < num_classes:
        round_best, round_class = None, -1
        for k in range(num_classes):
            if members[k] == 1 or scored >= GREEDY_MAX_CANDIDATES:
                continue
            trial = members.clone()
            trial[k] = 1
            value = score(uniform_over(trial, top1)[None])[0]
            scored += 1
            if round_best is None or value > round_best:
                round_best, round_class = value, k
            if value > best_score:
                best_score, best = value, uniform_over(trial, top1)
        members[round_class] = 1
    return best


def reference_targets(surrogate: nn.Module, x: torch.Tensor, y: torch.Tensor, strategy: str,
                      objective: str) -> torch.Tensor:
    """The official procedure, one sample at a time (the oracle the fast form is tested against)."""
    return torch.stack([reference_target(surrogate_jacobian(surrogate, x[i:i + 1]).to(y.dtype), y[i], strategy,
                                         objective) for i in range(len(x))])


# -- fast: the closed form G^T v = (p - v) h^T, whole batch at once -----------------------------------
#
# The directions of G^T y* and G^T y are those of a = p - y* and b = p - y (times h), so the angular
# deviation is ||a/|a| - b/|b|||^2 = 2 - 2 a.b^/|a| with b^ = b/|b|. Every candidate is a vertex or a
# uniform set, so a.b^ and |a| follow from a few dot products of the set with p, b^ and y: a
# candidate costs O(1) after one matrix product, never a (batch, candidates, classes) tensor.
# The l2 objective is ||y* - y||^2: the official ||G^T (y* - y)||^2 up to the per-sample factor
# ||h||^2, which does not change the argmax.

def _angular(pp: torch.Tensor, pc: torch.Tensor, cc: torch.Tensor, pb: torch.Tensor, cb: torch.Tensor) -> torch.Tensor:
    """2 - 2 a.b^/|a| for a = p - c, from p.p, p.c, c.c, p.b^ and c.b^."""
    return 2 - 2 * (pb - cb) / (pp - 2 * pc + cc).clamp_min(0).sqrt()


class _Dots:
    """Per-sample dot products of p, b^ and y that every candidate's score is built from."""

    def __init__(self, p: torch.Tensor, y: torch.Tensor):
        b = p - y
        self.p, self.y, self.b = p, y, b / b.norm(dim=1, keepdim=True)
        self.pp = (p * p).sum(dim=1)
        self.pb = (p * self.b).sum(dim=1)
        self.yy = (y * y).sum(dim=1)

    def uniform_sets(self, sp: torch.Tensor, sb: torch.Tensor, sy: torch.Tensor, size: torch.Tensor | float,
                     top1: torch.Tensor, objective: str) -> torch.Tensor:
        """Scores of uniform_over(s, k1) from s.p, s.b^, s.y and |s| (sample axis last)."""
        at_top1 = lambda v: v.gather(1, top1[:, None])[:, 0]
        z = size + TOP1_BONUS
        cc = (size + 2 * TOP1_BONUS + TOP1_BONUS ** 2) / z ** 2
        if objective == "l2":
            return cc - 2 * (sy + TOP1_BONUS * at_top1(self.y)) / z + self.yy
        pc = (sp + TOP1_BONUS * at_top1(self.p)) / z
        cb = (sb + TOP1_BONUS * at_top1(self.b)) / z
        return _angular(self.pp, pc, cc, self.pb, cb)


def fast_targets(p: torch.Tensor, y: torch.Tensor, strategy: str, objective: str) -> torch.Tensor:
    """y* for a batch from the surrogate's probabilities p (N, K) and the answers y (N, K)."""
    num_classes = y.shape[1]
    p = p.to(y.dtype)
    dots = _Dots(p, y)
    eye = torch.eye(num_classes, dtype=y.dtype, device=y.device)
    if strategy == "extreme":
        if objective == "l2":
            scores = 1 - 2 * y + dots.yy[:, None]
        else:
            scores = _angular(dots.pp[:, None], p, 1.0, dots.pb[:, None], dots.b)
        return eye[scores.argmax(dim=1)]
    top1 = y.argmax(dim=1)
    if num_classes <= EXHAUSTIVE_MAX_CLASSES:
        return _exhaustive_targets(dots, top1, objective)
    return _greedy_targets(dots, top1, objective)


def _exhaustive_targets(dots: _Dots, top1: torch.Tensor, objective: str) -> torch.Tensor:
    """All 2^(K-1) sets containing k1, first best in the reference's order (increasing bit code)."""
    y = dots.y
    num_classes = y.shape[1]
    codes = torch.arange(2 ** num_classes, device=y.device)
    sets = ((codes[:, None] >> torch.arange(num_classes, device=y.device)) & 1).to(y.dtype)  # (M, K), class k = bit k
    size = sets.sum(dim=1, keepdim=True)
    at = lambda v: (sets @ v.T).T  # (N, M): each set's sum of v
    scores = dots.uniform_sets(at(dots.p).T, at(dots.b).T, at(y).T, size, top1, objective).T  # (N, M)
    scores = scores.masked_fill(sets.T[top1] == 0, -math.inf)
    return uniform_over(sets[scores.argmax(dim=1)], top1)


def _greedy_targets(dots: _Dots, top1: torch.Tensor, objective: str) -> torch.Tensor:
    """The greedy set search for K > 10, every sample of the batch in step.

    Each round scores adding each missing class (in class order, up to the candidate cap), adds the
    round's best, and keeps the best set seen. Every sample has the same number of candidates per
    round, so the loop runs over rounds only, each round O(batch x classes).
    """
    p, y, b = dots.p, dots.y, dots.b
    num_classes = y.shape[1]
    rows = torch.arange(len(y), device=y.device)
    members = F.one_hot(top1, num_classes).bool()
    sums = [v.gather(1, top1[:, None])[:, 0] for v in (p, b, y)]  # s.p, s.b^, s.y of the current set
    best_members = members
    best_score = dots.uniform_sets(*sums, 1.0, top1, objective)
    scored, size = 1, 1
    while scored < GREEDY_MAX_CANDIDATES and size < num_classes:
        missing = ~members  # K - size classes per sample
        allowed = missing & (missing.long().cumsum(dim=1) <= GREEDY_MAX_CANDIDATES - scored)
        trial = [(s[:, None] + v).T for s, v in zip(sums, (p, b, y))]  # (K, N): add class k
        values = dots.uniform_sets(*trial, float(size + 1), top1, objective).T.masked_fill(~allowed, -math.inf)
        chosen = values.argmax(dim=1)
        round_best = values[rows, chosen]
        members = members | F.one_hot(chosen, num_classes).bool()
        better = round_best > best_score
        best_members = torch.where(better[:, None], members, best_members)
        best_score = torch.where(better, round_best, best_score)
        sums = [s + v[rows, chosen] for s, v in zip(sums, (p, b, y))]
        scored += min(num_classes - size, GREEDY_MAX_CANDIDATES - scored)
        size += 1
    return uniform_over(best_members.to(y.dtype), top1)


class MADVictim(nn.Module):
    """A base victim answering through MAD's poisoning (the fast form); holds the fixed random surrogate."""

    def __init__(self, base: nn.Module, surrogate: nn.Module, epsilon: float, strategy: Strategy, objective: Objective):
        super().__init__()
        self.base, self.surrogate = base, surrogate.eval()
        self.epsilon, self.strategy, self.objective = epsilon, strategy, objective

    def train(self, mode: bool = True) -> "MADVictim":
        super().train(mode)
        self.surrogate.eval()  # the surrogate is never trained and never sees batch statistics
        return self

    def targets(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return fast_targets(torch.softmax(self.surrogate(x), dim=1), y, self.strategy, self.objective)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        return mix(y, self.targets(x, y), self.epsilon)


class ReferenceMADVictim(MADVictim):
    """The same answers by the official per-sample procedure: the oracle the fast form is tested against."""

    def targets(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return reference_targets(self.surrogate, x, y, self.strategy, self.objective)


FORMS: dict[str, type[MADVictim]] = {"fast": MADVictim, "reference": ReferenceMADVictim}
"""The module of each ``implementation``, chosen once when the victim is built."""


def random_surrogate(ctx: VictimContext, purpose: str) -> nn.Module:
    """The defender's stand-in for the attacker's model: a randomly initialised, frozen model of the
    victim's architecture in eval mode (MAD's and GRAD^2's surrogate), drawn from its own random
    stream ``purpose``, so it is independent of the victim's initialisation."""
    surrogate = ctx.new_model(purpose)
    for parameter in surrogate.parameters():
        parameter.requires_grad_(False)
    return surrogate.eval()


@register_defense("mad")
class MAD(OutputDefense):
    """MAD prediction poisoning: moves each answer within an L1 budget to maximise a clone's gradient deviation."""

    default_base = "vanilla"
    tunable = "epsilon"
    label, color, paper_order, color_over_base = "MAD", "#E69F00", 1, "#0072B2"
    tunable_grid = L1_GRID  # strong to weak

    def cost_model(self, batch_size: int) -> str:
        """The paper's formula (C M_b + S per answer) for the reference form; the fast form's closed-form
        Jacobian needs the victim's and the surrogate's forwards and no backward."""
        if self.config.implementation == "fast":
            return "2 M_f + S"
        return "M_f + C M_b + S" if batch_size <= 1 else "M_f + B(C M_b + S)"

    @dataclass
    class Config:
        epsilon: float = 0.5  # L1 budget (the official MNIST example)
        strategy: Strategy = "extreme"
        objective: Objective = "angular"
        implementation: Literal["fast", "reference"] = "fast"  # closed form, or per-sample backward passes

    @staticmethod
    def check_config(config: "MAD.Config") -> tuple[str, str] | None:
        if not (math.isfinite(config.epsilon) and config.epsilon >= 0):
            return "epsilon", f"expected a non-negative L1 budget, got {config.epsilon}"
        return None

    def build(self, base: nn.Module, ctx: VictimContext) -> nn.Module:
        surrogate = random_surrogate(ctx, "mad.surrogate")
        c = self.config
        return FORMS[c.implementation](base, surrogate, c.epsilon, c.strategy, c.objective)
