"""Sinusoidal embedding of the flow time t ∈ [0, 1]."""

from __future__ import annotations

import math

import torch
from torch import nn


class SinusoidalTimeEmbedding(nn.Module):
    """Transformer-style sin/cos features of ``scale·t`` at geometric frequencies."""

    def __init__(self, dim: int = 64, scale: float = 1000.0):
        super().__init__()
        if dim % 2:
            raise ValueError("time-embedding dimension must be even")
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)
        self.scale = scale
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = self.scale * t.reshape(-1, 1).float() * self.freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1)
