"""The measurement-operator interface shared by pixel and k-space sensing.

An operator knows its N measurable *locations* and maps a (B, N) mask (bool
or soft float) to the measurement and back to image space. Policies only see
locations; the operator decides what a location means physically.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from ..errors import ConfigError


class Operator(ABC):
    """Linear, mask-parameterised measurement operator ``y = A_m x``.

    Subclasses implement :meth:`measure` (``A``) and :meth:`adjoint` (``A^H``);
    :meth:`zero_filled` is the naive reconstruction fed to task models.
    """

    #: image shape (C, H, W) this operator acts on
    image_shape: tuple[int, int, int]

    @property
    @abstractmethod
    def n_locations(self) -> int:
        """Number of locations a mask selects among."""

    @abstractmethod
    def measure(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Forward operator ``A_m x`` (measurements, zero where not sampled)."""

    @abstractmethod
    def adjoint(self, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Adjoint ``A_m^H y`` back to image space."""

    @abstractmethod
    def mask_to_image(self, mask: torch.Tensor) -> torch.Tensor:
        """(B, N) mask → (B, 1, H, W) map of what was sampled, for networks that take the mask as input."""

    def zero_filled(self, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Zero-filled reconstruction (the adjoint for masking operators)."""
        return self.adjoint(y, mask)

    # deepinv-style aliases
    def A(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # noqa: N802
        return self.measure(x, mask)

    def A_adjoint(self, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # noqa: N802
        return self.adjoint(y, mask)

    def check_image(self, x: torch.Tensor) -> torch.Tensor:
        """Raise a clear error when ``x`` is not a (B, C, H, W) batch of this operator's shape."""
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.image_shape):
            raise ConfigError(
                f"{type(self).__name__}: expected images of shape (batch, {', '.join(map(str, self.image_shape))}), "
                f"got {tuple(x.shape)}"
            )
        return x

    def check_mask(self, mask: torch.Tensor, batch: int | None = None) -> torch.Tensor:
        if mask.ndim != 2 or mask.shape[1] != self.n_locations or (batch is not None and mask.shape[0] != batch):
            want = f"({batch if batch is not None else 'batch'}, {self.n_locations})"
            raise ConfigError(f"{type(self).__name__}: expected a mask of shape {want}, got {tuple(mask.shape)}")
        return mask
