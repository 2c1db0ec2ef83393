"""A new acquisition geometry in user code: single 2-D points of Cartesian k-space.

flowcs ships Cartesian *lines* (:class:`flowcs.operators.KSpaceLineOperator`). Here every k-space sample
``(ky, kx)`` of an H×W grid is its own location (N = H·W), as in 2-D random / Poisson-disc point sampling.
The whole geometry is this one :class:`~flowcs.operators.Operator` subclass: ``n_locations``, ``measure``
(``M ⊙ F x``), ``adjoint`` (``F^H (M ⊙ y)``) and ``mask_to_image``; everything else (gate, policies, target
estimators, training loop) works through that interface unchanged.
"""

from __future__ import annotations

import torch

from flowcs.errors import ConfigError
from flowcs.operators import Operator
from flowcs.operators.fft import fft2c, ifft2c, to_complex, to_real


class KSpacePointOperator(Operator):
    """Sampling of individual k-space points of an H×W grid; images are (B, 2, H, W) (real, imaginary)."""

    def __init__(self, height: int, width: int):
        if height < 2 or width < 2:
            raise ConfigError(f"k-space grid must be at least 2x2, got {height}x{width}")
        self.image_shape = (2, int(height), int(width))

    @property
    def n_locations(self) -> int:
        return self.image_shape[1] * self.image_shape[2]

    def mask_to_image(self, mask: torch.Tensor) -> torch.Tensor:
        self.check_mask(mask)
        _, h, w = self.image_shape
        return mask.reshape(mask.shape[0], 1, h, w)

    def measure(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.check_image(x)
        self.check_mask(mask, x.shape[0])
        k = to_real(fft2c(to_complex(x)))
        return self.mask_to_image(mask).to(k.dtype) * k

    def adjoint(self, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.check_mask(mask, y.shape[0])
        if y.ndim != 4 or tuple(y.shape[1:]) != self.image_shape:
            raise ConfigError(f"k-space must have shape (batch, {', '.join(map(str, self.image_shape))}), "
                              f"got {tuple(y.shape)}")
        return to_real(ifft2c(to_complex(self.mask_to_image(mask).to(y.dtype) * y)))


def central_block(height: int, width: int, size: int) -> torch.Tensor:
    """Bool (H·W,) mask of the ``size``×``size`` block around the DC sample (the first measurement)."""
    if not 1 <= size <= min(height, width):
        raise ConfigError(f"central block size {size} must be between 1 and {min(height, width)}")
    m = torch.zeros(height, width, dtype=torch.bool)
    r0, c0 = height // 2 - size // 2, width // 2 - size // 2
    m[r0:r0 + size, c0:c0 + size] = True
    return m.flatten()
