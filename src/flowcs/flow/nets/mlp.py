"""Velocity network of the MRI flow policy (paper App. C, Table 5; SPEC §4).

v_θ(x_t, t, c): the frozen CNN encoder's multi-scale feature maps of the low-frequency
reconstruction are global-average-pooled and concatenated into one vector, the flow time gets a
64-d sinusoidal embedding, and both are concatenated with the current scores x_t (one per k-space
column, N = W). Four hidden layers Linear(512) → LayerNorm → SiLU, then a linear output of N
velocities. The output layer starts at zero (v = 0 at initialisation), like the image flow net.

Nothing in it is MRI-specific: any policy over N location scores with a feature *vector* per condition can use
it (the examples pair it with :class:`PooledCondition`, a weight-free encoder for k-space points and lines).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...layers import repeat_to_batch
from .time_embedding import SinusoidalTimeEmbedding

__all__ = ["MRIVelocityMLP", "PooledCondition", "pool_features"]


def pool_features(feats: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Global average pool of each (B, C_i, H_i, W_i) map, concatenated → (B, Σ C_i); (B, D) passes through."""
    if torch.is_tensor(feats):
        feats = [feats]
    pooled = [f.mean(dim=(-2, -1)) if f.ndim == 4 else f for f in feats]
    return torch.cat(pooled, dim=1)


class PooledCondition(nn.Module):
    """A weight-free condition encoder: the condition image average-pooled to pool × pool and flattened."""

    def __init__(self, pool: int):
        super().__init__()
        self.pool = int(pool)

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(condition, self.pool).flatten(1)


class MRIVelocityMLP(nn.Module):
    """MLP velocity field over N column scores, conditioned on pooled encoder features and t."""

    def __init__(self, n_locations: int, feature_dim: int, hidden: int = 512, layers: int = 4, time_dim: int = 64):
        super().__init__()
        if layers < 1:
            raise ValueError("the velocity MLP needs at least one hidden layer")
        self.n_locations, self.feature_dim = int(n_locations), int(feature_dim)
        self.time = SinusoidalTimeEmbedding(time_dim)
        dims = [n_locations + feature_dim + time_dim] + [hidden] * layers
        blocks: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            blocks += [nn.Linear(a, b), nn.LayerNorm(b), nn.SiLU()]
        self.body = nn.Sequential(*blocks)
        self.out = nn.Linear(hidden, n_locations)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor,
                features: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        b = x_t.shape[0]
        if x_t.ndim != 2 or x_t.shape[1] != self.n_locations:
            raise ValueError(f"x_t must have shape (batch, {self.n_locations}), got {tuple(x_t.shape)}")
        c = pool_features(features)
        if c.shape[1] != self.feature_dim:
            raise ValueError(f"expected {self.feature_dim} pooled feature channels, got {c.shape[1]}")
        c = repeat_to_batch(c, b)
        h = torch.cat([x_t, c.to(x_t.dtype), self.time(t).to(x_t.dtype)], dim=1)
        return self.out(self.body(h))
