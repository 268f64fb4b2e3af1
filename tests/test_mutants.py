"""Tests that each kill a named mutant the rest of the suite let survive.

Each test states the behaviour the code documents, so it fails when that one line is broken:

- ``oracle.py``: the clamp of queries to [0, 1] removed -> ``test_out_of_range_queries_are_answered_as_their_clamped_version``;
- ``defenses/am.py``: OE's weight ``lambda_oe`` replaced by 1.0 (in the loss or where ``fit`` passes it)
  -> ``test_outlier_exposure_weight_scales_the_outlier_term`` and ``test_oe_fit_trains_with_the_configured_weight``;
- ``defenses/ini.py``: the update-norm clip made a no-op (``clamp_min`` -> ``clamp_max``)
  -> ``test_ini_update_norm_is_clipped_to_max_grad_norm``;
- ``report/stats.py``: the collapse boundary (``<=`` -> ``<``), which decides bold, dagger and rank
  -> ``test_a_drop_of_exactly_the_tolerance_is_within``.
"""
from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from msbench.defenses import am
from msbench.defenses.ini import InI
from msbench.oracle import Oracle
from msbench.report.stats import benign_check, collapsed_victims
from msbench.training import Optimiser, Recipe

pytestmark = pytest.mark.usefixtures("one_thread")


# -- oracle: queries outside [0, 1] ------------------------------------------------------------

def test_out_of_range_queries_are_answered_as_their_clamped_version():
    """The oracle's contract (``Oracle.__call__``): images in [0, 1], values outside clamped. The
    victim never sees an out-of-range pixel, so an attack cannot probe it outside its domain."""
    seen = []

    def victim(x: torch.Tensor) -> torch.Tensor:
        seen.append(x)
        return torch.softmax(torch.stack([x.sum(dim=(1, 2, 3)), -x.sum(dim=(1, 2, 3))], dim=1), dim=1)

    x = torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.0, 1.5, 7.0]).reshape(1, 1, 1, 7)
    oracle = Oracle(victim, "soft", budget=2, num_classes=2)
    answer = oracle(x)
    assert float(seen[0].min()) >= 0.0 and float(seen[0].max()) <= 1.0
    torch.testing.assert_close(answer, oracle(x.clamp(0.0, 1.0)))


# -- AM: the outlier-exposure weight ------------------------------------------------------------

def _oe_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 4, generator=g), torch.randint(0, 4, (6,), generator=g), torch.randn(5, 4, generator=g)


def test_outlier_exposure_weight_scales_the_outlier_term():
    """loss(w) = CE(F(x_in), y) + w * mean over outliers of -mean_k log p_k: the weight multiplies
    exactly the outlier term, by hand on a fixed batch."""
    logits_in, labels, logits_out = _oe_batch()
    ce = F.cross_entropy(logits_in, labels)
    uniform_ce = -F.log_softmax(logits_out, dim=1).mean()
    for weight in (0.0, 0.5, 3.0):
        torch.testing.assert_close(am.outlier_exposure_loss(logits_in, labels, logits_out, weight), ce + weight * uniform_ce)


def test_oe_fit_trains_with_the_configured_weight(monkeypatch):
    """OE's ``fit`` hands the training loop the loss at the suite's ``lambda_oe``, not the default 1.0."""
    captured = {}
    monkeypatch.setattr(am, "train_with_outliers", lambda model, data, targets, outliers, outlier_targets, loss, *rest:
                        captured.setdefault("loss", loss))
    ctx = SimpleNamespace(train=SimpleNamespace(labels=None), role=lambda name: None, recipe=Recipe(),
                          spec=SimpleNamespace(name="x"), arch="a")
    am.OutlierExposure(am.OutlierExposure.Config(lambda_oe=0.25)).fit(SimpleNamespace(model=None), ctx)
    logits_in, labels, logits_out = _oe_batch()
    torch.testing.assert_close(captured["loss"](logits_in, labels, logits_out, None),
                               am.outlier_exposure_loss(logits_in, labels, logits_out, 0.25))


# -- InI: the clipped update ---------------------------------------------------------------------

def test_ini_update_norm_is_clipped_to_max_grad_norm():
    """With ``max_grad_norm`` set, the step moves the victim's parameters along the PCGrad
    direction by at most lr * max_grad_norm (the paper form diverges unclipped, see
    ``InI.contract_settings``); a direction already shorter is left as it is."""
    def tiny() -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3))

    g = torch.Generator().manual_seed(3)
    x, y, x_ood = torch.rand(8, 1, 4, 4, generator=g), torch.randint(0, 3, (8,), generator=g), torch.rand(8, 1, 4, 4, generator=g)
    recipe = Recipe(lr=1.0, momentum=0.0, weight_decay=0.0, schedule="constant")

    def moved(max_grad_norm: float | None) -> tuple[float, float]:
        torch.manual_seed(0)
        victim, clone = tiny(), tiny().eval()
        defense = InI(InI.Config(max_grad_norm=max_grad_norm))
        params = list(victim.parameters())
        raw = defense.update_direction(defense.objectives(victim, clone, x, y, x_ood), params,
                                       torch.Generator().manual_seed(1)).norm().item()
        before = torch.cat([p.detach().reshape(-1).clone() for p in params])
        defense.step(victim, clone, Optimiser.sgd(params, recipe, "ini"), x, y, x_ood, torch.Generator().manual_seed(1))
        return raw, (torch.cat([p.detach().reshape(-1) for p in params]) - before).norm().item()

    raw, unclipped = moved(None)
    assert unclipped == pytest.approx(raw, rel=1e-4)
    cap = raw / 4
    assert moved(cap)[1] == pytest.approx(cap, rel=1e-4)  # clipped to the bound
    assert moved(raw * 4)[1] == pytest.approx(raw, rel=1e-4)  # under the bound: unchanged


# -- report: the collapse boundary ---------------------------------------------------------------

def _benign(vanilla: float, defense: float) -> pd.DataFrame:
    rows = [{"dataset": "mnist", "arch": "smallcnn", "defense": name, "attack": "knockoff", "label_mode": "soft",
             "seed": 0, "status": "ok", "benign_acc": acc} for name, acc in (("vanilla", vanilla), ("mad", defense))]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("vanilla, defense, tolerance, within", [
    (99.5, 98.5, 1.0, True),  # a drop of exactly the tolerance (exact in binary) is within
    (99.3, 98.3, 1.0, True),  # the same drop in decimals, 1.0000000000000142 in floats
    (99.5, 98.5, 0.999, False),
    (99.5, 99.5, 0.0, True),  # no drop at zero tolerance
    (99.5, 98.49, 1.0, False),
])
def test_a_drop_of_exactly_the_tolerance_is_within(vanilla, defense, tolerance, within):
    """``benign_check``: a defense at most ``tolerance`` points below Vanilla is within (it may be
    bolded and ranked); further below, it collapsed (marked with a dagger). The boundary is
    inclusive, as ``run.match_benign`` matches victims with ``<=`` on the validation split."""
    results = _benign(vanilla, defense)
    check = benign_check(results, tolerance).set_index("defense")
    assert check.loc["mad", "within"] is within
    assert (("mnist", "smallcnn", "mad") in collapsed_victims(results, tolerance)) is (not within)
