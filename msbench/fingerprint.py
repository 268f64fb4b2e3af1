"""A victim's fingerprint: a digest of everything about a loaded module that decides its answers.

The runner takes it when a victim is loaded or trained and checks it after every cell: an attack
that changed the victim (a parameter, a buffer, a setting such as MAD's epsilon, train/eval
mode) fails its cell, and the victim is reloaded for later cells instead of being used damaged.
"""
from __future__ import annotations

import hashlib

import torch
from torch import nn

SCALARS = (bool, int, float, str, type(None))


def fingerprint(module: nn.Module) -> str:
    """SHA-256 over every parameter and buffer (name, dtype, shape, bytes) and every submodule's
    class, mode, hooks and plain scalar attributes (``epsilon``, ``tau``, ``strategy``)."""
    h = hashlib.sha256()
    tensors = [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]
    for name, tensor in tensors:
        data = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{data.dtype}:{tuple(tensor.shape)}:".encode())
        h.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    for name, sub in module.named_modules(remove_duplicate=False):
        settings = sorted((k, repr(v)) for k, v in vars(sub).items() if isinstance(v, SCALARS) and not k.startswith("__"))
        hooks = [len(getattr(sub, hook, ())) for hook in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks")]
        h.update(f"{name}:{type(sub).__qualname__}:{settings}:{hooks}".encode())
    return h.hexdigest()
