"""Cartesian k-space sampling of vertical lines (phase-encode columns).

``A_m x = M F x`` with F the centred orthonormal 2-D FFT and M the column mask;
``A_m^H y = F^H M y``. Images and k-space are (B, 2, H, W) real pairs; a
location is one column of width 1 (N = W).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..rng import randn_rows
from .base import Operator
from .fft import fft2c, ifft2c, to_complex, to_real


class KSpaceLineOperator(Operator):
    """Vertical-line Cartesian sampling with optional channel-specific Gaussian noise.

    ``noise_pct`` (percent): when ``measure(..., noisy=True)``, Gaussian noise
    is added independently to the real and imaginary k-space channels with
    std = noise_pct/100 × that channel's std over the sampled entries of each
    example (paper App. C).
    """

    def __init__(self, height: int, width: int, noise_pct: float = 0.0):
        self.image_shape = (2, height, width)
        self.noise_pct = float(noise_pct)

    @property
    def n_locations(self) -> int:
        return self.image_shape[2]

    def mask_to_image(self, mask: torch.Tensor) -> torch.Tensor:
        self.check_mask(mask)
        _, h, w = self.image_shape
        return mask.reshape(mask.shape[0], 1, 1, w).expand(-1, 1, h, w)

    def measure(self, x: torch.Tensor, mask: torch.Tensor, noisy: bool = False,
                generator: torch.Generator | None = None) -> torch.Tensor:
        self.check_image(x)
        self.check_mask(mask, x.shape[0])
        k = to_real(fft2c(to_complex(x)))
        m = self.mask_to_image(mask).to(k.dtype)
        if noisy and self.noise_pct > 0:
            std = k.flatten(2).std(dim=2)[:, :, None, None]  # per example and channel
            noise = randn_rows(*k.shape, generator=generator, device=k.device).to(k.dtype)
            k = k + (self.noise_pct / 100.0) * std * noise
        return m * k

    def adjoint(self, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.check_mask(mask, y.shape[0])
        if y.ndim != 4 or y.shape[1] != 2:
            raise ConfigError(f"k-space must have shape (batch, 2, H, W), got {tuple(y.shape)}")
        m = self.mask_to_image(mask).to(y.dtype)
        return to_real(ifft2c(to_complex(m * y)))

    def normal(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """A^H A x = F^H M F x (used by MoDL's conjugate-gradient data consistency)."""
        return self.adjoint(self.measure(x, mask), mask)


def low_frequency_band(width: int, fraction: float) -> torch.Tensor:
    """Bool (W,) mask of the ``round(fraction·W)`` central columns (at least 1).

    Same placement as fastMRI's mask functions: the band starts at
    ``(W − n + 1) // 2``, so it always contains the DC column ``W // 2``.
    """
    if not 0 < fraction <= 1:
        raise ConfigError(f"low-frequency fraction {fraction} must be in (0, 1]")
    n = max(1, int(round(fraction * width)))
    start = (width - n + 1) // 2
    band = torch.zeros(width, dtype=torch.bool)
    band[start:start + n] = True
    return band
