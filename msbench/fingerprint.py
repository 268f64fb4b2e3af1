"""A victim's fingerprint: a digest of everything about a loaded module that decides its answers.

The runner takes it when a victim is loaded or trained and checks it after every cell: an attack
that changed the victim fails its cell, and the victim is reloaded for later cells instead of
being used damaged. "Changed" covers what runs, not only the weights: a parameter, a buffer, a
setting such as MAD's epsilon, train/eval mode, a tensor or container kept as a plain attribute,
a function put on the instance (``victim.forward = ...``), a method of its class replaced, a hook
added or swapped, and torch's global module hooks. Functions are identified by identity, so a
fingerprint is compared only within the process that took it. A module class may name in
``fingerprint_exempt`` attributes that are memos of fingerprinted state, filled lazily as it
answers (ModelGuard-S's codebooks, a function of its training answers and epsilon): they are not
hashed, so a victim loaded from its checkpoint does not fail its first cell by answering.
"""
from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn

SCALARS = (bool, int, float, str, type(None))


MODULE_TABLES = ("_parameters", "_buffers", "_modules")  # hashed by value through named_parameters/buffers/modules
DEPTH = 4  # how deep plain containers (lists, dicts) held as attributes are described


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    data = tensor.detach().cpu().contiguous().reshape(-1)
    return f"{data.dtype}:{tuple(tensor.shape)}:".encode() + (data.view(torch.uint8).numpy().tobytes()
                                                                if data.numel() else b"")


def _describe(value: Any, depth: int = DEPTH) -> bytes:
    """What of an attribute's value decides answers: a scalar's repr, a tensor's bytes, a function's
    identity and code, a container's items; other objects by type (a generator's state changes as
    it is used, and ``restart_randomness`` puts it back before each cell)."""
    if isinstance(value, SCALARS):
        return repr(value).encode()
    if isinstance(value, torch.Tensor):
        return _tensor_bytes(value)
    if isinstance(value, nn.Module):  # a module kept outside _modules: its identity (its weights are its own matter)
        return f"module:{type(value).__qualname__}:{id(value)}".encode()
    if callable(value) and not isinstance(value, type):
        function = getattr(value, "__func__", value)
        return f"callable:{getattr(function, '__qualname__', type(function).__qualname__)}:{id(function)}".encode()
    if depth and isinstance(value, (list, tuple)):
        return b"[" + b",".join(_describe(v, depth - 1) for v in value) + b"]"
    if depth and isinstance(value, dict):
        return b"{" + b",".join(repr(k).encode() + b":" + _describe(v, depth - 1) for k, v in value.items()) + b"}"
    return f"object:{type(value).__qualname__}".encode()


def _class_code(cls: type) -> bytes:
    """The identity of every function defined by the module's classes (up to ``nn.Module``): a method
    replaced on the class (``type(victim).forward = ...``) changes it."""
    return b"".join(f"{klass.__qualname__}.{name}:{id(value)};".encode()
                    for klass in cls.__mro__ if klass is not object
                    for name, value in sorted(vars(klass).items())
                    if callable(value) or isinstance(value, (staticmethod, classmethod)))


def global_hooks() -> bytes:
    """torch's global module hooks (``nn.modules.module.register_module_forward_hook``), which run in every module."""
    from torch.nn.modules import module as torch_module

    tables = sorted(name for name in vars(torch_module) if name.startswith("_global_") and name.endswith("hooks"))
    return b"".join(name.encode() + _describe(getattr(torch_module, name)) for name in tables)


def fingerprint(module: nn.Module) -> str:
    """SHA-256 over every parameter and buffer (name, dtype, shape, bytes), every submodule's class,
    its class's functions, and every other attribute (settings such as ``epsilon``, mode, hooks,
    functions, tensors and containers kept as attributes), and torch's global hooks."""
    h = hashlib.sha256()
    for name, tensor in [*module.named_parameters(remove_duplicate=False),
                         *module.named_buffers(remove_duplicate=False)]:
        h.update(f"{name}:".encode() + _tensor_bytes(tensor))
    for name, sub in module.named_modules(remove_duplicate=False):
        h.update(f"{name}:{type(sub).__qualname__}:".encode())
        exempt = getattr(type(sub), "fingerprint_exempt", ())  # memos of fingerprinted state, filled as it answers
        for key, value in sorted(vars(sub).items()):
            if key not in MODULE_TABLES and key not in exempt and not key.startswith("__"):
                h.update(key.encode() + b"=" + _describe(value) + b";")
    h.update(code_fingerprint(module).encode())
    h.update(global_hooks())
    return h.hexdigest()


def code_fingerprint(module: nn.Module) -> str:
    """The digest of the functions of every class among a module's submodules. It does not depend
    on training or loading, so the victim cache compares it across reloads of one victim: a class
    patched by an earlier cell is not taken as the victim's code when the victim is loaded again."""
    classes = sorted({type(sub) for sub in module.modules()}, key=lambda c: f"{c.__module__}.{c.__qualname__}")
    return hashlib.sha256(b"".join(_class_code(cls) for cls in classes)).hexdigest()
