"""InI: its objectives do what the paper (and, as a variant, the official code) says."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical, kl_divergence

from msbench.data import DatasetSpec, ImageData
from msbench.defenses import Softmax, VictimContext
from msbench.defenses.ini import InI, clone_gradient, information_gain, isolation_loss
from msbench.pcgrad import pcgrad
from msbench.registry import DEFENSES
from msbench.training import Optimiser, Recipe

CLASSES = 5


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_cnn(dtype: torch.dtype = torch.float32) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 5 * 5, 16), nn.ReLU(), nn.Linear(16, CLASSES)).to(dtype)


def smooth_mlp() -> nn.Module:
    """Float64 and tanh: smooth, so central differences are accurate."""
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, CLASSES)).double()


def batch(seed: int, n: int = 64, dtype: torch.dtype = torch.float32, side: int = 12):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, side, side, generator=g, dtype=dtype)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    x_ood = torch.rand(n, 1, side, side, generator=g, dtype=dtype) ** 3
    return x, y, x_ood


def induction_loss(victim, clone, x_ood, beta):
    gain = information_gain(victim(x_ood), clone(x_ood))
    return gain + beta * clone_gradient(gain, list(clone.parameters())).norm()


def test_registered_and_answers_probabilities():
    assert DEFENSES.get("ini") is InI
    assert InI.roles == ("ood",)
    with pytest.raises(ValueError, match="variant"):
        InI(InI.Config(variant="paperr"))


def test_isolation_and_induction_losses_decrease_over_a_few_steps():
    torch.manual_seed(0)
    victim, clone = tiny_cnn(), tiny_cnn().eval()
    x, y, x_ood = batch(1)
    defense = InI()
    params = list(clone.parameters())
    iso_before = isolation_loss(victim(x), clone(x), y, params).item()
    ind_before = induction_loss(victim, clone, x_ood, defense.config.beta).item()
    optimiser = Optimiser.sgd(victim.parameters(), Recipe(lr=0.02))
    generator = torch.Generator().manual_seed(0)
    for _ in range(30):
        defense.step(victim, clone, optimiser, x, y, x_ood, generator)
    iso_after = isolation_loss(victim(x), clone(x), y, params).item()
    ind_after = induction_loss(victim, clone, x_ood, defense.config.beta).item()
    assert iso_after < iso_before - 0.2, (iso_before, iso_after)
    assert ind_after < ind_before, (ind_before, ind_after)
    assert all(p.grad is None for p in clone.parameters())  # the surrogate is never trained


def _finite_difference(loss_fn, weight: torch.Tensor, entries, eps: float = 1e-6) -> torch.Tensor:
    values = []
    with torch.no_grad():
        for index in entries:
            saved = weight[index].item()
            weight[index] = saved + eps
            plus = loss_fn().item()
            weight[index] = saved - eps
            minus = loss_fn().item()
            weight[index] = saved
            values.append((plus - minus) / (2 * eps))
    return torch.tensor(values, dtype=torch.float64)


@pytest.mark.parametrize("term", ["isolation", "isolation_reverse_kl", "grad_norm"])
def test_double_backward_gradient_matches_finite_differences(term):
    torch.manual_seed(3)
    victim, clone = smooth_mlp(), smooth_mlp()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(6, 12, generator=g, dtype=torch.float64)
    y = torch.randint(0, CLASSES, (6,), generator=g)
    params = list(clone.parameters())

    def loss():
        with torch.enable_grad():
            if term == "grad_norm":
                return clone_gradient(information_gain(victim(x), clone(x)), params, create_graph=True).norm()
            return isolation_loss(victim(x), clone(x), y, params, reverse=term == "isolation_reverse_kl")

    weight = victim[1].weight  # first layer: reached only through the victim's outputs
    analytic = torch.autograd.grad(loss(), weight)[0]
    entries = [(0, 0), (3, 5), (7, 11), (5, 2)]
    numeric = _finite_difference(loss, weight, entries)
    picked = torch.stack([analytic[i] for i in entries])
    assert picked.abs().max() > 1e-4  # the victim really is trained through the clone's gradient
    torch.testing.assert_close(picked, numeric, rtol=1e-5, atol=1e-8)


def test_official_variant_terms_match_a_direct_computation():
    torch.manual_seed(5)
    victim, clone = tiny_cnn(torch.float64), tiny_cnn(torch.float64).eval()
    x, y, x_ood = batch(6, n=16, dtype=torch.float64)
    config = InI.Config(variant="official")
    objectives = InI(config).objectives(victim, clone, x, y, x_ood)
    assert list(objectives) == ["benign", "ood_output", "isolation", "grad_norm"]
    params = list(clone.parameters())

    def flat_grad(loss):
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params, retain_graph=True)])

    # Reverse KL through torch.distributions, an independent implementation.
    v_id, c_id, v_ood, c_ood = victim(x), clone(x), victim(x_ood), clone(x_ood)
    reverse_id = kl_divergence(Categorical(logits=c_id), Categorical(logits=v_id)).mean()
    true_grad = flat_grad(F.nll_loss(torch.log_softmax(c_id, 1), y))
    attack_grad = flat_grad(reverse_id)
    cosine = torch.dot(attack_grad, true_grad) / (attack_grad.norm() * true_grad.norm())
    torch.testing.assert_close(objectives["isolation"], config.official_isolation_weight * cosine)

    log_q = torch.log_softmax(v_ood, 1)
    l1 = sum((c_ood[i, k] - (log_q[i, k] - log_q[i].mean())).abs() for i in range(len(x_ood)) for k in range(CLASSES))
    torch.testing.assert_close(objectives["ood_output"], config.official_ood_weight * l1 / (len(x_ood) * CLASSES))

    reverse_ood = kl_divergence(Categorical(logits=c_ood), Categorical(logits=v_ood)).mean()
    grads = torch.autograd.grad(reverse_ood, params)
    mean_abs = sum(g.abs().sum() for g in grads) / sum(g.numel() for g in grads)
    torch.testing.assert_close(objectives["grad_norm"], config.official_grad_norm_weight * mean_abs)
    torch.testing.assert_close(objectives["benign"], F.cross_entropy(v_id, y))


def test_paper_variant_terms_match_their_definitions():
    torch.manual_seed(7)
    victim, clone = tiny_cnn(torch.float64), tiny_cnn(torch.float64).eval()
    x, y, x_ood = batch(8, n=16, dtype=torch.float64)
    config = InI.Config(gamma_iso=2.0, gamma_ind=3.0, beta=0.5)
    objectives = InI(config).objectives(victim, clone, x, y, x_ood)
    assert list(objectives) == ["benign", "isolation", "information_gain", "grad_norm"]
    params = list(clone.parameters())
    forward_kl = kl_divergence(Categorical(logits=victim(x_ood)), Categorical(logits=clone(x_ood))).mean()
    torch.testing.assert_close(objectives["information_gain"], 3.0 * forward_kl)
    norm = torch.cat([g.reshape(-1) for g in torch.autograd.grad(forward_kl, params)]).norm()
    torch.testing.assert_close(objectives["grad_norm"], 3.0 * 0.5 * norm)
    soft = torch.softmax(victim(x), 1)
    ce_soft = -(soft * torch.log_softmax(clone(x), 1)).sum(1).mean()
    g_soft = torch.cat([g.reshape(-1) for g in torch.autograd.grad(ce_soft, params)])
    g_true = torch.cat([g.reshape(-1) for g in torch.autograd.grad(F.cross_entropy(clone(x), y), params)])
    torch.testing.assert_close(objectives["isolation"], 2.0 * F.cosine_similarity(g_soft, g_true, dim=0))


@pytest.mark.parametrize("form", ["rms", "mean_abs"])
def test_grad_norm_forms_reduce_the_clone_gradient_as_named(form):
    """The size-independent forms of ||grad L_ig||: L2 / sqrt(P) and the mean absolute entry."""
    torch.manual_seed(7)
    victim, clone = tiny_cnn(torch.float64), tiny_cnn(torch.float64).eval()
    x, y, x_ood = batch(8, n=16, dtype=torch.float64)
    objectives = InI(InI.Config(beta=0.5, grad_norm_form=form)).objectives(victim, clone, x, y, x_ood)
    params = list(clone.parameters())
    forward_kl = kl_divergence(Categorical(logits=victim(x_ood)), Categorical(logits=clone(x_ood))).mean()
    flat = torch.cat([g.reshape(-1) for g in torch.autograd.grad(forward_kl, params)])
    expected = flat.norm() / flat.numel() ** 0.5 if form == "rms" else flat.abs().mean()
    torch.testing.assert_close(objectives["grad_norm"], 0.5 * expected)
    assert objectives["grad_norm"] < 0.5 * flat.norm()  # smaller than the paper's L2 form by construction


@pytest.mark.parametrize("variant", ["paper", "official"])
@pytest.mark.parametrize("switches,dropped", [
    ({"isolation": False}, {"isolation"}),
    ({"induction": False}, {"information_gain", "ood_output", "grad_norm"}),
    ({"grad_norm": False}, {"grad_norm"}),
])
def test_ablation_switches_drop_their_terms(variant, switches, dropped):
    torch.manual_seed(9)
    victim, clone = tiny_cnn(torch.float64), tiny_cnn(torch.float64).eval()
    x, y, x_ood = batch(10, n=16, dtype=torch.float64)
    full = InI(InI.Config(variant=variant)).objectives(victim, clone, x, y, x_ood)
    ablated_defense = InI(InI.Config(variant=variant, **switches))
    ablated = ablated_defense.objectives(victim, clone, x, y, x_ood)
    assert set(ablated) == set(full) - dropped and set(full) & dropped
    for name in ablated:  # the remaining terms are untouched
        torch.testing.assert_close(ablated[name], full[name])
    # and the update is PCGrad over exactly the remaining terms
    params = list(victim.parameters())
    direction = ablated_defense.update_direction(ablated, params, torch.Generator().manual_seed(0))
    grads = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(full[name], params, retain_graph=True)])
             for name in ablated]
    official = variant == "official"
    expected = pcgrad(grads, torch.Generator().manual_seed(0), merge="mean" if official else "sum", self_projection=official)
    torch.testing.assert_close(direction, expected)


def test_without_pcgrad_the_update_is_the_gradient_of_the_summed_loss():
    torch.manual_seed(11)
    victim, clone = tiny_cnn(torch.float64), tiny_cnn(torch.float64).eval()
    x, y, x_ood = batch(12, n=16, dtype=torch.float64)
    defense = InI(InI.Config(pcgrad=False))
    objectives = defense.objectives(victim, clone, x, y, x_ood)
    params = list(victim.parameters())
    direction = defense.update_direction(objectives, params)
    objectives = defense.objectives(victim, clone, x, y, x_ood)
    expected = torch.cat([g.reshape(-1) for g in torch.autograd.grad(sum(objectives.values()), params)])
    torch.testing.assert_close(direction, expected)


def test_fit_trains_a_softmax_victim_from_a_context():
    g = torch.Generator().manual_seed(13)
    images = (torch.rand(96, 1, 12, 12, generator=g) * 255).to(torch.uint8)
    labels = torch.randint(0, CLASSES, (96,), generator=g)
    ood = ImageData((torch.rand(80, 1, 12, 12, generator=g) * 128).to(torch.uint8), torch.zeros(80, dtype=torch.long))
    spec = DatasetSpec("synthetic", (1, 12, 12), CLASSES, (0.5,), (0.5,), load=lambda root, split: None)
    ctx = VictimContext(spec, "tiny", ImageData(images, labels), ImageData(images[:8], labels[:8]),
                        Recipe(epochs=2, batch_size=32, lr=0.02), torch.device("cpu"), 0,
                        roles={"ood": lambda: ood}, make_model=tiny_cnn)
    defense = InI()
    torch.manual_seed(0)
    victim = defense.build(ctx)
    assert isinstance(victim, Softmax)
    before = {k: v.clone() for k, v in victim.state_dict().items()}
    defense.fit(victim, ctx)
    assert not victim.training
    assert any(not torch.equal(before[k], v) for k, v in victim.state_dict().items())
    probs = victim(images[:10].float() / 255)
    assert torch.all(probs >= 0) and torch.allclose(probs.sum(1), torch.ones(10))
