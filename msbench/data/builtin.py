"""The datasets msbench knows by name, loaded through torchvision's classes where they apply.

Each loader downloads where the network allows (``MSBENCH_DOWNLOAD=0`` forbids it) and otherwise
fails with MissingDataError naming the folder it looked in. EMNIST-letters also reads the exact
``.npz`` copy (``EMNIST-letters/{train,test}.npz``) when torchvision's files are absent.
"""
from __future__ import annotations

import contextvars
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from msbench.data.base import DatasetSpec, ImageData, MissingDataError
from msbench.data.files import _nchw, load_npz
from msbench.registry import register_dataset

MNIST_STATS = ((0.1307,), (0.3081,))
CIFAR_STATS = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))


_OFFLINE = contextvars.ContextVar("msbench_offline", default=False)


def offline_now() -> bool:
    """Inside ``offline()`` (a module-level function: loaders call it, so a loader pickled for a Ray
    worker refers to it by name and never carries the context variable itself)."""
    return _OFFLINE.get()


def downloads_allowed() -> bool:
    return not offline_now() and os.environ.get("MSBENCH_DOWNLOAD", "1") not in ("0", "false", "no")


@contextmanager
def offline() -> Iterator[None]:
    """No download while the block runs: a suite's data are first looked for as they are on disk, so
    every missing dataset is named at once, before anything is fetched or created."""
    token = _OFFLINE.set(True)
    try:
        yield
    finally:
        _OFFLINE.reset(token)


def _torchvision(cls_name: str, folder: str, **fixed: Any) -> Callable[[Path, str], ImageData]:
    """A loader over a torchvision dataset class with ``train=`` or ``split=`` selection."""

    def load(root: Path, split: str) -> ImageData:
        import torchvision.datasets as tvd

        cls = getattr(tvd, cls_name)
        kwargs = dict(fixed)
        if cls_name == "SVHN":
            kwargs["split"] = split
        else:
            kwargs["train"] = split == "train"
        try:
            dataset = cls(str(root), download=False, **kwargs)
        except (RuntimeError, FileNotFoundError) as missing:
            if not downloads_allowed():
                env_off = os.environ.get("MSBENCH_DOWNLOAD", "1") in ("0", "false", "no")
                why = "; downloads are off (MSBENCH_DOWNLOAD=0)" if env_off else ""
                raise MissingDataError(f"{cls_name} ({split}) not found under {root / folder}{why}") from missing
            try:
                dataset = cls(str(root), download=True, **kwargs)
            except Exception as failed:  # network errors come in many types
                raise MissingDataError(f"{cls_name} ({split}) not found under {root / folder} "
                                       f"and the download failed: {failed}") from failed
        data = dataset.data
        labels = getattr(dataset, "targets", None)
        if labels is None:
            labels = dataset.labels
        images = _nchw(data if isinstance(data, torch.Tensor) else np.asarray(data))
        labels = torch.as_tensor(np.asarray(labels)).long()
        if cls_name == "EMNIST" and fixed.get("split") == "letters":
            labels = labels - 1  # torchvision's letters are 1..26 with an unused class 0
        return ImageData(images, labels, folder)

    return load


def _emnist_letters(root: Path, split: str) -> ImageData:
    npz = root / "EMNIST-letters" / f"{split}.npz"
    if npz.exists():
        return load_npz(npz, "emnist-letters")
    try:
        return _torchvision("EMNIST", "EMNIST", split="letters")(root, split)
    except MissingDataError as missing:
        raise MissingDataError(f"{missing}; nor is {npz} there") from None


def _tiny_imagenet(root: Path, split: str) -> ImageData:
    """TinyImageNet from its unpacked archive (``tiny-imagenet-200/``): train folders, val annotations."""
    from PIL import Image

    base = root / "tiny-imagenet-200"
    if not base.exists():
        raise MissingDataError(f"TinyImageNet not found: {base} is missing (no automatic download)")
    classes = sorted(p.name for p in (base / "train").iterdir())
    index = {name: i for i, name in enumerate(classes)}
    if split == "train":
        files = [(f, index[d.name]) for d in sorted((base / "train").iterdir())
                 for f in sorted((d / "images").glob("*.JPEG"))]
    else:
        lines = (base / "val" / "val_annotations.txt").read_text().splitlines()
        files = [(base / "val" / "images" / line.split("\t")[0], index[line.split("\t")[1]]) for line in lines]
    images = np.stack([np.asarray(Image.open(f).convert("RGB")) for f, _ in files])
    return ImageData(_nchw(images), torch.tensor([label for _, label in files]), "tinyimagenet")


def _spec(name: str, shape: tuple[int, int, int], classes: int, stats: tuple, load: Callable, description: str,
          **kwargs: Any) -> DatasetSpec:
    spec = DatasetSpec(name, shape, classes, stats[0], stats[1], load, description, **kwargs)
    register_dataset(name)(spec)
    return spec


GREY, COLOUR = (1, 28, 28), (3, 32, 32)
_spec("mnist", GREY, 10, MNIST_STATS, _torchvision("MNIST", "MNIST"), "MNIST handwritten digits (torchvision)",
      roles={"ood": "kmnist", "hash": "kmnist", "surrogate": "emnist-letters"})
_spec("fashionmnist", GREY, 10, MNIST_STATS, _torchvision("FashionMNIST", "FashionMNIST"),
      "Fashion-MNIST clothing images (torchvision)",
      roles={"ood": "kmnist", "hash": "kmnist", "surrogate": "emnist"})
_spec("kmnist", GREY, 10, MNIST_STATS, _torchvision("KMNIST", "KMNIST"),
      "Kuzushiji-MNIST (torchvision); OOD and hash set of MNIST-family victims")
_spec("emnist-letters", GREY, 26, MNIST_STATS, _emnist_letters,
      "EMNIST letters split (torchvision, or the exact .npz copy)")
_spec("emnist", GREY, 10, MNIST_STATS, _torchvision("EMNIST", "EMNIST", split="digits"),
      "EMNIST digits split (torchvision); KnockoffNets' surrogate for FashionMNIST")
_spec("emnist-balanced", GREY, 47, MNIST_STATS, _torchvision("EMNIST", "EMNIST", split="balanced"),
      "EMNIST balanced split (torchvision)")
_spec("emnist-byclass", GREY, 62, MNIST_STATS, _torchvision("EMNIST", "EMNIST", split="byclass"),
      "EMNIST byclass split (torchvision)")
_spec("cifar10", COLOUR, 10, CIFAR_STATS, _torchvision("CIFAR10", "cifar-10-batches-py"), "CIFAR-10 (torchvision)",
      roles={"ood": "tinyimagenet", "hash": "svhn", "surrogate": "cifar100"}, augment="crop_flip")
_spec("cifar100", COLOUR, 100, CIFAR_STATS, _torchvision("CIFAR100", "cifar-100-python"), "CIFAR-100 (torchvision)",
      roles={"ood": "tinyimagenet", "hash": "svhn", "surrogate": "cifar10"}, augment="crop_flip")
_spec("svhn", COLOUR, 10, CIFAR_STATS, _torchvision("SVHN", "SVHN"),
      "SVHN house numbers (torchvision); EDM's hash set for CIFAR victims")
_spec("tinyimagenet", (3, 64, 64), 200, CIFAR_STATS, _tiny_imagenet,
      "TinyImageNet-200 (image folders); OOD set of CIFAR victims")
