"""Victim checkpoints: a trained victim on disk, bound to the key it was computed for.

A checkpoint is one line ``msbench-victim sha256=<hex> bytes=<n> key=<victim key>`` over the
``torch.save`` payload it covers. The checksum catches a truncated or altered file; the key
catches a valid file in the wrong place (another seed's victim copied over this one), which a
checksum alone would accept. Either is reported in one line, set aside (``.corrupt`` or
``.misplaced``) and the victim trained again, never used.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from msbench.io import write_atomic

VICTIM_MAGIC = b"msbench-victim sha256="


class CorruptArtifact(ValueError):
    """A cached victim that fails its checksum or cannot be loaded into its module."""


class MisplacedArtifact(CorruptArtifact):
    """A valid checkpoint computed for another key than the one it is loaded under."""


def save_victim(victim: nn.Module, path: Path, info: dict[str, Any], key: str = "") -> None:
    """Write a victim's state and facts (benign accuracy...) atomically, behind its checksum line,
    which names ``key``, the victim key it was computed for."""
    buffer = io.BytesIO()
    torch.save({"state": victim.state_dict(), "info": info}, buffer)
    payload = buffer.getvalue()
    header = VICTIM_MAGIC + f"{hashlib.sha256(payload).hexdigest()} bytes={len(payload)} key={key}\n".encode()
    write_atomic(path, header + payload)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's verified ``{"state", "info"}``; raises CorruptArtifact naming ``path``."""
    return torch.load(io.BytesIO(_verified_payload(path)[0]), map_location="cpu", weights_only=True)


def _verified_payload(path: Path) -> tuple[bytes, str]:
    """The checkpoint's payload and the key its header names ("" for a checkpoint saved without one)."""
    blob = Path(path).read_bytes()
    header, _, payload = blob.partition(b"\n")
    try:
        fields = header[len(VICTIM_MAGIC):].decode().split(" ")
        digest, size = fields[0], int(fields[1].removeprefix("bytes="))
        key = fields[2].removeprefix("key=") if len(fields) > 2 else ""
    except (ValueError, IndexError, UnicodeDecodeError):
        digest, size, key = "", -1, ""
    if not header.startswith(VICTIM_MAGIC) or size < 0:
        raise CorruptArtifact(f"{path}: not an msbench victim checkpoint (no checksum header)")
    if len(payload) != size or hashlib.sha256(payload).hexdigest() != digest:
        raise CorruptArtifact(f"{path}: checksum mismatch ({len(payload)} of {size} bytes; truncated or altered)")
    return payload, key


def checkpoint_matches(path: Path, key: str) -> bool:
    """Whether ``path`` holds an intact checkpoint computed for ``key`` (checksum and key checked, nothing
    loaded): what a scheduler asks before it counts a victim as trained."""
    try:
        return _verified_payload(path)[1] == key
    except (CorruptArtifact, OSError):
        return False


def load_victim(victim: nn.Module, path: Path, key: str | None = None) -> dict[str, Any]:
    """Load a victim saved by ``save_victim`` into ``victim``; raises CorruptArtifact naming ``path``
    when the file is truncated, altered, or does not fit the module, and MisplacedArtifact when
    ``key`` is given and the checkpoint was computed for another."""
    payload, saved_key = _verified_payload(path)
    if key is not None and saved_key != key:
        raise MisplacedArtifact(f"{path}: computed for victim key {saved_key or '(none)'}, not {key} "
                                "(copied from another victim's place?)")
    try:
        saved = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        victim.load_state_dict(saved["state"])
    except Exception as failure:  # a checkpoint of another structure
        raise CorruptArtifact(f"{path}: does not load into this victim ({type(failure).__name__}: {failure})") from None
    return saved["info"]


def load_cached_victim(victim: nn.Module, path: Path, key: str | None = None) -> dict[str, Any] | None:
    """The cached victim's facts, loaded into ``victim``; None when there is no usable checkpoint.
    A corrupt or misplaced one is reported (a warning naming it), moved aside as ``<name>.corrupt``
    or ``<name>.misplaced`` and so trained again, never used."""
    if not Path(path).exists():
        return None
    try:
        return load_victim(victim, path, key)
    except (CorruptArtifact, OSError) as failure:
        kind = "misplaced" if isinstance(failure, MisplacedArtifact) else "corrupt"
        aside = Path(path).with_name(Path(path).name + f".{kind}")
        try:
            os.replace(path, aside)
        except OSError:
            pass
        logging.getLogger("msbench").warning("warning: %s victim checkpoint %s; moved to %s and trained again",
                                             kind, " ".join(str(failure).split()), aside.name)
        return None
