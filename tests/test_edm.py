"""EDM: the hash routes deterministically by the formula, fast == reference, members diversify."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from msbench.data import DatasetSpec, ImageData
from msbench.defenses import VictimContext
from msbench.defenses.edm import EDM, EDMVictim, HashNet, diversity_loss, hash_bucket, hash_index
from msbench.registry import DEFENSES
from msbench.training import Optimiser, Recipe, fit
from tests.conftest import single_thread

SHAPE = (1, 16, 16)
CLASSES = 4
HASH_CLASSES = 10
MEMBERS = 5


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 7 * 7, 16), nn.ReLU(), nn.Linear(16, CLASSES))


def stripes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hash data: class c is a bright vertical stripe at column c + 3 over noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % HASH_CLASSES
    images = torch.rand(n, *SHAPE, generator=g) * 60
    images[torch.arange(n), 0, :, labels + 3] += 180
    return images.clamp(0, 255).to(torch.uint8), labels


@pytest.fixture(scope="module")
def hasher() -> HashNet:
    with single_thread():
        torch.manual_seed(0)
        images, labels = stripes(300, 0)
        net = HashNet(SHAPE, HASH_CLASSES)
        net.set_statistics(images)
        fit(net, images, labels, Recipe(epochs=3, batch_size=32, lr=0.05), seed=0)
    return net.eval()


def ensemble(hasher: HashNet, implementation: str = "fast") -> EDMVictim:
    torch.manual_seed(1)
    return EDMVictim([tiny_cnn() for _ in range(MEMBERS)], hasher, implementation=implementation).eval()


def test_registered_with_its_roles_and_checks_its_config():
    assert DEFENSES.get("edm") is EDM
    assert EDM.roles == ("ood", "hash")
    with pytest.raises(ValueError, match="implementation"):
        EDM(EDM.Config(implementation="fastest"))
    with pytest.raises(ValueError, match="members"):
        EDM(EDM.Config(members=1))


def test_hash_formula_at_probability_one_gives_bucket_2c_plus_2():
    classes = torch.arange(HASH_CLASSES)
    one_hot = F.one_hot(classes, HASH_CLASSES).float()
    assert torch.equal(hash_bucket(one_hot), 2 * classes + 2)
    logits = 40.0 * one_hot  # a float32 softmax rounds the top probability to exactly 1.0
    probs = torch.softmax(logits, dim=1)
    assert torch.all(probs.max(dim=1).values == 1.0)
    assert torch.equal(hash_bucket(probs), 2 * classes + 2)
    assert torch.equal(hash_index(probs, MEMBERS), (2 * classes + 2) % MEMBERS)
    # Below p = 1 the bucket is 2c + [p >= 0.55].
    for p, offset in [(0.54, 0), (0.56, 1), (0.99, 1)]:
        rows = torch.full((HASH_CLASSES, HASH_CLASSES), (1 - p) / (HASH_CLASSES - 1))
        rows[classes, classes] = p
        assert torch.equal(hash_bucket(rows), 2 * classes + offset), p
    # M and m enter the formula: m*c + floor((M*p - 1)*m/(M - 1)).
    assert torch.equal(hash_bucket(one_hot, M=4, m=3), 3 * classes + 3)


def test_same_input_gets_the_same_member_every_time(hasher):
    model = ensemble(hasher)
    images, _ = stripes(40, 5)
    x = images.float() / 255
    with torch.no_grad():
        first = model.member_index(x)
        again = model.member_index(x)
        permutation = torch.randperm(40, generator=torch.Generator().manual_seed(0))
        shuffled = model.member_index(x[permutation])
        alone = torch.cat([model.member_index(x[i:i + 1]) for i in range(3)])
        answer, repeat = model(x), model(x)
    assert torch.equal(first, again)
    assert torch.equal(shuffled, first[permutation])
    assert torch.equal(alone, first[:3])
    assert torch.equal(answer, repeat)


def test_different_inputs_get_different_members(hasher):
    model = ensemble(hasher)
    images, labels = stripes(HASH_CLASSES * 4, 6)  # unseen stripes of every hash class
    x = images.float() / 255
    with torch.no_grad():
        probs = torch.softmax(hasher(x), dim=1)
        index = model.member_index(x)
    assert torch.equal(index, torch.remainder(hash_bucket(probs), MEMBERS))
    assert (probs.argmax(1) == labels).float().mean() > 0.9  # the stripes are what the hash model keys on
    # Class 0 lands in buckets {0, 1, 2} and class 1 in {2, 3, 4}; confident stripes give 1 and 3.
    class0, class1 = index[labels == 0], index[labels == 1]
    assert set(class0.tolist()).isdisjoint(class1.tolist())
    assert len(set(index.tolist())) >= 4


def test_fast_routing_equals_evaluating_every_member(hasher):
    fast, reference = ensemble(hasher, "fast"), ensemble(hasher, "reference")
    reference.load_state_dict(fast.state_dict())
    g = torch.Generator().manual_seed(7)
    images, _ = stripes(64, 7)
    x = images.float() / 255
    x = x[torch.randperm(64, generator=g)]
    with torch.no_grad():
        index = fast.member_index(x)
        assert len(set(index.tolist())) >= 3  # several groups, so the scatter is exercised
        out_fast, out_reference = fast(x), reference(x)
        one_by_one = torch.cat([torch.softmax(fast.members[int(index[i])](x[i:i + 1]), dim=1) for i in range(5)])
    torch.testing.assert_close(out_fast, out_reference)
    torch.testing.assert_close(out_fast[:5], one_by_one)
    assert torch.all(out_fast >= 0) and torch.allclose(out_fast.sum(dim=1), torch.ones(64))
    # the members disagree, so picking the wrong one would show
    with torch.no_grad():
        others = torch.softmax(fast.members[0](x), dim=1)
    assert not torch.allclose(out_fast[index != 0], others[index != 0])


def test_diversity_loss_is_the_smooth_max_pair_cosine():
    probs = torch.softmax(torch.randn(3, 6, CLASSES, generator=torch.Generator().manual_seed(8)), dim=2)
    cos = lambda a, b: F.cosine_similarity(probs[a], probs[b], dim=1)  # noqa: E731
    expected = torch.log(cos(0, 1).exp() + cos(0, 2).exp() + cos(1, 2).exp()).mean()
    torch.testing.assert_close(diversity_loss(probs), expected)


def test_diversity_loss_falls_over_a_few_steps():
    g = torch.Generator().manual_seed(10)
    x = torch.rand(48, *SHAPE, generator=g)
    y = torch.randint(0, CLASSES, (48,), generator=g)
    x_ood = torch.rand(48, *SHAPE, generator=g) ** 3

    def train(lambda_d: float) -> tuple[float, float]:
        torch.manual_seed(9)
        model = EDMVictim([tiny_cnn() for _ in range(MEMBERS)], HashNet(SHAPE, HASH_CLASSES))

        def coherence() -> float:
            with torch.no_grad():
                return diversity_loss(torch.stack([torch.softmax(m(x_ood), 1) for m in model.members])).item()

        defense = EDM(EDM.Config(lambda_d=lambda_d))
        optimiser = Optimiser.sgd([p for m in model.members for p in m.parameters()], Recipe(lr=0.05))
        before = coherence()
        for _ in range(15):
            defense.step(model, optimiser, x, y, x_ood)
        return before, coherence()

    # Fresh members all answer close to uniform, where the coherence is near its maximum log(10) + 1
    # and flat; a few steps need a large weight to move it against the summed CE of five members.
    before, with_diversity = train(10.0)
    _, without = train(0.0)
    assert with_diversity < before - 0.3, (before, with_diversity)
    assert with_diversity < without - 0.3, (without, with_diversity)


def test_fit_trains_hash_and_members_from_a_context():
    g = torch.Generator().manual_seed(11)
    images = (torch.rand(64, *SHAPE, generator=g) * 255).to(torch.uint8)
    labels = torch.randint(0, CLASSES, (64,), generator=g)
    hash_images, hash_labels = stripes(60, 12)
    ood = ImageData((torch.rand(50, *SHAPE, generator=g) * 100).to(torch.uint8), torch.zeros(50, dtype=torch.long))
    spec = DatasetSpec("synthetic", SHAPE, CLASSES, (0.5,), (0.5,), load=lambda root, split: None)
    ctx = VictimContext(spec, "tiny", ImageData(images, labels), ImageData(images[:8], labels[:8]),
                        Recipe(epochs=1, batch_size=32, lr=0.02), torch.device("cpu"), 0,
                        roles={"ood": lambda: ood, "hash": lambda: ImageData(hash_images, hash_labels)},
                        make_model=tiny_cnn)
    defense = EDM(EDM.Config(members=3))
    torch.manual_seed(0)
    victim = defense.build(ctx)
    fresh = {k: v.clone() for k, v in victim.state_dict().items()}
    defense.fit(victim, ctx)
    assert not victim.training
    state = victim.state_dict()
    pixels = hash_images.double().div(255)
    torch.testing.assert_close(state["hasher.normalize.mean"].view(()), pixels.mean().float())
    torch.testing.assert_close(state["hasher.normalize.std"].view(()), pixels.std(unbiased=False).float())
    for prefix in ("members.0.", "members.2.", "hasher.classifier."):
        assert any(not torch.equal(fresh[k], state[k]) for k in state if k.startswith(prefix)), prefix
    probs = victim(images[:10].float() / 255)
    assert torch.all(probs >= 0) and torch.allclose(probs.sum(1), torch.ones(10))
    wrong = EDM(EDM.Config(members=3, hash_classes=5))
    with pytest.raises(ValueError, match="hash_classes"):
        wrong.fit(wrong.build(ctx), ctx)
