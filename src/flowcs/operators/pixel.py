"""Pixel sub-sampling: each location is one pixel position, shared by all colour channels."""

from __future__ import annotations

import torch

from ..rng import randn_rows
from .base import Operator


class PixelOperator(Operator):
    """``y = m ⊙ x`` with one mask value per (row, column), broadcast over channels.

    Optional additive Gaussian measurement noise (``noise_std``, in image
    units) is applied to measured pixels only, and only when a generator is
    given or ``noisy=True`` is requested, so evaluation stays deterministic.
    """

    def __init__(self, channels: int, height: int, width: int, noise_std: float = 0.0):
        self.image_shape = (channels, height, width)
        self.noise_std = float(noise_std)

    @property
    def n_locations(self) -> int:
        return self.image_shape[1] * self.image_shape[2]

    def mask_to_image(self, mask: torch.Tensor) -> torch.Tensor:
        """(B, N) mask → (B, 1, H, W) map that broadcasts over channels."""
        self.check_mask(mask)
        _, h, w = self.image_shape
        return mask.reshape(mask.shape[0], 1, h, w)

    def measure(
        self, x: torch.Tensor, mask: torch.Tensor, noisy: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        self.check_image(x)
        self.check_mask(mask, x.shape[0])
        m = self.mask_to_image(mask).to(x.dtype)
        if noisy and self.noise_std > 0:
            noise = randn_rows(*x.shape, generator=generator, device=x.device).to(x.dtype)
            x = x + self.noise_std * noise
        return m * x

    def adjoint(self, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.check_mask(mask, y.shape[0])
        return self.mask_to_image(mask).to(y.dtype) * y
