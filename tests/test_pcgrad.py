"""PCGrad: known answers worked by hand, the official merge rule, and fast == reference."""
from __future__ import annotations

import pytest
import torch

from msbench.pcgrad import draw_orders, pcgrad, pcgrad_reference

IMPLEMENTATIONS = [pcgrad, pcgrad_reference]


@pytest.mark.parametrize("fn", IMPLEMENTATIONS)
def test_two_conflicting_gradients_lose_their_conflicting_components(fn):
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])  # g1 . g2 = -1
    # g1 - (-1 / ||g2||^2) g2 = (0.5, 0.5), orthogonal to g2; g2 - (-1 / ||g1||^2) g1 = (0, 1), orthogonal to g1.
    expected = torch.tensor([0.5, 0.5]) + torch.tensor([0.0, 1.0])
    merged = fn([g1, g2], torch.Generator().manual_seed(0))
    torch.testing.assert_close(merged, expected)
    # Eq. 10 as printed (dividing by ||g_i||^2 = 1 and 2) would give (g1 + g2) + (g2 + g1 / 2) instead.
    assert not torch.allclose(merged, (g1 + g2) + (g2 + g1 / 2))


@pytest.mark.parametrize("fn", IMPLEMENTATIONS)
def test_projection_against_a_tiny_gradient_is_scale_free_and_finite(fn):
    """A weighted-down objective's gradient may have entries near 1e-24, whose squared norm is 0 in
    float32: projecting g1 off it must still give (0.5, 0.5), as off (-1, 1), not a division by zero."""
    g1, tiny = torch.tensor([1.0, 0.0]), torch.tensor([-1e-24, 1e-24])
    merged = fn([g1, tiny], torch.Generator().manual_seed(0))
    assert torch.isfinite(merged).all()
    torch.testing.assert_close(merged, torch.tensor([0.5, 0.5]) + torch.tensor([0.0, 1e-24]))


@pytest.mark.parametrize("fn", IMPLEMENTATIONS)
def test_non_conflicting_gradients_are_summed_unchanged(fn):
    torch.manual_seed(1)
    base = torch.randn(50)
    grads = [base + 0.3 * torch.randn(50) for _ in range(4)]
    assert all(torch.dot(a, b) > 0 for a in grads for b in grads)
    torch.testing.assert_close(fn(grads, torch.Generator().manual_seed(0)), torch.stack(grads).sum(0))
    torch.testing.assert_close(fn(grads, torch.Generator().manual_seed(0), merge="mean", self_projection=True),
                               torch.stack(grads).mean(0))


@pytest.mark.parametrize("fn", IMPLEMENTATIONS)
def test_official_merge_means_shared_and_sums_unshared_parameters(fn):
    g1, g2 = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([-1.0, 1.0, 0.0])  # g2 does not reach parameter 2
    reached = [torch.tensor([True, True, True]), torch.tensor([True, True, False])]
    g1_pc = g1 + (1 / 2) * g2  # dot -1, ||g2||^2 = 2
    g2_pc = g2 + (1 / 5) * g1  # dot -1, ||g1||^2 = 5
    shared_mean = (g1_pc + g2_pc) / 2
    expected = torch.tensor([shared_mean[0], shared_mean[1], (g1_pc + g2_pc)[2]])
    merged = fn([g1, g2], torch.Generator().manual_seed(0), merge="mean", self_projection=True, reached=reached)
    torch.testing.assert_close(merged, expected)
    # Without masks every parameter counts as shared: the plain mean.
    torch.testing.assert_close(fn([g1, g2], merge="mean", self_projection=True), (g1_pc + g2_pc) / 2)


@pytest.mark.parametrize("fn", IMPLEMENTATIONS)
def test_self_projection_removes_a_conflict_with_the_own_original_gradient(fn):
    g1, g2, g3 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0]), torch.tensor([-3.0, -0.5])
    # g1 against g2: (0.5, 0.5); against g3 (dot -1.75, ||g3||^2 = 9.25): (0.5, 0.5) - (-1.75 / 9.25) g3 = (-2.5/37, 15/37),
    # which now conflicts with g1 itself; the official loop projects it once more, to (0, 15/37).
    without_self = torch.tensor([-2.5 / 37, 15 / 37])
    with_self = torch.tensor([0.0, 15 / 37])
    keep_others = [[], [], []]  # project only gradient 0, so the merge shows its projection alone
    grads = [g1, g2, g3]
    paper = fn(grads, orders=[[1, 2], *keep_others[1:]])
    official = fn(grads, merge="mean", self_projection=True, orders=[[1, 2, 0], *keep_others[1:]])
    torch.testing.assert_close(paper, without_self + g2 + g3)
    torch.testing.assert_close(official, (with_self + g2 + g3) / 3)


@pytest.mark.parametrize("merge,self_projection", [("sum", False), ("mean", True), ("mean", False)])
def test_fast_matches_reference_on_random_conflicts(merge, self_projection):
    torch.manual_seed(2)
    grads = [torch.randn(2000, dtype=torch.float64) for _ in range(5)]
    grads[1] = -grads[0] + 0.5 * grads[1]  # guarantee strong conflicts
    reached = [torch.rand(2000) < 0.9 for _ in grads]
    fast = pcgrad(grads, torch.Generator().manual_seed(7), merge=merge, self_projection=self_projection, reached=reached)
    slow = pcgrad_reference(grads, torch.Generator().manual_seed(7), merge=merge, self_projection=self_projection,
                            reached=reached)
    torch.testing.assert_close(fast, slow)
    assert not torch.allclose(fast, torch.stack(grads).sum(0) if merge == "sum" else torch.stack(grads).mean(0))


def test_random_order_follows_the_generator():
    orders_a = draw_orders(6, torch.Generator().manual_seed(3))
    orders_b = draw_orders(6, torch.Generator().manual_seed(3))
    assert orders_a == orders_b
    assert all(sorted(o) == [j for j in range(6) if j != i] for i, o in enumerate(orders_a))
    assert all(sorted(o) == list(range(6)) for o in draw_orders(6, torch.Generator().manual_seed(3), self_projection=True))
    assert len({tuple(o) for o in draw_orders(6, torch.Generator().manual_seed(4), self_projection=True)}) > 1


def test_unknown_merge_is_refused():
    with pytest.raises(ValueError, match="merge"):
        pcgrad([torch.ones(3)], merge="max")
