"""Query blinding: random, label-preserving transforms of each query (Chen, Carlini and Wagner's
stateful-detection evasion, the adaptive attack SEAT's paper evaluates). A blinded copy of an
image is meant to look new to a similarity detector while the victim still labels it as the
original. SEAT's encoder training draws its negatives' transforms from the same family.

Transforms, one drawn per image with a random strength: uniform pixel noise, brightness,
contrast, rotation, translation and scaling (the last three through one affine resampling).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

KINDS = ("noise", "brightness", "contrast", "rotate", "translate", "scale")


def blind(x: torch.Tensor, generator: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Each image of the float batch ``x`` (N, C, H, W) in [0, 1] under one random transform;
    ``strength`` scales every transform's range (1: noise up to 0.05, brightness and contrast
    up to 10%, rotation up to 10 degrees, translation up to 10% of the side, scaling up to 10%)."""
    n = len(x)
    if n == 0:
        return x
    draw = lambda *shape: torch.rand(*shape, generator=generator).to(x.device)  # noqa: E731
    kind = torch.randint(len(KINDS), (n,), generator=generator).to(x.device)
    u = draw(n) * 2 - 1  # the strength of each image's transform, in [-1, 1]
    out = x.clone()
    s = strength
    noise = kind == 0
    if noise.any():
        out[noise] = x[noise] + 0.05 * s * (draw(int(noise.sum()), *x.shape[1:]) * 2 - 1)
    out = torch.where((kind == 1).view(-1, 1, 1, 1), x + 0.1 * s * u.view(-1, 1, 1, 1), out)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    out = torch.where((kind == 2).view(-1, 1, 1, 1), mean + (1 + 0.1 * s * u.view(-1, 1, 1, 1)) * (x - mean), out)
    geometric = kind >= 3
    if geometric.any():
        angle = torch.where(kind == 3, u * math.radians(10) * s, torch.zeros_like(u))
        shift = torch.where(kind == 4, u * 0.2 * s, torch.zeros_like(u))  # affine_grid's units: 2 = the side
        zoom = torch.where(kind == 5, 1 + 0.1 * s * u, torch.ones_like(u))
        theta = torch.zeros(n, 2, 3, device=x.device)
        theta[:, 0, 0], theta[:, 0, 1] = torch.cos(angle) / zoom, -torch.sin(angle) / zoom
        theta[:, 1, 0], theta[:, 1, 1] = torch.sin(angle) / zoom, torch.cos(angle) / zoom
        theta[:, 0, 2], theta[:, 1, 2] = shift, shift * (draw(n) * 2 - 1).sign()
        grid = F.affine_grid(theta[geometric], list(x[geometric].shape), align_corners=False)
        out[geometric] = F.grid_sample(x[geometric], grid, align_corners=False, padding_mode="zeros")
    return out.clamp(0.0, 1.0)
