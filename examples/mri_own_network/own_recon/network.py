"""The user's own reconstruction network: any ``nn.Module`` mapping (zero-filled image, mask) → image.

Nothing here knows about flowcs; it stands for a network you already have (an E2E-VarNet, a MoDL, a U-Net...).
"""

from __future__ import annotations

import torch
from torch import nn


class ResidualCNN(nn.Module):
    """A small residual CNN ``x̂ = zf + f([zf, mask])`` on complex images stored as 2 real channels.

    Dilated 3×3 convolutions (dilation 1, 2, 4, 8, …) give it a receptive field wide enough to undo the
    horizontal aliasing of column undersampling.
    """

    def __init__(self, width: int = 32, depth: int = 5):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), nn.ReLU()]
        for i in range(depth - 2):
            d = 2 ** (i + 1)
            layers += [nn.Conv2d(width, width, 3, padding=d, dilation=d), nn.ReLU()]
        layers.append(nn.Conv2d(width, 2, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, zero_filled: torch.Tensor, mask_image: torch.Tensor) -> torch.Tensor:
        return zero_filled + self.body(torch.cat([zero_filled, mask_image.to(zero_filled.dtype)], dim=1))
