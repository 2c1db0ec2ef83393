"""MLP classifier of sub-sampled images (paper App. C, Table 4)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MLPClassifier(nn.Module):
    """784 → 256 → 128 → 128 → classes, LeakyReLU and 30% dropout after each hidden layer.

    Takes the zero-filled image (B, C, H, W) and returns logits (softmax lives
    in the cross-entropy loss).
    """

    def __init__(self, in_features: int = 784, hidden: Sequence[int] = (256, 128, 128), classes: int = 10,
                 dropout: float = 0.3):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        prev = in_features
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.LeakyReLU(), nn.Dropout(dropout)]
            prev = h
        layers.append(nn.Linear(prev, classes))
        self.net = nn.Sequential(*layers)
        self.in_features = in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
