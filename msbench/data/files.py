"""Generic loaders for user data that torchvision does not know: IDX files and ``.npz`` archives."""
from __future__ import annotations

from pathlib import Path

import zipfile

import numpy as np
import torch

from msbench.data.base import DataError, ImageData, MissingDataError


def _nchw(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N, H, W) grey or (N, H, W, C) / (N, C, H, W) colour -> (N, C, H, W) uint8."""
    tensor = torch.as_tensor(np.asarray(images))
    if tensor.dtype != torch.uint8:
        raise ValueError(f"images must be uint8, got {tensor.dtype}")
    if tensor.dim() == 3:
        return tensor.unsqueeze(1).contiguous()
    if tensor.dim() == 4 and tensor.shape[-1] in (1, 3) and tensor.shape[1] not in (1, 3):
        return tensor.permute(0, 3, 1, 2).contiguous()
    if tensor.dim() == 4:
        return tensor.contiguous()
    raise ValueError(f"images must have 3 or 4 dimensions, got shape {tuple(tensor.shape)}")


def _require(paths: list[Path], what: str) -> None:
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise MissingDataError(f"{what}: missing {', '.join(missing)}")


def load_idx(images_path: Path, labels_path: Path | None, name: str = "") -> ImageData:
    """IDX files as MNIST ships them (also gzipped: torchvision's reader handles both)."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    _require([images_path] + ([labels_path] if labels_path else []), name or "idx dataset")
    try:
        raw = read_image_file(str(images_path))
    except Exception as failure:  # torchvision asserts on a bad magic number or size
        raise DataError(str(images_path), "images", f"expected an IDX file of uint8 images (N, H, W), could not "
                                                     f"read it ({type(failure).__name__}: {failure})") from None
    images = _checked_images(raw, str(images_path), "images")
    if labels_path:
        try:
            labels = read_label_file(str(labels_path))
        except Exception as failure:
            raise DataError(str(labels_path), "labels", f"expected an IDX file of uint8 labels (N,), could not "
                                                         f"read it ({type(failure).__name__}: {failure})") from None
        labels = _checked_labels(labels, len(images), str(labels_path), "labels")
    else:
        labels = torch.zeros(len(images), dtype=torch.long)
    return ImageData(images, labels, name)


def load_npz(path: Path, name: str = "", label_offset: int = 0) -> ImageData:
    """An ``.npz`` with ``images`` (uint8) and ``labels`` (integer) arrays."""
    _require([path], name or "npz dataset")
    file = str(path)
    if not zipfile.is_zipfile(path):
        raise DataError(file, "", "not an .npz archive (expected numpy.savez output with 'images' and 'labels' arrays)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            for key in ("images", "labels"):
                if key not in archive:
                    raise DataError(file, key,
                                    f"expected an array '{key}' (found: {', '.join(archive.files) or 'none'})")
            raw_images, raw_labels = archive["images"], archive["labels"]
    except DataError:
        raise
    except Exception as failure:  # truncated members, object arrays, bad headers
        raise DataError(file, "", f"not a readable .npz archive ({type(failure).__name__}: {failure})") from None
    images = _checked_images(raw_images, file, "images")
    labels = _checked_labels(raw_labels, len(images), file, "labels") + label_offset
    return ImageData(images, labels, name)


def _checked_images(raw: np.ndarray | torch.Tensor, file: str, key: str) -> torch.Tensor:
    dtype = getattr(raw, "dtype", None)
    if dtype not in (np.uint8, torch.uint8):
        raise DataError(file, key, f"expected uint8 pixels in 0..255, got {dtype}")
    try:
        images = _nchw(raw)
    except ValueError as bad:
        raise DataError(file, key, f"expected (N, H, W), (N, H, W, C) or (N, C, H, W) images: {bad}") from None
    if images.shape[1] not in (1, 3):
        raise DataError(file, key, f"expected 1 or 3 channels, got shape {tuple(raw.shape)}")
    if len(images) == 0:
        raise DataError(file, key, "expected at least one image, got an empty set")
    return images


def _checked_labels(raw: np.ndarray | torch.Tensor, count: int, file: str, key: str) -> torch.Tensor:
    array = np.asarray(raw)
    if array.ndim != 1:
        raise DataError(file, key, f"expected one integer label per image (shape (N,)), got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise DataError(file, key, f"expected integer class labels, got {array.dtype} (labels are never rounded)")
    if len(array) != count:
        raise DataError(file, key, f"expected one label per image: {count} images but {len(array)} labels")
    return torch.as_tensor(array.astype(np.int64))


def check_split(data: ImageData, shape: tuple[int, int, int], num_classes: int, images_file: str, labels_file: str,
                like: str) -> None:
    """A file dataset's split fits what it claims to be like: its image shape and class range."""
    if data.shape != tuple(shape):
        raise DataError(images_file, "images",
                        f"expected images of shape {tuple(shape)} (C, H, W) like '{like}', got {data.shape}")
    if len(data) and (int(data.labels.min()) < 0 or int(data.labels.max()) >= num_classes):
        raise DataError(labels_file, "labels",
                        f"expected class labels in 0..{num_classes - 1} ({num_classes} classes; set "
                        f"num_classes for more), got {int(data.labels.min())}..{int(data.labels.max())}")
