"""MoDL: model-based deep learning reconstruction for Cartesian MRI (Aggarwal et al., 2018; paper App. C).

x_{j+1} = argmin_x ‖A_m x − y‖² + λ‖x − D_w(x_j)‖², i.e. the linear system

    (A_mᴴ A_m + λ I) x = A_mᴴ y + λ z,   z = D_w(x_j),

solved by ``cg_iters`` steps of a differentiable conjugate gradient. D_w is a
residual CNN denoiser (4 × Conv-BN-ReLU with 32 channels + a 32→2 output
convolution, input added to the output). λ is learned (stored as log λ so it
stays positive). Weights are shared across unrolls, so the same network runs
with 1 unroll (pretraining) or 10 (fine-tuning).

The network never sees k-space directly: like every task in flowcs it gets the
zero-filled image ``A_mᴴ y`` and the mask image (``Task.predict(zero_filled,
mask_image)``); the column mask is read back from the mask image. With a soft
mask m the operator is ``A_m = diag(m)·F`` (the k-space operator multiplies by
m in both directions), so ``A_mᴴ A_m = Fᴴ diag(m²) F`` — consistent with the
zero-filled image the operator produced.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..errors import ConfigError
from ..metrics import nmse, psnr, ssim
from ..operators.fft import complex_abs, fft2c, ifft2c, to_complex, to_real
from .base import Task

__all__ = ["ResidualDenoiser", "MoDL", "MRIReconstructionTask", "conjugate_gradient", "column_mask",
           "normal_op", "mri_loss"]


def conjugate_gradient(
    apply_a: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    x0: torch.Tensor | None = None,
    iters: int = 8,
    eps: float = 1e-12,
) -> torch.Tensor:
    """Solve ``A x = b`` for a symmetric positive-definite ``A`` (one system per batch row).

    ``b`` is (B, ...) real; inner products run over all non-batch dims, so a complex
    image stored as 2 real channels is handled exactly (the real inner product of
    the pair equals Re⟨·,·⟩ of the complex vectors, and Fᴴ M F + λI is Hermitian).
    Fully differentiable (plain torch ops, a fixed number of iterations).
    """
    if iters < 1:
        raise ConfigError(f"conjugate gradient needs at least 1 iteration, got {iters}")
    dims = tuple(range(1, b.ndim))
    shape = (-1,) + (1,) * (b.ndim - 1)

    def dot(u, v):
        return (u * v).sum(dim=dims)

    x = torch.zeros_like(b) if x0 is None else x0
    r = b - apply_a(x) if x0 is not None else b
    p = r
    rs = dot(r, r)
    for _ in range(iters):
        ap = apply_a(p)
        alpha = rs / dot(p, ap).clamp_min(eps)
        x = x + alpha.view(shape) * p
        r = r - alpha.view(shape) * ap
        rs_new = dot(r, r)
        beta = rs_new / rs.clamp_min(eps)
        p = r + beta.view(shape) * p
        rs = rs_new
    return x


def column_mask(mask_image: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) map of sampled columns → (B, W) column mask (first row; columns are constant)."""
    if mask_image.ndim != 4:
        raise ConfigError(f"mask image must have shape (batch, 1, H, W), got {tuple(mask_image.shape)}")
    return mask_image[:, 0, 0, :]


def normal_op(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A_mᴴ A_m x = Fᴴ diag(m²) F x for a (B, W) column mask (soft or hard) and (B, 2, H, W) images."""
    k = fft2c(to_complex(x))
    w = (mask.to(x.dtype) ** 2)[:, None, :]
    return to_real(ifft2c(k * w))


class ResidualDenoiser(nn.Module):
    """D_w(x) = x + CNN(x): 4 × (Conv3×3 → BN → ReLU), 32 channels, then Conv3×3 32→2 (paper Table 4)."""

    def __init__(self, channels: int = 32, blocks: int = 4, in_channels: int = 2):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for _ in range(blocks):
            layers += [nn.Conv2d(c_in, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
            c_in = channels
        layers.append(nn.Conv2d(channels, in_channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class MoDL(nn.Module):
    """Unrolled MoDL with shared weights; ``forward(zero_filled, mask)`` with a (B, W) column mask."""

    def __init__(self, unrolls: int = 1, cg_iters: int = 8, channels: int = 32, blocks: int = 4,
                 lam_init: float = 0.05):
        super().__init__()
        if unrolls < 1:
            raise ConfigError(f"MoDL needs at least 1 unroll, got {unrolls}")
        if not lam_init > 0:
            raise ConfigError(f"MoDL λ must be positive, got {lam_init}")
        self.unrolls = int(unrolls)
        self.cg_iters = int(cg_iters)
        self.denoiser = ResidualDenoiser(channels, blocks)
        self.log_lam = nn.Parameter(torch.tensor(math.log(lam_init)))

    @property
    def lam(self) -> torch.Tensor:
        return self.log_lam.exp()

    def data_consistency(self, zero_filled: torch.Tensor, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Solve (AᴴA + λI) x = Aᴴy + λz by CG, warm-started at z."""
        lam = self.lam

        def apply_a(v):
            return normal_op(v, mask) + lam * v

        return conjugate_gradient(apply_a, zero_filled + lam * z, x0=z, iters=self.cg_iters)

    def forward(self, zero_filled: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if zero_filled.ndim != 4 or zero_filled.shape[1] != 2:
            raise ConfigError(f"MoDL expects complex images as (batch, 2, H, W), got {tuple(zero_filled.shape)}")
        if mask.shape != (zero_filled.shape[0], zero_filled.shape[-1]):
            raise ConfigError(f"MoDL expects a (batch, W) column mask of shape "
                              f"({zero_filled.shape[0]}, {zero_filled.shape[-1]}), got {tuple(mask.shape)}")
        x = zero_filled
        for _ in range(self.unrolls):
            x = self.data_consistency(zero_filled, self.denoiser(x), mask)
        return x


def mri_loss(pred: torch.Tensor, target: torch.Tensor, ssim_weight: float = 1.0) -> torch.Tensor:
    """Per-image L1 (on the 2 complex channels) + ssim_weight·(1 − SSIM of the magnitudes) → (B,).

    SSIM is :func:`flowcs.metrics.ssim` (fastMRI convention, data range = target magnitude max).
    """
    l1 = (pred - target).abs().flatten(1).mean(1)
    s = ssim(complex_abs(pred), complex_abs(target)).to(pred.dtype)
    return l1 + ssim_weight * (1.0 - s)


class MRIReconstructionTask(Task):
    """MoDL reconstruction as a flowcs task: loss L1 + (1 − SSIM), metric SSIM of magnitudes."""

    name = "modl"
    metric = "ssim"
    higher_is_better = True

    def __init__(self, model: MoDL, ssim_weight: float = 1.0):
        super().__init__(model)
        self.ssim_weight = ssim_weight

    def predict(self, zero_filled: torch.Tensor, mask_image: torch.Tensor) -> torch.Tensor:
        return self.model(zero_filled, column_mask(mask_image))

    def loss(self, pred, target, reduction="mean"):
        per = mri_loss(pred, target, self.ssim_weight)
        return per.mean() if reduction == "mean" else per

    def score(self, pred, target):
        return ssim(complex_abs(pred), complex_abs(target))

    @staticmethod
    def metrics(pred: torch.Tensor, target: torch.Tensor, data_range: torch.Tensor | None = None) -> dict:
        """Per-image SSIM / PSNR / NMSE of magnitudes (``data_range`` default: per-image target max)."""
        p, t = complex_abs(pred)[:, 0], complex_abs(target)[:, 0]
        return {"ssim": ssim(p, t, data_range), "psnr": psnr(p, t, data_range), "nmse": nmse(p, t)}

