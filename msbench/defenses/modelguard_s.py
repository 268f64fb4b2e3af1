"""ModelGuard-S (Tang et al., USENIX Security 2024, ``defenses/victim/quantize.py``): answers
quantised to a small codebook of probability vectors, each answer within epsilon (L1) of the truth.

What the authors' released code does (Yoruko-Tang/ModelGuard: ``scripts/run_*.py`` and the
README's commands pass ``--quantize_args 'epsilon:1.0;ydist:l1;optim:0;frozen:0;
ordered_quantization:1'`` to ``incremental_kmeans``): no training set (no ``trainingset_name``),
so every run starts with empty codebooks and they grow from the queries. A query's top-1 class
with no centroid yet gets the query's answer as its first centroid, answered unchanged; after
that the query is answered with the first centroid of its class within epsilon, and where none is
the answer itself becomes a new centroid and is answered unchanged. The test-set evaluation
(``eval.py``) and the attack (``transfer.py``, ``jacobian.py``) run as separate processes, each
growing its own codebook. The optional ``trainingset_name`` path (not used by the scripts) fills
per-class buffers with the victim's answers on that dataset's *test* split (``train=False``),
grouped by true label, and clusters each by the incremental k-means below; ``kmean`` re-clusters
the query buffer and acts only without ordered quantisation.

What msbench does instead: a fixed codebook per top-1 class, built before any query from the base
victim's answers on the victim's training split, grouped by their top-1 class: start from the
group's mean; run k-means (L1 assignment, mean update, as the authors' ``k_means``) to
convergence; while some answer of the group is farther than epsilon from its nearest centroid,
add the farthest answer as a centroid and run k-means again; empty clusters are dropped. A
centroid is a mean of vectors sharing a top-1 class, so it has that top-1 too. The growth stops at
``max_centroids`` per class (a bound on cost that the authors' code does not have; with it some
training answers may stay farther than epsilon). msbench does not grow the codebook from queries:
a victim's buffers are checked unchanged after every attack, one cached victim serves many cells,
and answers that depended on earlier queries would depend on the order cells run in.

Answer (``ordered_quantization`` with ``top1_preserve``, the authors' defaults): the first
centroid, in codebook order, of the query's top-1 class within epsilon of y. Where none is within
epsilon (the authors' code would add y as a centroid and answer it unchanged), msbench answers y
moved by epsilon towards the nearest centroid of its class (still within the ball and keeping the
top-1). A class with no training answer is answered unchanged.

The codebook depends on epsilon: it is built, for each epsilon asked, from the stored training
answers (a buffer saved with the victim) at the first query.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from msbench.defenses.base import L1_GRID, OutputDefense, VictimContext, renormalise
from msbench.defenses.mad import mix
from msbench.registry import register_defense

KMEANS_ITERATIONS = 20  # Lloyd steps per k-means run, at most (the authors: 100; see the module docstring)
KMEANS_TOLERANCE = 1e-3  # stop when no centroid moves farther (L2), the authors' tolerance


def l1_distances(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(n, m) L1 distances."""
    return (points[:, None, :] - centroids[None, :, :]).abs().sum(dim=2)


def k_means(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """L1-assignment, mean-update k-means from the given centroids; empty clusters dropped."""
    for _ in range(KMEANS_ITERATIONS):
        assign = l1_distances(points, centroids).argmin(dim=1)
        counts = torch.bincount(assign, minlength=len(centroids)).to(points.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assign, points)
        moved = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centroids)
        shift = (moved - centroids).norm(dim=1).max()
        centroids = moved
        if shift < KMEANS_TOLERANCE:
            break
    assign = l1_distances(points, centroids).argmin(dim=1)
    return centroids[torch.unique(assign)]


def class_codebook(points: torch.Tensor, epsilon: float, max_centroids: int) -> torch.Tensor:
    """Incremental k-means: grow the codebook until every point is within epsilon (or the cap)."""
    centroids = k_means(points, points.mean(dim=0, keepdim=True))
    while len(centroids) < max_centroids:
        nearest = l1_distances(points, centroids).min(dim=1).values
        if nearest.max() <= epsilon:
            break
        centroids = k_means(points, torch.cat([centroids, points[nearest.argmax()][None]]))
    return centroids


def build_codebooks(answers: torch.Tensor, epsilon: float, max_centroids: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Codebooks of every top-1 class, padded: centroids (K, M, K) and a validity mask (K, M)."""
    num_classes = answers.shape[1]
    top1 = answers.argmax(dim=1)
    books = [class_codebook(answers[top1 == k], epsilon, max_centroids) if (top1 == k).any()
             else answers.new_zeros((0, num_classes)) for k in range(num_classes)]
    size = max(1, max(len(b) for b in books))
    centroids = answers.new_zeros((num_classes, size, num_classes))
    valid = torch.zeros((num_classes, size), dtype=torch.bool, device=answers.device)
    for k, book in enumerate(books):
        centroids[k, :len(book)] = book
        valid[k, :len(book)] = True
    return centroids, valid


def quantise(y: torch.Tensor, centroids: torch.Tensor, valid: torch.Tensor, epsilon: float) -> torch.Tensor:
    """First centroid of y's top-1 class within epsilon; else y moved epsilon towards the nearest one."""
    y64 = y.double()
    top1 = y64.argmax(dim=1)
    books, mask = centroids[top1], valid[top1]  # (N, M, K), (N, M)
    distance = (books - y64[:, None, :]).abs().sum(dim=2).masked_fill(~mask, math.inf)
    within = distance <= epsilon
    first = within.float().argmax(dim=1)  # index of the first True (0 when none)
    nearest = distance.argmin(dim=1)
    rows = torch.arange(len(y), device=y.device)
    quantised = books[rows, first]
    moved = mix(y64, books[rows, nearest], epsilon)
    answer = torch.where(within.any(dim=1, keepdim=True), quantised, moved)
    answer = torch.where(mask.any(dim=1, keepdim=True), answer, y64)
    return renormalise(answer).to(y.dtype)


class ModelGuardSVictim(nn.Module):
    fingerprint_exempt = ("_codebooks",)  # a memo of build_codebooks(training_answers, epsilon), both fingerprinted

    def __init__(self, base: nn.Module, epsilon: float, max_centroids: int, num_classes: int):
        super().__init__()
        self.base, self.epsilon, self.max_centroids = base, epsilon, max_centroids
        self.register_buffer("training_answers", torch.zeros((0, num_classes), dtype=torch.float64))
        self._codebooks: dict[float, tuple[torch.Tensor, torch.Tensor]] = {}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """A saved victim's training answers have their own length: make room before loading them."""
        key = prefix + "training_answers"
        if key in state_dict:
            self.training_answers = torch.empty_like(state_dict[key])
            self._codebooks = {}
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def codebooks(self) -> tuple[torch.Tensor, torch.Tensor]:
        key = float(self.epsilon)
        if key not in self._codebooks:
            self._codebooks[key] = build_codebooks(self.training_answers, key, self.max_centroids)
        return self._codebooks[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if len(self.training_answers) == 0:
            raise RuntimeError("modelguard_s: the codebook's training answers are missing (fit was not run)")
        return quantise(y, *self.codebooks(), self.epsilon)


@register_defense("modelguard_s")
class ModelGuardS(OutputDefense):
    """ModelGuard-S (Tang et al. 2024): answers quantised to a per-class codebook within an L1 ball."""

    label = "ModelGuard-S"
    tunable = "epsilon"
    tunable_grid = L1_GRID  # strong to weak
    cost_model = "M_f + O(M K)"

    @dataclass
    class Config:
        epsilon: float = 1.0  # L1 budget; benign matching tunes it
        max_centroids: int = 32  # codebook size per class, at most

    @staticmethod
    def check_config(config: "ModelGuardS.Config") -> tuple[str, str] | None:
        if not (math.isfinite(config.epsilon) and 0 <= config.epsilon <= 2):
            return "epsilon", f"expected an L1 budget in [0, 2], got {config.epsilon}"
        if (isinstance(config.max_centroids, bool) or not isinstance(config.max_centroids, int)
                or config.max_centroids < 1):
            return "max_centroids", f"expected a positive integer, got {config.max_centroids!r}"
        return None

    def build(self, base: nn.Module, ctx: VictimContext) -> nn.Module:
        return ModelGuardSVictim(base, self.config.epsilon, self.config.max_centroids, ctx.spec.num_classes)

    def fit(self, defended: nn.Module, ctx: VictimContext) -> None:
        """Store the base victim's answers on the training split: the data every codebook is built from."""
        answers = []
        with torch.no_grad():
            for x, _ in ctx.train.batches(512, ctx.device):
                answers.append(defended.base(x).double())
        defended.training_answers = torch.cat(answers)
