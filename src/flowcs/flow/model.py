"""Model wrapper pairing a frozen condition encoder with a trainable velocity network."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class FrozenEncoder(nn.Module):
    """Wraps a pretrained network so that it is always in eval mode with no parameter gradients (gradient
    reaches a condition that requires it, never the weights).

    ``method`` names the bound method that maps a condition to features
    (``"encode"`` for the reconstruction U-Net).
    """

    def __init__(self, net: nn.Module, method: str = "forward"):
        super().__init__()
        self.net = net
        self.method = method
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.net.eval()

    def train(self, mode: bool = True) -> FrozenEncoder:  # stays frozen whatever the caller does
        super().train(mode)
        self.net.eval()
        return self

    def forward(self, condition: torch.Tensor) -> Any:
        # no graph unless the condition itself carries gradient (flow.condition_grad): then it reaches the
        # condition through the frozen weights
        with torch.set_grad_enabled(torch.is_grad_enabled() and condition.requires_grad):
            return getattr(self.net, self.method)(condition)


class FlowModel(nn.Module):
    """v_θ(x_t, t, c): features of the condition are computed once and reused at every Euler step.

    ``acquired_input``: the (B, N) mask of what is acquired joins the condition's features as one more feature
    vector (for velocity networks that pool the condition, where a sequential policy would otherwise have to
    infer from the image which locations it already measured).
    """

    def __init__(self, encoder: FrozenEncoder, velocity: nn.Module, acquired_input: bool = False):
        super().__init__()
        self.encoder = encoder
        self.velocity = velocity
        self.acquired_input = bool(acquired_input)

    def features(self, condition: torch.Tensor, acquired: torch.Tensor | None = None) -> Any:
        feats = self.encoder(condition)
        if not self.acquired_input:
            return feats
        if acquired is None:
            raise ValueError("this flow model reads the acquired mask: features(condition, acquired)")
        feats = list(feats) if isinstance(feats, (list, tuple)) else [feats]
        return [*feats, acquired.to(feats[0].dtype)]

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, features: Any) -> torch.Tensor:
        return self.velocity(x_t, t, features)
