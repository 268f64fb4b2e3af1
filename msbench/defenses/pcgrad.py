"""PCGrad (Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020) over flat gradients.

Each objective's gradient g_i is projected onto the normal plane of every other gradient g_j it
conflicts with (g_i^PC . g_j < 0), visiting the others in a random order:

    g_i^PC <- g_i^PC - (g_i^PC . g_j) / ||g_j||^2 * g_j

The projections always use the *original* g_j, and the divisor is the squared norm of the
gradient projected onto (the InI paper's Eq. 10 writes ||g_i||^2, a typo). The projected
gradients are then merged:

- ``merge="sum"``, ``self_projection=False``: the PCGrad paper's algorithm (InI paper form);
- ``merge="mean"``, ``self_projection=True``: the widely reused public PyTorch PCGrad that the
  official InI code calls: every gradient is also visited against itself in the shuffled loop,
  and the merge is the mean over parameters every objective reaches (``reached``) and the sum
  over the rest (that code takes the mean whatever reduction is asked for).

``pcgrad`` does the projections in coefficient space: every g_i^PC is a linear combination of the
original gradients, so the K x K Gram matrix carries every dot product the loop needs, and the
P-sized vectors are touched twice (one Gram product, one final combination) instead of once per
pair. ``pcgrad_reference`` is the literal vector loop; the tests check the two agree.
"""
from __future__ import annotations

from typing import Sequence

import torch

MERGES = ("sum", "mean")


def draw_orders(count: int, generator: torch.Generator | None = None,
                self_projection: bool = False) -> list[list[int]]:
    """For each gradient i, the random order in which it visits the others (and itself if asked)."""
    orders = []
    for i in range(count):
        order = torch.randperm(count, generator=generator).tolist()
        orders.append(order if self_projection else [j for j in order if j != i])
    return orders


def _merge(projected: torch.Tensor, merge: str, reached: Sequence[torch.Tensor] | None) -> torch.Tensor:
    """Combine the K projected gradients (K, P) into one update direction (P,)."""
    total = projected.sum(dim=0)
    if merge == "sum":
        return total
    if reached is None:
        return total / len(projected)
    shared = torch.stack([r.bool() for r in reached]).all(dim=0)
    return torch.where(shared, total / len(projected), total)


def _check(grads: Sequence[torch.Tensor], orders: Sequence[Sequence[int]] | None, merge: str) -> None:
    if merge not in MERGES:
        raise ValueError(f"unknown PCGrad merge '{merge}'; expected one of {MERGES}")
    if not grads:
        raise ValueError("PCGrad needs at least one gradient")
    if any(g.dim() != 1 or g.shape != grads[0].shape for g in grads):
        raise ValueError("PCGrad takes flat gradient vectors of one length")
    if orders is not None and len(orders) != len(grads):
        raise ValueError(f"{len(orders)} orders for {len(grads)} gradients")


def pcgrad(grads: Sequence[torch.Tensor], generator: torch.Generator | None = None, *, merge: str = "sum",
           self_projection: bool = False, reached: Sequence[torch.Tensor] | None = None,
           orders: Sequence[Sequence[int]] | None = None) -> torch.Tensor:
    """The PCGrad update for flat gradients ``grads`` (each (P,)).

    ``generator`` seeds the random visiting orders; ``orders`` fixes them instead (order[i] lists
    the indices gradient i is projected against, in turn). ``reached[i]`` is a boolean (P,) mask of
    the parameters objective i reaches; it only matters for ``merge="mean"``.
    """
    _check(grads, orders, merge)
    orders = orders if orders is not None else draw_orders(len(grads), generator, self_projection)
    stacked = torch.stack(list(grads))
    # float64 products, one device sync for all of them: in float32 the squared norm of a tiny
    # gradient (entries ~1e-23, as a weighted-down objective gives) underflows to 0 while its dot
    # with a larger one does not, and the projection would divide by zero
    wide = stacked.double()
    gram = (wide @ wide.T).cpu()
    count = len(grads)
    coefficients = torch.eye(count, dtype=torch.float64)
    for i in range(count):
        for j in orders[i]:
            dot = float(coefficients[i] @ gram[:, j])
            if dot < 0 and gram[j, j] > 0:
                coefficients[i, j] -= dot / float(gram[j, j])
    weights = coefficients.to(device=stacked.device, dtype=stacked.dtype)
    if merge == "sum":  # no (K, P) intermediate
        return weights.sum(dim=0) @ stacked
    return _merge(weights @ stacked, merge, reached)


def pcgrad_reference(grads: Sequence[torch.Tensor], generator: torch.Generator | None = None, *, merge: str = "sum",
                     self_projection: bool = False, reached: Sequence[torch.Tensor] | None = None,
                     orders: Sequence[Sequence[int]] | None = None) -> torch.Tensor:
    """PCGrad exactly as the algorithm reads, one vector projection at a time (the test oracle)."""
    _check(grads, orders, merge)
    orders = orders if orders is not None else draw_orders(len(grads), generator, self_projection)
    projected, wide = [], [g.double() for g in grads]  # float64, as pcgrad: a tiny gradient's norm must not underflow
    for i, g in enumerate(wide):
        g_pc = g.clone()
        for j in orders[i]:
            dot = torch.dot(g_pc, wide[j])
            if dot < 0:
                g_pc = g_pc - dot / wide[j].norm() ** 2 * wide[j]
        projected.append(g_pc.to(grads[i].dtype))
    return _merge(torch.stack(projected), merge, reached)
