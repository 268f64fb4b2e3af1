"""GRAD^2, gradient redirection (Mazeika et al., "How to steer your adversary: targeted and efficient
model stealing defenses with gradient redirection", ICML 2022).

The attacker trains on an answer y~ with the loss -sum_k y~_k log p_k, whose parameter gradient
g(y~) = G^T y~ is linear in y~ (G: the Jacobian of a surrogate's log-probabilities w.r.t. all its
parameters). GRAD^2 chooses y~ in the simplex with ||y~ - y||_1 <= epsilon to minimise the inner
product <g(y~), d>:

- untargeted: d = g(y), the clean answers' gradient (the gradient is turned away from it);
- targeted ``all_ones``: d = -1, i.e. maximise <g(y~), 1> (the paper's all-ones experiment).

The released scripts' main setting is all-ones (``ALL-ONES_10`` in ``makebatches.sh``; untargeted
is their ``MIN-IP``); msbench's default ``target`` stays ``untargeted``, as before.

The objective is linear in y~, with scores s_k = <grad log p_k, d>; the paper's greedy solution
(exact for a linear objective on the simplex within an L1 ball) gives min(epsilon/2, 1 - y_r) of
mass to the class r of the lowest score, taking it from the classes of the highest scores in turn.

As in the authors' code, g is the gradient of the batch's mean loss, so d of a call is the clean
gradient of the whole query batch, and the surrogate is used in eval mode.

The surrogate (``surrogate`` setting). The official code (mmazeika/model-stealing-defenses,
``batch_training/train_surrogate.py``, loaded in ``get_queries.py``) distils it from the victim's
clean answers on the attacker's transfer set, the very images whose answers it then perturbs
(``{transfer}_to_{eval}_surrogate_10epochs.pt`` for its main setting ``ALL-ONES_10``), offline,
before the first answer. A deployed defense cannot have those images before they are asked, so
msbench does not hand them to it. Nor does it distil online on the queries as they arrive: the
surrogate would change during an attack, and msbench checks that an attack leaves every parameter
and buffer of the victim unchanged (``msbench.fingerprint``), shares one cached victim between
cells, and answers each attack from the same starting state; a stateful surrogate fits none of
the three without changing the runner. What msbench offers:

- ``"random"`` (the default, unchanged): MAD's surrogate, a randomly initialised model of the
  victim's architecture (``mad.random_surrogate``), the official code's 0-epoch surrogate
  (``..._surrogate_0epochs.pt``, its surrogate-length study);
- ``"distilled"``: the same initialisation distilled, with the soft cross-entropy (the code's
  distillation loss at temperature 1), for ``surrogate_epochs`` epochs (the code's 10) on the base
  victim's answers on the defender's own training split, with the victim's recipe (the code: SGD
  lr 0.1, Nesterov momentum 0.9, a 50-epoch cosine schedule stopped after 10). The code has
  this too: its ``_s1`` settings load ``{eval}_to_{eval}_surrogate_*`` models distilled on the
  defender's training set. It reads nothing an attacker sends.

Two implementations compute the same answers (a test checks it):

- ``reference``: the authors' procedure: scores by double backpropagation through G^T y~, then
  the greedy loop one sample at a time;
- ``fast``: d by one vector-Jacobian product, all scores by one Jacobian-vector product
  (``torch.func``), and the greedy step as sorted cumulative sums over the batch, no Python loop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jvp, vjp

from msbench.defenses.base import L1_GRID, OutputDefense, VictimContext, renormalise
from msbench.defenses.mad import random_surrogate
from msbench.registry import register_defense
from msbench.training import fit as fit_model

Target = Literal["untargeted", "all_ones"]  # away from the clean gradient, or towards the all-ones direction
Surrogate = Literal["random", "distilled"]  # untrained, or distilled on the defender's training split


# -- scores s (N, K): s_ik = d(<G^T y~, d>)/d y~_ik ----------------------------------------------------

def _log_probabilities(surrogate: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(functional_call(surrogate, params, (x,)), dim=1)


def fast_scores(surrogate: nn.Module, x: torch.Tensor, y: torch.Tensor, target: Target) -> torch.Tensor:
    """Scores from one VJP (the direction d) and one JVP (every sample's and class's <grad log p_k, d>)."""
    params = {name: p.detach() for name, p in surrogate.named_parameters()}
    f = lambda p: _log_probabilities(surrogate, p, x)  # noqa: E731
    with torch.enable_grad():
        if target == "untargeted":
            log_p, pullback = vjp(f, params)
            d = {k: v / len(x) for k, v in pullback(y.to(log_p.dtype))[0].items()}  # grad of the batch-mean sum y log p
        else:
            d = {k: -torch.ones_like(v) for k, v in params.items()}
        _, scores = jvp(f, (params,), (d,))
    return scores.detach() / len(x)


def reference_scores(surrogate: nn.Module, x: torch.Tensor, y: torch.Tensor, target: Target) -> torch.Tensor:
    """The authors' double backpropagation: objective <G^T y~, d> at y~ = y, differentiated w.r.t. y~."""
    params = [p.detach().requires_grad_(True) for p in surrogate.parameters()]
    names = [name for name, _ in surrogate.named_parameters()]
    with torch.enable_grad():
        y_tilde = y.detach().clone().requires_grad_(True)
        log_p = _log_probabilities(surrogate, dict(zip(names, params)), x)
        loss = (y_tilde * log_p).sum(dim=1).mean()
        g_tilde = torch.autograd.grad(loss, params, create_graph=True)
        flat = torch.cat([g.flatten() for g in g_tilde])
        d = flat.detach() if target == "untargeted" else -torch.ones_like(flat)
        return torch.autograd.grad((flat * d).sum(), y_tilde)[0].detach()


# -- the greedy step ---------------------------------------------------------------------------------

def reference_redirect(y: torch.Tensor, scores: torch.Tensor, epsilon: float) -> torch.Tensor:
    """The paper's greedy loop, one sample at a time: give to the lowest score, take from the highest."""
    out = []
    for row, s in zip(y.double(), scores):
        order = torch.argsort(s)  # smallest to largest
        receiver = order[0]
        answer = row.clone()
        can_give = min(1 - answer[receiver].item(), epsilon / 2)
        given, pointer = 0.0, len(order) - 1
        while given < can_give and pointer > 0:
            here = answer[order[pointer]].item()
            take = min(here, can_give - given)
            answer[order[pointer]] -= take
            given += take
            pointer -= 1
        answer[receiver] += given
        out.append(answer)
    return renormalise(torch.stack(out)).to(y.dtype)


def fast_redirect(y: torch.Tensor, scores: torch.Tensor, epsilon: float) -> torch.Tensor:
    """The same greedy step for the whole batch: classes by descending score, mass taken by cumulative sums."""
    y64 = y.double()
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    sorted_y = y64.gather(1, order)
    # the lowest score (the last in descending order, as the loop's order[0] for distinct scores)
    receiver = order[:, -1:]
    available = torch.cat([sorted_y[:, :-1], torch.zeros_like(sorted_y[:, -1:])], dim=1)
    can_give = torch.minimum(1 - y64.gather(1, receiver), torch.full_like(receiver, epsilon / 2, dtype=y64.dtype))
    before = available.cumsum(dim=1) - available
    taken = torch.minimum((can_give - before).clamp_min(0), available)
    answer = y64 - torch.zeros_like(y64).scatter(1, order, taken)
    answer = answer.scatter_add(1, receiver, taken.sum(dim=1, keepdim=True))
    return renormalise(answer).to(y.dtype)


class GRAD2Victim(nn.Module):
    """A base victim answering through gradient redirection (the fast form); holds the fixed surrogate."""

    def __init__(self, base: nn.Module, surrogate: nn.Module, epsilon: float, target: Target):
        super().__init__()
        self.base, self.surrogate = base, surrogate.eval()
        self.epsilon, self.target = epsilon, target

    def train(self, mode: bool = True) -> "GRAD2Victim":
        super().train(mode)
        self.surrogate.eval()
        return self

    def redirect(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return fast_redirect(y, fast_scores(self.surrogate, x, y, self.target), self.epsilon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.epsilon == 0:
            return y
        return self.redirect(x, y)


class ReferenceGRAD2Victim(GRAD2Victim):
    """The same answers by the authors' procedure: double backpropagation, then a per-sample greedy loop."""

    def redirect(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return reference_redirect(y, reference_scores(self.surrogate, x, y, self.target), self.epsilon)


FORMS: dict[str, type[GRAD2Victim]] = {"fast": GRAD2Victim, "reference": ReferenceGRAD2Victim}
"""The module of each ``implementation``, chosen once when the victim is built."""


@register_defense("grad2")
class GRAD2(OutputDefense):
    """GRAD^2 (Mazeika et al. 2022): answers in an L1 ball that redirect the attacker's training gradient."""

    label = "GRAD²"
    tunable = "epsilon"
    tunable_grid = L1_GRID  # strong to weak

    @dataclass
    class Config:
        epsilon: float = 0.5  # L1 budget; benign matching tunes it
        target: Target = "untargeted"
        # VJP + JVP, batched greedy; or double backprop, per-sample loop
        implementation: Literal["fast", "reference"] = "fast"
        surrogate: Surrogate = "random"  # "distilled": on the base victim's answers on the defender's training split
        surrogate_epochs: int = 10  # distillation epochs of the "distilled" surrogate (the official code's 10)

    @staticmethod
    def check_config(config: "GRAD2.Config") -> tuple[str, str] | None:
        if not (math.isfinite(config.epsilon) and 0 <= config.epsilon <= 2):
            return "epsilon", f"expected an L1 budget in [0, 2], got {config.epsilon}"
        epochs = config.surrogate_epochs
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            return "surrogate_epochs", f"expected a positive number of epochs, got {epochs!r}"
        return None

    def cost_model(self, batch_size: int) -> str:
        """Victim forward; the surrogate's VJP (forward + backward, untargeted only) and JVP (about 2 forwards)."""
        if self.config.target == "untargeted":
            return "4 M_f + M_b + O(K log K)"
        return "3 M_f + O(K log K)"

    def build(self, base: nn.Module, ctx: VictimContext) -> nn.Module:
        c = self.config
        return FORMS[c.implementation](base, random_surrogate(ctx, "grad2.surrogate"), c.epsilon, c.target)

    def fit(self, defended: nn.Module, ctx: VictimContext) -> None:
        """The "distilled" surrogate: trained on what the defender has, the base victim's answers on
        its own training split (the "random" one trains nothing). The surrogate stays frozen after."""
        if self.config.surrogate != "distilled":
            return
        base = defended.base.eval()
        with torch.no_grad():
            answers = torch.cat([base(x).detach().float() for x, _ in ctx.train.batches(512, ctx.device)])
        surrogate = defended.surrogate
        for parameter in surrogate.parameters():
            parameter.requires_grad_(True)
        recipe = ctx.recipe.with_(epochs=self.config.surrogate_epochs)
        fit_model(surrogate, ctx.train.images, answers, recipe, device=ctx.device,
                  seed=ctx.seed_for("grad2.surrogate.train"),
                  augment=ctx.augment, desc=f"grad2 surrogate {ctx.spec.name}/{ctx.arch}")
        for parameter in surrogate.parameters():
            parameter.requires_grad_(False)
        surrogate.eval()
