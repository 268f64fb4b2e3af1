"""Datasets: registered specs, suite-defined file datasets, and a per-process cache of loaded splits."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from msbench.data import builtin  # noqa: F401  (registers the built-in datasets)
from msbench.data.base import (DataError, DatasetSpec, ImageData, MissingDataError, UnlabeledImages, conform,
                               default_data_root)
from msbench.data.files import check_split, load_idx, load_npz
from msbench.registry import DATASETS

__all__ = ["DataError", "DatasetSpec", "ImageData", "MissingDataError", "UnlabeledImages", "conform",
           "default_data_root",
           "load_idx", "load_npz", "file_dataset", "union_dataset", "load_split", "ROLES"]

ROLES = ("ood", "hash", "surrogate")
# loaded splits kept in memory: a suite's dataset and its role datasets; the oldest is read again when needed
CACHE_LIMIT = 8
_CACHE: OrderedDict[tuple[str, str, str], ImageData] = OrderedDict()


def file_dataset(name: str, format: str, like: str, train: dict[str, str] | str | None = None,
                 test: dict[str, str] | str | None = None, num_classes: int | None = None,
                 note: str = "", description: str = "") -> DatasetSpec:
    """A dataset read from IDX or ``.npz`` files under the data root, shaped and normalised like ``like``.

    ``train``/``test`` give the files of each split: for npz a path, for idx ``{images, labels}``.
    A dataset with one split serves both (e.g. KMNIST's test split as an OOD set).
    """
    base: DatasetSpec = DATASETS.get(like)
    splits = {k: v for k, v in (("train", train), ("test", test)) if v is not None}

    def load(root: Path, split: str) -> ImageData:
        files = splits.get(split) or next(iter(splits.values()))
        if format == "npz":
            data = load_npz(root / str(files), name)
            images_file = labels_file = str(root / str(files))
        else:
            assert isinstance(files, dict)
            data = load_idx(root / files["images"], root / files["labels"] if files.get("labels") else None, name)
            images_file, labels_file = str(root / files["images"]), str(root / (files.get("labels") or files["images"]))
        check_split(data, base.shape, classes, images_file, labels_file, like)
        return data

    classes = num_classes or base.num_classes
    return DatasetSpec(name, base.shape, classes, base.mean, base.std, load,
                       description or f"{format} files shaped like {like}", roles=dict(base.roles),
                       augment=base.augment, note=note)


def union_dataset(name: str, members: list[DatasetSpec], note: str = "") -> DatasetSpec:
    """The images of ``members`` (one shape) one after another, e.g. MNIST and EMNIST-letters as the
    closest offline stand-in for EMNIST (digits and letters). Classes are kept apart: member k's
    labels are offset by the classes of the members before it, so the union is a well-formed
    labelled dataset (EDM's hash model trains on labels); as a surrogate or OOD set no attack or
    defense sees them (attacks get ``UnlabeledImages``). Normalisation is the first member's; role
    datasets are not inherited (a member's default surrogate may be another member), so a union in
    the matrix names its roles in the suite."""
    first = members[0]
    offsets = [sum(m.num_classes for m in members[:k]) for k in range(len(members))]

    def load(root: Path, split: str) -> ImageData:
        parts = [load_split(member, root, split) for member in members]
        for member, part in zip(members, parts):
            if len(part) == 0:
                raise DataError(member.name, split, f"empty member of the union {name}")
        return ImageData(torch.cat([p.images for p in parts]),
                         torch.cat([p.labels + o for p, o in zip(parts, offsets)]), name)

    return DatasetSpec(name, first.shape, sum(m.num_classes for m in members), first.mean, first.std, load,
                       f"union of {', '.join(m.name for m in members)}", roles={}, augment=first.augment,
                       note=note or f"union of {', '.join(m.name for m in members)}")


def load_split(spec: DatasetSpec, root: Path, split: str, shape: tuple[int, int, int] | None = None) -> ImageData:
    """Load a split, conformed to ``shape`` when given. The last ``CACHE_LIMIT`` splits read stay in
    memory, so the cells of a run read each file once; a split read again is the same data."""
    key = (spec.name, str(root), split)
    if key in _CACHE:
        _CACHE.move_to_end(key)
    else:
        _CACHE[key] = spec.load(Path(root), split)
        while len(_CACHE) > CACHE_LIMIT:
            _CACHE.popitem(last=False)
    data = _CACHE[key]
    if shape is not None and data.shape != tuple(shape):
        data = ImageData(conform(data.images, shape), data.labels, data.name)
    return data


def describe_spec(spec: DatasetSpec) -> dict[str, Any]:
    return {"name": spec.name, "shape": spec.shape, "classes": spec.num_classes, "note": spec.note}
