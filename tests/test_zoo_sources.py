"""The zoo's settings that follow the defenses' official code where msbench's default does not, each
against a hand computation of what that code does: DCP's odds clamp (classes at or above 0.5 left
unperturbed), GRAD^2's distilled surrogate (trained on the defender's own data, nothing the attacker
sends), and top-k's renormalisation beside its sources' truncation. Numbers marked "by hand" were
worked out on paper."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from msbench.config import SuiteError
from msbench.data import DatasetSpec, ImageData
from msbench.defenses import VictimContext, load_victim, save_victim
from msbench.defenses.base import Softmax
from msbench.defenses.dcp import DCP, DCPVictim, dcp, dcp_perturbation
from msbench.defenses.grad2 import GRAD2
from msbench.defenses.mad import random_surrogate
from msbench.defenses.reverse_sigmoid import reverse_sigmoid_perturbation
from msbench.defenses.topk import top_k
from msbench.fingerprint import fingerprint
from msbench.models import build_model, last_linear
from msbench.plugin_config import plugin_config
from msbench.registry import DEFENSES
from msbench.training import Recipe, fit

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (1, 16, 16)
t = lambda *rows: torch.tensor(rows, dtype=torch.float64)  # noqa: E731


def suite_error(name: str, table: dict) -> str:
    with pytest.raises(SuiteError) as error:
        plugin_config(DEFENSES, name, table, "suite.toml", f"defenses.{name}")
    return str(error.value)


# -- DCP: the authors' odds clamp ------------------------------------------------------------------

def test_dcp_odds_clamp_leaves_classes_at_or_above_half_unperturbed_by_hand():
    # gamma = 1: sigmoid(log odds) = y below 1/2, so r_k = beta (y_k - 1/2) there, and r = 0 at y >= 1/2.
    # y = (0.6, 0.3, 0.1), beta = 0.9 (gate open: alpha = 1): y - r = (0.6, 0.3 + 0.18, 0.1 + 0.36), by hand
    y = t([0.6, 0.3, 0.1])
    r = dcp_perturbation(y, beta=0.9, gamma=1.0, odds_clamp=True)
    assert r[0, 0].item() == 0.0  # exactly: the top class is not touched before normalising
    assert torch.allclose(r, t([0.0, -0.18, -0.36]), atol=1e-12)
    assert torch.allclose(dcp(y, 0.9, 1.0, 1000.0, odds_clamp=True), t([0.6, 0.48, 0.46]) / 1.54, atol=1e-12)
    # the default (true logit) lowers the top class too: 0.6 - 0.9 (0.6 - 0.5) = 0.51, by hand
    assert torch.allclose(dcp(y, 0.9, 1.0, 1000.0), t([0.51, 0.48, 0.46]) / 1.45, atol=1e-12)
    # exactly 1/2 (odds 1) and a saturated class (odds inf) are unperturbed as well
    assert torch.equal(dcp_perturbation(t([0.5, 0.5, 0.0]), 0.9, 1.0, True)[0, :2], t([0.0, 0.0])[0])
    assert dcp_perturbation(t([1.0, 0.0]), 0.9, 0.2, True)[0, 0].item() == 0.0


def test_dcp_odds_clamp_against_the_formula_at_the_codes_gamma():
    y = torch.softmax(3 * torch.randn(64, 10, generator=torch.Generator().manual_seed(0)), dim=1).double()
    beta, gamma = 0.7, 0.2
    odds = (y / (1 - y)).clamp(1e-12, 1.0)
    expected_r = beta * (1 / (1 + odds ** -gamma) - 0.5)  # sigmoid(gamma log odds) = 1 / (1 + odds^-gamma)
    r = dcp_perturbation(y, beta, gamma, odds_clamp=True)
    assert torch.allclose(r, expected_r, atol=1e-12)
    assert (r[y >= 0.5] == 0).all() and (r[y < 0.5] < 0).all()
    below = y < 0.5  # below 1/2 the clamp changes nothing: the reverse sigmoid's own r
    assert torch.allclose(r[below], reverse_sigmoid_perturbation(y, beta, gamma)[below], atol=1e-12)
    alpha = 1 / (1 + torch.exp(1000 * (y.amax(dim=1, keepdim=True) - beta)))
    expected = (y - alpha * expected_r) / (y - alpha * expected_r).sum(dim=1, keepdim=True)
    assert torch.allclose(dcp(y, beta, gamma, 1000.0, odds_clamp=True), expected, atol=1e-12)
    assert not torch.allclose(dcp(y, beta, gamma, 1000.0), expected, atol=1e-6)  # the default is the other map


def test_dcp_setting_reaches_the_module_and_bad_values_are_one_line_errors():
    assert DCP.Config().odds_clamp is False and DCP.Config().gamma == 0.1  # the documented defaults
    base = Softmax(build_model("smallcnn", SHAPE, 10, (0.5,), (0.25,))).eval()
    module = DCP(DCP.Config(odds_clamp=True, gamma=0.2, beta=1.0)).build(base, None)
    assert isinstance(module, DCPVictim) and module.odds_clamp is True
    x = torch.rand(16, *SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(module(x), dcp(base(x), 1.0, 0.2, 1000.0, odds_clamp=True))
    with pytest.raises(ValueError, match="dcp: odds_clamp: expected true or false"):
        DCP(DCP.Config(odds_clamp="yes"))
    assert suite_error("dcp", {"odds_clamp": "yes"}) == "suite.toml: defenses.dcp.odds_clamp: expected true or false, got 'yes'"


# -- GRAD^2: the distilled surrogate ---------------------------------------------------------------

def context(seed: int = 0) -> VictimContext:
    spec = DatasetSpec("synthetic", SHAPE, 10, (0.5,), (0.25,), lambda root, split: None)
    images = torch.randint(0, 256, (160, *SHAPE), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    held_out = torch.randint(0, 256, (40, *SHAPE), dtype=torch.uint8, generator=torch.Generator().manual_seed(6))
    return VictimContext(spec, "smallcnn", ImageData(images, torch.zeros(160, dtype=torch.long), "train"),
                         ImageData(held_out, torch.zeros(40, dtype=torch.long), "val"),
                         Recipe(epochs=1, batch_size=32),
                         torch.device("cpu"), seed, make_model=lambda: build_model("smallcnn", SHAPE, 10, spec.mean, spec.std))


def victim_base(ctx: VictimContext) -> torch.nn.Module:
    torch.manual_seed(1)
    base = Softmax(ctx.make_model()).eval()
    with torch.no_grad():
        last_linear(base).weight.mul_(15.0)  # peaked answers, as a trained victim's
    for parameter in base.parameters():
        parameter.requires_grad_(False)
    return base


def grad2(ctx: VictimContext, base: torch.nn.Module, **config) -> torch.nn.Module:
    defense = GRAD2(GRAD2.Config(**config))
    module = defense.build(base, ctx)
    torch.manual_seed(2)
    defense.fit(module, ctx)
    return module.eval()


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_grad2_random_surrogate_is_unchanged_by_fit(one_thread):
    ctx = context()
    module = grad2(ctx, victim_base(ctx))
    assert same_weights(module.surrogate, random_surrogate(ctx, "grad2.surrogate"))


def test_grad2_distilled_surrogate_is_the_victims_answers_on_the_training_split(one_thread):
    ctx = context()
    base = victim_base(ctx)
    module = grad2(ctx, base, surrogate="distilled", surrogate_epochs=2)
    # by hand: the same initialisation, trained with msbench.training.fit on (training images, base answers)
    expected = random_surrogate(ctx, "grad2.surrogate")
    for parameter in expected.parameters():
        parameter.requires_grad_(True)
    with torch.no_grad():
        answers = base(ctx.train.floats(slice(0, len(ctx.train)), "cpu"))
    torch.manual_seed(2)
    fit(expected, ctx.train.images, answers, ctx.recipe.with_(epochs=2), seed=ctx.seed_for("grad2.surrogate.train"))
    assert same_weights(module.surrogate, expected)
    assert not same_weights(module.surrogate, random_surrogate(ctx, "grad2.surrogate"))
    assert not module.surrogate.training and not any(p.requires_grad for p in module.surrogate.parameters())
    # it learned the victim: closer (KL) to the base's answers on the training images than the random one
    x = ctx.train.floats(slice(0, len(ctx.train)), "cpu")
    with torch.no_grad():
        y = base(x)
        kl = lambda s: (y * (y.clamp_min(1e-12).log() - torch.log_softmax(s(x), dim=1))).sum(dim=1).mean()  # noqa: E731
        assert kl(module.surrogate) < kl(random_surrogate(ctx, "grad2.surrogate"))


def test_grad2_distilled_surrogate_reads_no_query_and_does_not_change_while_answering(one_thread):
    ctx = context()
    base = victim_base(ctx)
    module = grad2(ctx, base, surrogate="distilled", surrogate_epochs=1)
    other_val = context()
    other_val.val = ImageData(torch.zeros(40, *SHAPE, dtype=torch.uint8), torch.zeros(40, dtype=torch.long), "val")
    assert same_weights(module.surrogate, grad2(other_val, base, surrogate="distilled", surrogate_epochs=1).surrogate)
    taken = fingerprint(module)
    queries = torch.rand(32, *SHAPE, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        first = module(queries)
        module(torch.rand(32, *SHAPE, generator=torch.Generator().manual_seed(10)))
        assert torch.equal(module(queries), first)  # no state carried from one query to the next
    assert fingerprint(module) == taken
    random_answers = grad2(ctx, base)(queries)
    assert not torch.allclose(first, random_answers, atol=1e-6)  # the surrogate decides the answers


def test_grad2_distilled_victim_saves_and_loads(tmp_path, one_thread):
    ctx = context()
    base = victim_base(ctx)
    module = grad2(ctx, base, surrogate="distilled", surrogate_epochs=1)
    x = torch.rand(16, *SHAPE, generator=torch.Generator().manual_seed(3))
    answers = module(x)
    save_victim(module, tmp_path / "v.pt", {})
    fresh = GRAD2(GRAD2.Config(surrogate="distilled", surrogate_epochs=1)).build(base, ctx)  # built, not fitted
    load_victim(fresh, tmp_path / "v.pt")
    assert torch.equal(fresh.eval()(x), answers)


def test_grad2_bad_surrogate_settings_are_one_line_errors():
    with pytest.raises(ValueError, match="grad2: surrogate: expected one of 'random', 'distilled'"):
        GRAD2(GRAD2.Config(surrogate="queries"))
    with pytest.raises(ValueError, match="grad2: surrogate_epochs: expected a positive number of epochs"):
        GRAD2(GRAD2.Config(surrogate="distilled", surrogate_epochs=0))
    assert suite_error("grad2", {"surrogate_epochs": 0}) == \
        "suite.toml: defenses.grad2.surrogate_epochs: expected a positive number of epochs, got 0"
    assert "defenses.grad2.surrogate" in suite_error("grad2", {"surrogate": "attacker"})


# -- top-k beside its sources ----------------------------------------------------------------------

def test_topk_renormalises_what_the_sources_truncation_keeps():
    y = t([0.5, 0.3, 0.15, 0.05])
    truncated = t([0.5, 0.3, 0.0, 0.0])  # MAD's / ModelGuard's truncate_output, k = 2: sums to 0.8
    assert torch.allclose(top_k(y, 2), truncated / 0.8, atol=1e-12)  # (0.625, 0.375, 0, 0), by hand
    # not ART's HighConfidence threshold rule: at its cutoff 0.25 it would keep 2 classes here, 1 below
    assert torch.count_nonzero(top_k(t([0.4, 0.2, 0.2, 0.2]), 2)) == 2


# -- the docs name every new setting ---------------------------------------------------------------

def test_the_new_settings_are_documented():
    methods = (ROOT / "docs" / "methods.md").read_text(encoding="utf-8")
    for name, text in (("odds_clamp", (ROOT / "msbench/defenses/dcp.py").read_text(encoding="utf-8")),
                       ("surrogate_epochs", (ROOT / "msbench/defenses/grad2.py").read_text(encoding="utf-8"))):
        assert name in methods and name in text
