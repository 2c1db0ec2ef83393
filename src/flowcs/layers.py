"""Small building blocks shared by the task networks and the flow networks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_block(c_in: int, c_out: int, norm: str = "batch") -> nn.Sequential:
    """Two 3×3 convolutions, each followed by a norm and LeakyReLU(0.2) (paper App. C)."""

    def make_norm(c: int) -> nn.Module:
        if norm == "batch":
            return nn.BatchNorm2d(c)
        if norm == "group":
            return nn.GroupNorm(min(8, c), c)
        raise ValueError(f"unknown norm {norm!r}")

    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1),
        make_norm(c_out),
        nn.LeakyReLU(0.2),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        make_norm(c_out),
        nn.LeakyReLU(0.2),
    )


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Zero-pad H and W centrally up to a multiple (so k pooling levels divide evenly)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    pads = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    return (F.pad(x, pads) if ph or pw else x), pads


def crop_padding(x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    """Undo :func:`pad_to_multiple`."""
    left, right, top, bottom = pads
    h, w = x.shape[-2:]
    return x[..., top : h - bottom, left : w - right]


def strided_trunk(c_in: int, widths, pool: int) -> tuple[nn.Sequential, int]:
    """Stride-2 3×3 convolutions (LeakyReLU(0.2)) → average pool to pool × pool → flatten; returns (trunk, features).

    One builder for A-DPS's policy network and the flow's conv velocity, so that the flow's network is A-DPS's
    size by construction (the comparison of the two is about training, not capacity)."""
    layers: list[nn.Module] = []
    prev = int(c_in)
    for w in widths:
        layers += [nn.Conv2d(prev, int(w), 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
        prev = int(w)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(pool), nn.Flatten()), prev * pool * pool


def repeat_to_batch(feat: torch.Tensor, batch: int) -> torch.Tensor:
    """Repeat per-condition rows when several flow samples share one condition (rows grouped per condition)."""
    if feat.shape[0] == batch:
        return feat
    if batch % feat.shape[0]:
        raise ValueError(f"batch {batch} is not a multiple of the condition batch {feat.shape[0]}")
    return feat.repeat_interleave(batch // feat.shape[0], dim=0)
