"""A small convolutional velocity field for pixel policies: A-DPS's network, read as v_θ(x_t, t, c).

Why it exists next to the dual-encoder U-Net: trained end to end (``flow.objective: joint``), the velocity must be
evaluated with gradient at every round of every batch, and the U-Net over the frozen reconstruction network's
features makes that ≈ 15× slower per step on a CPU. On the mnist-classify validation pilots this net, trained
as a one-step flow, reached A-DPS's accuracy (docs/design.md). It reads the condition image itself (the
zero-filled image and its mask; no pretrained encoder, so ``flow.condition_grad`` reaches it directly), the
acquired mask, the current scores x_t and the time t.

trunk: stride-2 3×3 convolutions (LeakyReLU) → adaptive average pool to pool × pool → flatten;
head: MLP over [trunk features ⊕ acquired mask ⊕ x_t ⊕ sinusoidal embedding of t] → N velocities.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ...layers import repeat_to_batch, strided_trunk
from .time_embedding import SinusoidalTimeEmbedding

__all__ = ["ConvVelocity"]


class ConvVelocity(nn.Module):
    """v_θ(x_t, t, [condition image, acquired mask]) → (B, N); pair with ``FlowModel(..., acquired_input=True)``."""

    def __init__(self, in_channels: int, n_locations: int, widths: Sequence[int] = (16, 32, 32), hidden: int = 256,
                 pool: int = 4, time_dim: int = 64):
        super().__init__()
        self.n_locations = int(n_locations)
        self.trunk, n_feats = strided_trunk(in_channels, widths, pool)
        self.time = SinusoidalTimeEmbedding(time_dim)
        self.head = nn.Sequential(nn.Linear(n_feats + 2 * n_locations + time_dim, hidden),
                                  nn.LeakyReLU(0.2), nn.Linear(hidden, n_locations))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, features: Sequence[torch.Tensor]) -> torch.Tensor:
        condition, acquired = features
        b = x_t.shape[0]
        if x_t.ndim != 2 or x_t.shape[1] != self.n_locations:
            raise ValueError(f"x_t must have shape (batch, {self.n_locations}), got {tuple(x_t.shape)}")
        c = repeat_to_batch(torch.cat([self.trunk(condition), acquired.to(x_t.dtype)], dim=1), b)
        return self.head(torch.cat([c.to(x_t.dtype), x_t, self.time(t).to(x_t.dtype)], dim=1))
