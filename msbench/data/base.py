"""In-memory image data and the dataset plugin type.

Small benchmark datasets fit in memory as uint8 tensors, so batches are sliced from one tensor
instead of going through per-sample PIL transforms: an epoch of MNIST costs a few tensor copies.
Models receive float images in [0, 1]; normalisation lives inside the model (see models/), so an
attack that perturbs pixels (JBDA) and clamps to the valid range works in one space only.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from msbench.config import InputError, choice_problem
from msbench.training import Augmentation


class MissingDataError(FileNotFoundError):
    """A dataset's files are absent under the data root; the message names both."""


class DataError(InputError):
    """A dataset file that msbench cannot use as it is: ``file: array: what was expected``."""


@dataclass
class ImageData:
    """A split of a dataset as tensors: images (N, C, H, W) uint8, labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor
    name: str = ""

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"{self.name}: images must be uint8 (N, C, H, W), got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{self.name}: {len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, size: int | None, seed: int = 0) -> "ImageData":
        """A fixed random subset (the same for a given seed), or self when size is None or too large."""
        if size is None or size >= len(self):
            return self
        generator = torch.Generator().manual_seed(seed)
        index = torch.randperm(len(self), generator=generator)[:size]
        return ImageData(self.images[index], self.labels[index], self.name)

    def split(self, fraction: float, seed: int = 0) -> tuple["ImageData", "ImageData"]:
        """A seeded random split into (rest, held-out) with ``fraction`` held out."""
        generator = torch.Generator().manual_seed(seed)
        index = torch.randperm(len(self), generator=generator)
        cut = len(self) - int(round(len(self) * fraction))
        rest, held = index[:cut], index[cut:]
        return (ImageData(self.images[rest], self.labels[rest], self.name),
                ImageData(self.images[held], self.labels[held], self.name))

    def floats(self, index: slice | torch.Tensor | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
        images = self.images if index is None else self.images[index]
        return images.to(device).float().div_(255.0)

    def batches(self, batch_size: int,
                device: torch.device | str = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Float images in [0, 1] and labels, in order, for evaluation."""
        for start in range(0, len(self), batch_size):
            stop = start + batch_size
            yield self.floats(slice(start, stop), device), self.labels[start:stop].to(device)

    def unlabeled(self) -> "UnlabeledImages":
        """A copy of the images without labels: what an attack is handed (its labels come from the
        oracle). A copy, so that an attack writing into it cannot change the data later cells use."""
        return UnlabeledImages(self.images.clone(), self.name)


@dataclass(frozen=True)
class UnlabeledImages:
    """Images (N, C, H, W) uint8 and nothing else: an attack's query and seed sets."""

    images: torch.Tensor
    name: str = ""

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"{self.name}: images must be uint8 (N, C, H, W), got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def floats(self, index: slice | torch.Tensor | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
        images = self.images if index is None else self.images[index]
        return images.to(device).float().div_(255.0)


def conform(images: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Bring uint8 images to (C, H, W): grey <-> colour and bilinear resizing.

    Needed when a role dataset differs from the victim's input (TinyImageNet's 64x64 as OOD data
    for a 32x32 CIFAR victim, grey KMNIST for a colour victim).
    """
    channels, height, width = shape
    if images.shape[1] != channels:
        if channels == 1:
            images = images.float().mean(dim=1, keepdim=True).round().to(torch.uint8)
        elif images.shape[1] == 1:
            images = images.expand(-1, channels, -1, -1).contiguous()
        else:
            raise ValueError(f"cannot convert {images.shape[1]} channels to {channels}")
    if tuple(images.shape[2:]) != (height, width):
        resized = [F.interpolate(chunk.float(), size=(height, width), mode="bilinear", antialias=True,
                                 align_corners=False)
                   for chunk in images.split(4096)]
        images = torch.cat(resized).round().clamp(0, 255).to(torch.uint8)
    return images


@dataclass
class DatasetSpec:
    """What a dataset plugin declares: shape, classes, normalisation, role defaults and a loader.

    ``load(root, split)`` returns an ImageData or raises MissingDataError naming the files.
    Role defaults name other datasets: ``ood`` (InI, AM, EDM's outlier data), ``hash`` (EDM's
    hash-model data), ``surrogate`` (KnockoffNets' query set).
    """

    name: str
    shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    load: Callable[[Path, str], ImageData]
    description: str = ""
    roles: dict[str, str] = field(default_factory=dict)
    augment: Augmentation = "none"  # training-time augmentation of victims
    note: str = ""  # shown in reports, e.g. "lossy JPEG copy, not the real CIFAR-10"

    def __post_init__(self) -> None:
        problem = choice_problem(self)  # a misspelt mode must not train with another augmentation
        if problem:
            raise ValueError(f"dataset {self.name}: {problem[0]}: {problem[1]}")

    @property
    def __doc__(self) -> str:  # so `msbench list` can describe a spec like a class
        return self.description


def default_data_root() -> Path:
    """``MSBENCH_DATA`` if set, else a per-user cache folder."""
    env = os.environ.get("MSBENCH_DATA")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "msbench" / "data"
