"""Homoscedastic-uncertainty loss weighting (Kendall et al., 2018), paper Eq. 12."""

from __future__ import annotations

import torch
from torch import nn


class KendallWeighting(nn.Module):
    """L = Σ ½·e^(−s_i)·L_i + ½·s_i with learned s_i = log σ_i².

    The weights tune themselves: a noisy loss gets a large σ and a small
    weight, and the ½·s term stops σ from growing without bound.
    """

    def __init__(self, n_losses: int = 2):
        super().__init__()
        self.log_vars = nn.Parameter(torch.zeros(n_losses))

    def forward(self, *losses: torch.Tensor) -> torch.Tensor:
        if len(losses) != self.log_vars.numel():
            raise ValueError(f"expected {self.log_vars.numel()} losses, got {len(losses)}")
        s = self.log_vars
        return sum(0.5 * torch.exp(-s[i]) * loss + 0.5 * s[i] for i, loss in enumerate(losses))
