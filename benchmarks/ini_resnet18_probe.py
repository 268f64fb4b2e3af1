"""Does InI train at ResNet-18 size?  A short training run of one InI setting on MNIST.

The paper form's induction term beta ||grad_{theta_C} L_ig|| grows with the clone's parameter
count, and at ResNet-18 size it swamps the benign gradient (docs/methods.md, "InI at ResNet-18
size"). This script trains a ResNet-18 victim for a few SGD steps from a fixed start with one
named setting and prints its test accuracy and benign loss at each checkpoint, so candidate
settings can be compared with Vanilla from the same start on a CPU:

    python benchmarks/ini_resnet18_probe.py vanilla paper beta0.01 rms-train official --steps 40

With ``--arch smallcnn`` it measures instead what closes the benign-accuracy gap of
suites/paper-mnist.toml's InI victims (its weights: ``paper-mnist``; smaller isolation or
induction weights: ``iso0.03 iso0.01 no-iso ind0.1``), e.g. one epoch at batch 128:

    python benchmarks/ini_resnet18_probe.py --arch smallcnn --batch 128 --steps 469 --every 469 \
        --test-size 10000 vanilla paper-mnist iso0.01 no-iso

Victim and fixed surrogate are initialised from different seeds (the surrogate is independent,
as in the defense); the OOD batch is FashionMNIST's test split; SGD lr 0.1, momentum 0.5, weight
decay 1e-3 (the paper's victim recipe) at a constant rate, batch 32; accuracy on 1,000 MNIST test
images. One thread unless ``--threads`` says otherwise.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from msbench.data import default_data_root, load_split
from msbench.defenses.ini import InI
from msbench.models import build_model
from msbench.registry import DATASETS
from msbench.training import Optimiser, Recipe, accuracy, predict_labels

PAPER_MNIST = {"gamma_iso": 0.1, "max_grad_norm": 5.0}  # suites/paper-mnist.toml's weights (PCGrad on)
SETTINGS: dict[str, dict[str, object] | None] = {
    "vanilla": None,  # plain cross-entropy steps
    "paper": {},  # the paper's form: L2 norm, beta = 1, every weight 1, eval-mode OOD forward
    "beta0.01": {"beta": 0.01},
    "rms": {"grad_norm_form": "rms"},
    "rms-train": {"grad_norm_form": "rms", "ood_train_mode": True},
    "train": {"ood_train_mode": True},
    "beta0.01-train": {"beta": 0.01, "ood_train_mode": True},
    "official": {"variant": "official"},
    # the benign-accuracy gap of suites/paper-mnist.toml's InI (run with --arch smallcnn)
    "paper-mnist": PAPER_MNIST,
    "iso0.03": {**PAPER_MNIST, "gamma_iso": 0.03},
    "iso0.01": {**PAPER_MNIST, "gamma_iso": 0.01},
    "no-iso": {**PAPER_MNIST, "isolation": False},
    "ind0.1": {**PAPER_MNIST, "gamma_ind": 0.1},
}


def probe(setting: str, steps: int, every: int, root: Path, arch: str = "resnet18", batch: int = 32, test_size: int = 1000) -> None:
    mnist, fashion = DATASETS.get("mnist"), DATASETS.get("fashionmnist")
    train, test = load_split(mnist, root, "train"), load_split(mnist, root, "test").subset(test_size, seed=0)
    ood = load_split(fashion, root, "test", shape=mnist.shape)

    def model(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return build_model(arch, mnist.shape, mnist.num_classes, mnist.mean, mnist.std)

    victim, clone = model(0), model(1).eval()
    for p in clone.parameters():
        p.requires_grad_(True)  # the clone's parameters are what L_iso and ||grad L_ig|| differentiate against
    optimiser = Optimiser.sgd(victim.parameters(), Recipe(lr=0.1, schedule="constant", batch_size=batch))
    overrides = SETTINGS[setting]
    defense = InI(InI.Config(**overrides)) if overrides is not None else None
    generator = torch.Generator().manual_seed(2)
    order = torch.randperm(len(train), generator=generator)
    ood_order = torch.randperm(len(ood), generator=generator)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        index = order[((step - 1) * batch) % len(train):][:batch]
        x, y = train.images[index].float() / 255, train.labels[index]
        victim.train()
        if defense is None:
            loss = F.cross_entropy(victim(x), y)
            optimiser.step_on(loss)
            benign = loss.item()
        else:
            x_ood = ood.images[ood_order[((step - 1) * batch) % len(ood):][:batch]].float() / 255
            benign = defense.step(victim, clone, optimiser, x, y, x_ood, generator)["benign"]
        if step % every == 0 or step == steps:
            victim.eval()
            print(f"{arch} {setting:>15}  step {step:5d}  L_ben {benign:8.3f}  test acc {accuracy(predict_labels(victim, test.images), test.labels):5.1f}%"
                  f"  ({time.perf_counter() - start:.0f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("settings", nargs="+", choices=sorted(SETTINGS))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--every", type=int, default=10, help="evaluate every this many steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--arch", default="resnet18", help="resnet18 (the question), or smallcnn (paper-mnist's victims)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--test-size", type=int, default=1000, help="MNIST test images for the accuracy")
    parser.add_argument("--data-root", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for setting in args.settings:
        probe(setting, args.steps, args.every, args.data_root or default_data_root(), args.arch, args.batch, args.test_size)


if __name__ == "__main__":
    main()
