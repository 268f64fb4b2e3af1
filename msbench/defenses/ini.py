"""InI, Isolation and Induction (ACM MM 2023): train the victim against a fixed surrogate clone.

The defender keeps a randomly initialised, frozen clone C of the victim's architecture (eval mode;
the paper's main results use an untrained surrogate, Appendix C), initialised independently of V
and of any attacker's clone (its own random stream, ``"ini.surrogate"``) and trains the victim V with
objectives about what an attacker distilling V into C would learn:

- **benign**: L_ben = CE(V(x), y) on in-distribution data.
- **isolation** (Eq. 5): L_iso = cos(g~, g), with g~ the gradient w.r.t. C's parameters of the
  attacker's soft cross-entropy -sum_k q_V,k log p_C,k (q_V = softmax V(x), Eq. 4) and g the same
  with the true one-hot label. g~ is built with ``create_graph=True`` so V is trained through it
  (double backward); g is a constant. One cosine per batch over all of C's parameters. The
  Jacobian G of Eq. 4 is never formed: y^T G is exactly that gradient.
- **induction** (Eqs. 7-8): L_ig = KL(q_V(x_o) || p_C(x_o)) on an OOD batch (the attacker's
  distillation objective; the paper writes the arguments the other way round), and
  L_ind = L_ig + beta * ||grad_{theta_C} L_ig||.

As in Algorithm 1 line 9, L_ben, gamma_iso L_iso, gamma_ind L_ig and gamma_ind beta ||grad L_ig||
each give one gradient w.r.t. the victim's parameters; PCGrad (``msbench.defenses.pcgrad``) resolves their
conflicts and sums them; SGD with the suite's recipe takes the step.

Settings the paper leaves open, and the choices made here:
- beta, gamma_iso, gamma_ind: the paper gives no values (Algorithm 1 lists them as inputs); all
  default to 1.0.
- ||grad L_ig|| is the L2 norm over all P of C's parameters (``grad_norm_form = "l2"``), so it
  grows with the clone; ``"rms"`` divides it by sqrt(P) and ``"mean_abs"`` takes the mean absolute
  entry (the official code's reduction). Measured sizes at ResNet-18: docs/methods.md.
- The OOD forward of the paper form runs the victim in eval mode (``ood_train_mode`` unset): the
  induction terms then describe the outputs the deployed victim gives an attacker's queries, and
  BatchNorm statistics are estimated from in-distribution data only. The ID forward, shared by
  L_ben and L_iso, is an ordinary training-mode forward.
- The OOD batch has the recipe's batch size (the paper: 128 for both) and cycles through the OOD
  set independently of the ID epoch; both batches get the dataset's training augmentation.

``variant = "official"`` reproduces the authors' released training step instead, for comparison:
isolation gradient of the reverse KL, KL(p_C || q_V), against the CE gradient with the true label;
an L1 match between V's centred log-probabilities and C's raw logits on OOD data (weight 0.3); the
mean absolute value of grad_{theta_C} KL(p_C || q_V) on the OOD batch (weight 1000); isolation
weight 1; an in-distribution distance term (weight 0, so off); PCGrad with the mean merge and
self-projection; the victim in training mode for the OOD forward. Objectives of weight 0 are left
out of PCGrad, as that code does. gamma_iso, gamma_ind and beta do not apply to this variant. With
``pcgrad = false`` both variants take the plain sum of the objectives (the official code would also
clip the gradient norm at 10 there; msbench does not).

Ablations (paper Table 5): ``induction = false`` (isolation only), ``isolation = false`` (induction
only), ``grad_norm = false`` (InI without the gradient-norm term).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from msbench.defenses.base import Softmax, TrainingDefense, VictimContext
from msbench.defenses.pcgrad import pcgrad
from msbench.registry import register_defense
from msbench.training import Optimiser, Shuffled, augment_batch, cycle_batches, train_loop

Variant = Literal["paper", "official"]  # the paper's training step, or the authors' released one
# ||g||_2 (the paper), ||g||_2 / sqrt(P), mean |g_i| (the official code's reduction)
NormForm = Literal["l2", "rms", "mean_abs"]


# -- the objectives ---------------------------------------------------------------------------

def flatten(grads: Sequence[torch.Tensor | None], params: Sequence[torch.Tensor]) -> torch.Tensor:
    """One flat vector from per-parameter gradients; a parameter not reached contributes zeros."""
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


def clone_gradient(loss: torch.Tensor, clone_params: Sequence[torch.Tensor],
                   create_graph: bool = False) -> torch.Tensor:
    """Flat gradient of ``loss`` w.r.t. the clone's parameters; with ``create_graph`` it stays
    differentiable, so the victim can be trained through it."""
    grads = torch.autograd.grad(loss, clone_params, create_graph=create_graph, retain_graph=True, allow_unused=True)
    return flatten(grads, clone_params)


def attacker_soft_ce(victim_logits: torch.Tensor, clone_logits: torch.Tensor) -> torch.Tensor:
    """The attacker's soft-label loss -sum_k q_V,k log p_C,k (Eq. 4), averaged over the batch."""
    return -(torch.softmax(victim_logits, dim=1) * F.log_softmax(clone_logits, dim=1)).sum(dim=1).mean()


def information_gain(victim_logits: torch.Tensor, clone_logits: torch.Tensor) -> torch.Tensor:
    """L_ig = KL(q_V || p_C), averaged over the batch (Eq. 7)."""
    log_q = F.log_softmax(victim_logits, dim=1)
    return (log_q.exp() * (log_q - F.log_softmax(clone_logits, dim=1))).sum(dim=1).mean()


def reverse_kl(clone_logits: torch.Tensor, victim_logits: torch.Tensor) -> torch.Tensor:
    """KL(p_C || q_V), averaged over the batch: the official code's "kl" gradient loss."""
    log_p = F.log_softmax(clone_logits, dim=1)
    return (log_p.exp() * (log_p - F.log_softmax(victim_logits, dim=1))).sum(dim=1).mean()


def centred_l1(victim_logits: torch.Tensor, clone_logits: torch.Tensor) -> torch.Tensor:
    """Mean |C(x) - (log q_V - mean_k log q_V)|: the official code's "l1" output loss."""
    log_q = F.log_softmax(victim_logits, dim=1)
    return (clone_logits - (log_q - log_q.mean(dim=1, keepdim=True))).abs().mean()


def isolation_loss(victim_logits: torch.Tensor, clone_logits: torch.Tensor, labels: torch.Tensor,
                   clone_params: Sequence[torch.Tensor], reverse: bool = False) -> torch.Tensor:
    """L_iso: cosine between the attacker's update of C (from V's outputs) and the true-label update.

    ``reverse`` uses the official code's reverse KL for the attacker's update. ``clone_logits``
    must carry the graph to ``clone_params``.
    """
    true_grad = clone_gradient(F.cross_entropy(clone_logits, labels), clone_params).detach()
    attack = reverse_kl(clone_logits, victim_logits) if reverse else attacker_soft_ce(victim_logits, clone_logits)
    attack_grad = clone_gradient(attack, clone_params, create_graph=True)
    return F.cosine_similarity(attack_grad, true_grad, dim=0)


def reduce_norm(gradient: torch.Tensor, form: NormForm) -> torch.Tensor:
    """The size of a flat gradient: its L2 norm, the L2 norm over sqrt(P) (the root mean square
    entry, independent of the clone's size), or its mean absolute entry."""
    if form == "mean_abs":
        return gradient.abs().mean()
    norm = gradient.norm()
    return norm / gradient.numel() ** 0.5 if form == "rms" else norm


@contextmanager
def training_mode(module: nn.Module, train: bool) -> Iterator[None]:
    was = module.training
    module.train(train)
    try:
        yield
    finally:
        module.train(was)


# -- the defense ------------------------------------------------------------------------------

@register_defense("ini")
class InI(TrainingDefense):
    """InI (Isolation and Induction): trains against a fixed surrogate clone; paper or official form."""

    roles = ("ood",)
    label, color, paper_order = "InI", "#D55E00", 4
    training_cost = 12.15  # Table B.1: InI 12.15x Vanilla
    ablation_reference = True  # its ablations are reported beside it
    cost_model = "M_f"  # the isolation is in training; the deployed victim is one forward
    # the paper's form diverges within an epoch at test size (as in suites/quick.toml); a clipped update does not
    contract_settings = {"max_grad_norm": 5.0}

    @dataclass
    class Config:
        variant: Variant = "paper"
        gamma_iso: float = 1.0  # isolation weight (gamma_1 of Eq. 9; no value in the paper)
        gamma_ind: float = 1.0  # induction weight (gamma_2 of Eq. 9; no value in the paper)
        beta: float = 1.0  # weight of ||grad L_ig|| in L_ind (Eq. 8; no value in the paper)
        isolation: bool = True  # Table 5 ablations: isolation=false is "L_ind only"
        induction: bool = True  # induction=false is "L_iso only"
        grad_norm: bool = True  # grad_norm=false is "w/o grad L_ig"
        pcgrad: bool = True  # false: plain sum of the objectives (Eq. 9)
        # paper form: how ||grad_{theta_C} L_ig|| reduces the clone's P gradient entries
        grad_norm_form: NormForm = "l2"
        ood_train_mode: bool | None = None  # victim mode for the OOD forward; unset: eval (paper), train (official)
        official_ood_weight: float = 0.3  # official: L1 between centred log q_V and C's logits on OOD data
        official_grad_norm_weight: float = 1000.0  # official: mean |grad_C KL(p_C || q_V)| on OOD data
        official_isolation_weight: float = 1.0  # official: reverse-KL isolation cosine
        official_id_weight: float = 0.0  # official: negative L1 output distance on ID data (off there)
        max_grad_norm: float | None = None  # clip the combined update's L2 norm (neither form clips with PCGrad)

    @staticmethod
    def check_config(config: Any) -> tuple[str, str] | None:
        for name in ("gamma_iso", "gamma_ind", "beta", "official_ood_weight", "official_grad_norm_weight",
                     "official_isolation_weight"):
            if getattr(config, name) < 0:
                return name, f"expected a non-negative weight, got {getattr(config, name)}"
        if config.max_grad_norm is not None and not config.max_grad_norm > 0:
            return "max_grad_norm", f"expected a positive norm, got {config.max_grad_norm}"
        return None

    @property
    def official(self) -> bool:
        return self.config.variant == "official"

    def build(self, ctx: VictimContext) -> nn.Module:
        return Softmax(ctx.new_model("victim"))

    # -- one step ---------------------------------------------------------------------------
    def objectives(self, victim: nn.Module, clone: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   x_ood: torch.Tensor) -> dict[str, torch.Tensor]:
        """The weighted objectives of one step (victim returns logits; clone is the fixed surrogate).

        Each value is a scalar whose gradient w.r.t. the victim's parameters is one PCGrad input;
        switched-off and zero-weight objectives are absent.
        """
        if self.official:
            return self._official_objectives(victim, clone, x, y, x_ood)
        cfg = self.config
        params = list(clone.parameters())
        logits = victim(x)
        out = {"benign": F.cross_entropy(logits, y)}
        if cfg.isolation and cfg.gamma_iso:
            out["isolation"] = cfg.gamma_iso * isolation_loss(logits, clone(x), y, params)
        if cfg.induction and cfg.gamma_ind:
            with training_mode(victim, bool(cfg.ood_train_mode)):
                ood_logits = victim(x_ood)
            with_norm = cfg.grad_norm and cfg.beta > 0
            with torch.set_grad_enabled(with_norm):
                clone_ood = clone(x_ood)
            gain = information_gain(ood_logits, clone_ood)
            out["information_gain"] = cfg.gamma_ind * gain
            if with_norm:
                out["grad_norm"] = cfg.gamma_ind * cfg.beta * reduce_norm(
                    clone_gradient(gain, params, create_graph=True), cfg.grad_norm_form)
        return out

    def _official_objectives(self, victim: nn.Module, clone: nn.Module, x: torch.Tensor, y: torch.Tensor,
                             x_ood: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.config
        params = list(clone.parameters())
        logits = victim(x)
        want_iso = cfg.isolation and cfg.official_isolation_weight
        clone_logits = clone(x) if want_iso or cfg.official_id_weight else None
        out = {"benign": F.cross_entropy(logits, y)}
        if cfg.official_id_weight:
            out["id_distance"] = -cfg.official_id_weight * centred_l1(logits, clone_logits.detach())
        want_ood = cfg.induction and cfg.official_ood_weight
        want_norm = cfg.induction and cfg.grad_norm and cfg.official_grad_norm_weight
        if want_ood or want_norm:
            train = True if cfg.ood_train_mode is None else cfg.ood_train_mode
            with training_mode(victim, train):
                ood_logits = victim(x_ood)
            with torch.set_grad_enabled(bool(want_norm)):
                clone_ood = clone(x_ood)
            if want_ood:
                out["ood_output"] = cfg.official_ood_weight * centred_l1(ood_logits, clone_ood.detach())
        if want_iso:
            out["isolation"] = cfg.official_isolation_weight * isolation_loss(
                logits, clone_logits, y, params, reverse=True)
        if want_norm:
            norm = clone_gradient(reverse_kl(clone_ood, ood_logits), params, create_graph=True).abs().mean()
            out["grad_norm"] = cfg.official_grad_norm_weight * norm
        return out

    def update_direction(self, objectives: dict[str, torch.Tensor], params: Sequence[torch.Tensor],
                         generator: torch.Generator | None = None) -> torch.Tensor:
        """The flat update of the victim's parameters: PCGrad over one gradient per objective."""
        losses = list(objectives.values())
        if not self.config.pcgrad or len(losses) == 1:
            return flatten(torch.autograd.grad(sum(losses), params, allow_unused=True), params)
        grads, reached = [], []
        for k, loss in enumerate(losses):
            per_param = torch.autograd.grad(loss, params, retain_graph=k < len(losses) - 1, allow_unused=True)
            grads.append(flatten(per_param, params))
            reached.append([g is not None for g in per_param])
        masks = None
        if self.official and not all(all(r) for r in reached):
            masks = [torch.cat([torch.full((p.numel(),), hit, dtype=torch.bool, device=p.device)
                                for p, hit in zip(params, r)]) for r in reached]
        return pcgrad(grads, generator, merge="mean" if self.official else "sum",
                      self_projection=self.official, reached=masks)

    def step(self, victim: nn.Module, clone: nn.Module, optimiser: Optimiser, x: torch.Tensor,
             y: torch.Tensor, x_ood: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, float]:
        """One training step of the victim (logits model); returns the objectives' values."""
        params = [p for p in victim.parameters() if p.requires_grad]
        objectives = self.objectives(victim, clone, x, y, x_ood)
        values = dict(zip(objectives, torch.stack([v.detach() for v in objectives.values()]).tolist()))
        optimiser.check(values)
        direction = self.update_direction(objectives, params, generator)
        if self.config.max_grad_norm is not None:
            direction = direction * (self.config.max_grad_norm / direction.norm().clamp_min(self.config.max_grad_norm))
        optimiser.step_along(params, direction)
        return values

    # -- training ---------------------------------------------------------------------------
    def fit(self, victim: nn.Module, ctx: VictimContext) -> None:
        model = victim.model.to(ctx.device)  # train_loop sets the modes
        # fixed surrogate C, initialised independently of V
        clone = ctx.new_model("ini.surrogate").to(ctx.device).eval()
        ood = ctx.role("ood")
        recipe = ctx.recipe
        generator = torch.Generator().manual_seed(ctx.seed_for("ini.train"))
        optimiser = Optimiser.sgd(model.parameters(), recipe, "ini")
        ood_batches = cycle_batches(len(ood), recipe.batch_size, generator)

        def step(index: torch.Tensor) -> dict[str, float]:
            x = augment_batch(ctx.train.floats(index, ctx.device), ctx.augment, generator)
            y = ctx.train.labels[index].to(ctx.device)
            x_ood = augment_batch(ood.floats(next(ood_batches), ctx.device), ctx.augment, generator)
            return self.step(model, clone, optimiser, x, y, x_ood, generator)

        train_loop(step, Shuffled(len(ctx.train), recipe.batch_size, generator), recipe.epochs, [model], [optimiser],
                   f"ini {ctx.spec.name}/{ctx.arch}")
        victim.eval()
