"""Centred orthonormal 2-D FFT helpers (fastMRI convention) on real 2-channel tensors.

Complex images are stored as 2 real channels (real, imaginary) in dim -3, so
every network sees ordinary float tensors: (B, 2, H, W).
"""

from __future__ import annotations

import torch


def to_complex(x: torch.Tensor) -> torch.Tensor:
    """(…, 2, H, W) real → (…, H, W) complex."""
    if x.shape[-3] != 2:
        raise ValueError(f"expected 2 channels (real, imaginary) in dim -3, got shape {tuple(x.shape)}")
    return torch.complex(x[..., 0, :, :].contiguous(), x[..., 1, :, :].contiguous())


def to_real(z: torch.Tensor) -> torch.Tensor:
    """(…, H, W) complex → (…, 2, H, W) real."""
    return torch.stack([z.real, z.imag], dim=-3)


def fft2c(z: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal FFT of a complex (…, H, W) tensor: fftshift(fft2(ifftshift(z)))."""
    z = torch.fft.ifftshift(z, dim=(-2, -1))
    return torch.fft.fftshift(torch.fft.fft2(z, norm="ortho"), dim=(-2, -1))


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`fft2c` (also its adjoint: the transform is unitary)."""
    k = torch.fft.ifftshift(k, dim=(-2, -1))
    return torch.fft.fftshift(torch.fft.ifft2(k, norm="ortho"), dim=(-2, -1))


def complex_abs(x: torch.Tensor) -> torch.Tensor:
    """Magnitude of a (…, 2, H, W) real-pair tensor → (…, 1, H, W)."""
    return x.pow(2).sum(dim=-3, keepdim=True).sqrt()
