"""Defense-aware recovery (after D-DAE, Chen et al., IEEE S&P 2023, and ModelGuard's NN recovery).

The attacker knows which defense it faces and the defense's public settings, runs the defense's
own code around a shadow model of its own, learns to undo the distortion, and distils the victim
from restored answers:

1. Query ``budget`` random surrogate images once (as KnockoffNets) and keep the answers a.
2. **Shadow victim.** Train a model S of the clone's architecture on those images with the
   answers' top-1 labels (the clone recipe, ``shadow_epochs`` epochs): a stand-in for the victim's
   undefended base, never queried beyond step 1.
3. **Shadow defense.** Build every *output* defense of the chain with its registered plugin around
   softmax(S), with the deployed settings the attacker is told (``ctx.defense_config``: the
   suite's config and the value benign matching chose), ``build(base, ctx)`` then ``fit``. The
   plugin's context is the attacker's own: its seed (not the defender's, so MAD's surrogate is
   another random draw), its answered images with the answers' top-1 as the training set, and a
   further disjoint slice of its surrogate pool as the ``ood`` set (AM's misinformation model).
   The defender's secrets (MAD's random surrogate, AM's misinformation model) are unknown, so the
   attacker builds ``shadow_draws`` shadow defenses, each with its own seed: a restorer trained on
   one draw learns that draw's secret (which vertex its MAD surrogate favours) and does not carry
   over to the victim; over several it must learn what the defense does to any answer.
4. **Shadow pairs.** On ``pairs`` further surrogate images, never queried: clean c = softmax(S(x))
   and defended d = D_S(x) for every draw (in hard-label mode, the one-hot of d's top-1, what the
   oracle returns).
5. **Restorer.** A small MLP R (input [d, log max(d, 1e-6)], hidden layers of ``hidden`` units,
   ReLU, softmax output) minimising the mean L1 distance ||R(d) - c||_1, as D-DAE's recovery
   objective, with Adam. Each batch relabels the classes by one random permutation, applied to d
   and c alike (``permute``): over its random secrets the defense treats classes alike, and without
   this the restorer learns which classes the shadow draws favour (on a small MNIST victim behind
   MAD, 4 draws without it restored the victim's answers worse than no restoration, L1 1.14 vs
   0.50; with it 0.07). A tenth of the pairs is held out: if R does not bring held-out defended
   answers closer to their clean ones than no restoration does, the attacker keeps the raw answers
   (the notes record both distances either way).
6. **Clone.** Trained on R(a) (soft mode) or its top-1 (hard mode), with the suite's clone recipe.

What the attacker knows: the defense chain's names and each output defense's settings as deployed
(epsilon, tau, strategy...), the victim's architecture (as every msbench clone does), and its own
surrogate data. It never sees the victim's weights, its seed or secrets (MAD's surrogate, AM's
misinformation model), or the defender's training or OOD data.

Choices the papers leave open, and those made here: D-DAE detects the defense with a
meta-classifier first; here the attacker is told it (the strongest, Kerckhoffs setting). D-DAE's
shadow models are trained on the attacker's labelled in-distribution data; an msbench attacker has
none, so its shadow learns from the victim's own (defended) top-1 answers on surrogate images.
Training defenses (Vanilla, InI, EDM, outlier exposure) are procedures over the defender's data and
are not replicated: the shadow stands in for the whole base victim. A chain with no output defense
(``vanilla``, ``ini``, ``edm``) has nothing to restore: the attack is then plain KnockoffNets on the
raw answers and its notes say so.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from msbench.attacks.base import Attack, AttackContext, oracle_targets, training_targets
from msbench.data import DatasetSpec, ImageData
from msbench.defenses import OutputDefense, Softmax, VictimContext
from msbench.oracle import Oracle
from msbench.registry import DEFENSES, register_attack
from msbench.seeds import build_seeded, seeded
from msbench.training import Optimiser, Shuffled, fit, train_loop

LOG_FLOOR = 1e-6


class Restorer(nn.Module):
    """Maps a defended answer (probabilities or one-hot) to an estimate of the clean answer."""

    def __init__(self, num_classes: int, hidden: int = 128, layers: int = 2):
        super().__init__()
        widths = [2 * num_classes] + [hidden] * layers
        blocks: list[nn.Module] = []
        for a, b in zip(widths, widths[1:]):
            blocks += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*blocks, nn.Linear(widths[-1], num_classes))

    def forward(self, answers: torch.Tensor) -> torch.Tensor:
        features = torch.cat([answers, answers.clamp_min(LOG_FLOOR).log()], dim=1)
        return torch.softmax(self.net(features), dim=1)


def l1_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over rows of ||a - b||_1."""
    return (a - b).abs().sum(dim=1).mean().item()


def train_restorer(restorer: Restorer, defended: torch.Tensor, clean: torch.Tensor, epochs: int, lr: float,
                   batch_size: int, generator: torch.Generator, permute: bool = True) -> Restorer:
    """Fit R in place, minimising mean ||R(d) - c||_1 over the shadow pairs (Adam, mini-batches
    shuffled by ``generator``).

    With ``permute``, each batch's pairs have their classes relabelled by one random permutation
    (the same for d and c): the defense treats classes alike over its random secrets, and a
    restorer that keyed on class identity would learn the shadow draws' secrets instead."""
    optimiser = Optimiser.adam(restorer.parameters(), lr, desc="recovery restorer")

    def step(index: torch.Tensor) -> dict[str, torch.Tensor]:
        d, c = defended[index], clean[index]
        if permute:
            classes = torch.randperm(d.shape[1], generator=generator)
            d, c = d[:, classes], c[:, classes]
        loss = (restorer(d) - c).abs().sum(dim=1).mean()
        optimiser.step_on(loss)
        return {"loss": loss.detach()}

    train_loop(step, Shuffled(len(clean), batch_size, generator), epochs, [restorer], [optimiser], "recovery restorer")
    return restorer


@torch.no_grad()
def answer(module: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 512) -> torch.Tensor:
    """A module's outputs over uint8 images, on the CPU."""
    return torch.cat([module(images[s:s + batch_size].to(device).float().div(255.0)).cpu()
                      for s in range(0, len(images), batch_size)])


@register_attack("recovery")
class Recovery(Attack):
    """Defense-aware recovery (D-DAE): a restorer trained on shadow pairs undoes the known output defense."""

    label = "D-DAE recovery"
    roles = ("surrogate",)

    @dataclass
    class Config:
        budget: int = 50000
        pairs: int | None = None  # unqueried images for shadow pairs; None: as many as the budget
        shadow_epochs: int | None = None  # the shadow victim's epochs; None: the clone recipe's
        shadow_draws: int = 4  # shadow defenses, each with its own random secrets (MAD's surrogate, AM's F^)
        hidden: int = 128  # restorer width (two hidden layers)
        restorer_epochs: int = 30
        restorer_lr: float = 1e-3
        restorer_batch_size: int = 128
        permute: bool = True  # relabel classes at random in each restorer batch (see train_restorer)
        curve: list[int] = field(default_factory=list)

    @staticmethod
    def check_config(config: "Recovery.Config") -> tuple[str, str] | None:
        for key in ("budget", "hidden", "restorer_batch_size", "shadow_draws"):
            if getattr(config, key) < 1:
                return key, f"expected a positive integer, got {getattr(config, key)}"
        if config.pairs is not None and config.pairs < 10:
            return "pairs", f"expected at least 10 shadow pairs, got {config.pairs}"
        if config.restorer_epochs < 0 or (config.shadow_epochs is not None and config.shadow_epochs < 0):
            return "restorer_epochs", "expected non-negative epochs"
        if not config.restorer_lr > 0:
            return "restorer_lr", f"expected a positive learning rate, got {config.restorer_lr}"
        return None

    def __init__(self, config: Any | None = None):
        super().__init__(config)
        self.restorer: Restorer | None = None  # kept after run, for inspection and tests
        self.shadow_defended: nn.Module | None = None

    def run(self, oracle: Oracle, ctx: AttackContext) -> nn.Module:
        config = self.config
        notes = ctx.notes
        pool = ctx.query_data()
        budget = min(config.budget, len(pool), oracle.remaining)
        if budget < config.budget:
            notes["budget_capped"] = (f"surrogate set has {len(pool)} images or the oracle {oracle.remaining} "
                                      f"queries; used {budget}")
        order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(ctx.seed_for("recovery.queries")))
        queries = pool.images[order[:budget]]
        answers = oracle_targets(oracle, queries, ctx.device)

        outputs = [name for name in ctx.defense.split("+") if name and issubclass(DEFENSES.get(name), OutputDefense)]
        targets = answers
        if not outputs:
            notes["recovery"] = (f"no output defense in '{ctx.defense or 'unknown'}' to restore: trained on the raw "
                                 "answers (KnockoffNets)")
        else:
            rest = order[budget:]
            pairs = min(config.pairs or budget, len(rest) // 2)
            if pairs < 10:
                raise ValueError(f"recovery: the surrogate set has {len(pool)} images, too few for shadow pairs beyond "
                                 f"{budget} queries")
            pair_images, ood_images = pool.images[rest[:pairs]], pool.images[rest[pairs:2 * pairs]]
            restored = self.restore(answers, queries, pair_images, ood_images, outputs, oracle.label_mode, ctx)
            if restored is not None:
                targets = restored
        targets = training_targets(targets, oracle.label_mode)
        for size in sorted(s for s in config.curve if s < budget):
            clone = fit(ctx.new_clone(), queries[:size], targets[:size], ctx.recipe, device=ctx.device,
                        seed=ctx.seed_for("recovery.train"), desc=f"recovery clone @{size}")
            ctx.report(size, clone)
        clone = fit(ctx.new_clone(), queries, targets, ctx.recipe, device=ctx.device,
                    seed=ctx.seed_for("recovery.train"),
                    desc=f"recovery clone ({oracle.label_mode})")
        ctx.report(oracle.queries, clone)
        return clone

    def shadow_victim(self, queries: torch.Tensor, labels: torch.Tensor, ctx: AttackContext) -> nn.Module:
        """softmax(S): the attacker's stand-in for the victim's base, trained on its answered queries' top-1."""
        epochs = ctx.recipe.epochs if self.config.shadow_epochs is None else self.config.shadow_epochs
        model = ctx.new_clone("recovery.shadow")  # not the clone's initialisation
        fit(model, queries, labels, ctx.recipe.with_(epochs=epochs), device=ctx.device,
            seed=ctx.seed_for("recovery.shadow.train"),
            desc="recovery shadow victim")
        clean = Softmax(model).eval()
        for parameter in clean.parameters():
            parameter.requires_grad_(False)
        return clean

    def shadow_defense(self, clean: nn.Module, queries: torch.Tensor, labels: torch.Tensor, ood_images: torch.Tensor,
                       outputs: list[str], draw: int, ctx: AttackContext) -> nn.Module:
        """The chain's output defenses built by their plugins around the shadow victim, with the
        deployed settings and the attacker's own seed for this draw (a fresh MAD surrogate, AM
        misinformation model...): the defender's secrets are unknown, so the restorer learns over several.

        The plugins draw their streams from the draw's seed (``vctx.seed_for``) as the runner's
        victims do from the cell's, and run under the same seeded, forked global generators."""
        seed = ctx.seed_for(f"recovery.shadow_defense.draw{draw}")
        shape = tuple(queries.shape[1:])
        spec = DatasetSpec("attacker-shadow", shape, ctx.num_classes, (0.0,) * shape[0], (1.0,) * shape[0],
                           load=lambda root, split: None)
        train = ImageData(queries, labels, "attacker queries")
        ood = ImageData(ood_images, torch.zeros(len(ood_images), dtype=torch.long), "attacker surrogate")
        vctx = VictimContext(spec, "shadow", train, ImageData(queries[:0], labels[:0]), ctx.recipe, ctx.device, seed,
                             {"ood": lambda: ood}, ctx.make_clone, "none")
        defended: nn.Module = clean
        for name in outputs:
            plugin = DEFENSES.get(name)
            settings = ctx.defense_config.get(name, {})
            defense = plugin(plugin.Config(**settings))
            with seeded(vctx.seed_for(f"{name}.build")):
                defended = defense.build(defended, vctx).to(ctx.device)
            with seeded(vctx.seed_for(f"{name}.fit")):
                defense.fit(defended, vctx)
            if defense.tunable in settings:
                defense.tune(defended, settings[defense.tunable])
            defended.eval()
            for parameter in defended.parameters():
                parameter.requires_grad_(False)
        return defended

    def restore(self, answers: torch.Tensor, queries: torch.Tensor, pair_images: torch.Tensor, ood_images: torch.Tensor,
                outputs: list[str], label_mode: str, ctx: AttackContext) -> torch.Tensor | None:
        """Restored answers, or None where the restorer does not help on held-out shadow pairs."""
        config, notes = self.config, ctx.notes
        labels = answers.argmax(dim=1)
        clean_model = self.shadow_victim(queries, labels, ctx)
        clean_one = answer(clean_model, pair_images, ctx.device)
        held = max(1, len(clean_one) // 10)  # held-out images, in every draw
        parts = []
        for draw in range(config.shadow_draws):
            defended_model = self.shadow_defense(clean_model, queries, labels, ood_images, outputs, draw, ctx)
            parts.append(answer(defended_model, pair_images, ctx.device))
        self.shadow_defended = defended_model
        defended = torch.stack(parts)  # (draws, pairs, K)
        if label_mode == "hard":
            defended = F.one_hot(defended.argmax(dim=2), ctx.num_classes).to(clean_one.dtype)
        clean = clean_one.expand_as(defended)
        defended = torch.cat([defended[:, :held].flatten(0, 1), defended[:, held:].flatten(0, 1)])
        clean = torch.cat([clean[:, :held].flatten(0, 1), clean[:, held:].flatten(0, 1)])
        held *= config.shadow_draws
        restorer = build_seeded(lambda: Restorer(clean.shape[1], config.hidden), ctx.seed_for("recovery.restorer"))
        generator = torch.Generator().manual_seed(ctx.seed_for("recovery.restorer.train"))
        restorer = train_restorer(restorer, defended[held:], clean[held:], config.restorer_epochs, config.restorer_lr,
                                  config.restorer_batch_size, generator, config.permute)
        self.restorer = restorer
        with torch.no_grad():
            before, after = (l1_distance(defended[:held], clean[:held]),
                             l1_distance(restorer(defended[:held]), clean[:held]))
        notes["recovery"] = (f"shadow {'+'.join(outputs)}: {config.shadow_draws} draws x {len(clean_one)} pairs; "
                             f"held-out L1 to clean: defended {before:.3f}, restored {after:.3f}")
        if after >= before:
            notes["recovery"] += "; restorer does not help: trained on the raw answers"
            return None
        with torch.no_grad():
            return restorer(answers)
