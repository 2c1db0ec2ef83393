"""Coil combination for multi-coil k-space: one virtual coil for the single-coil model, RSS for the target.

Why two combinations (docs/design.md, "Multi-coil data"):

* The policy and the reconstruction are single-coil models, so a multi-coil slice is reduced to **one
  virtual coil by SVD coil compression**: the first principal component of the coil covariance, i.e. the
  unit-norm coil weights that keep the most k-space energy. It is a *linear* combination per k-space
  sample, so measuring a line of the virtual coil is exactly combining that line of the measured coils:
  a mask chosen on the virtual coil is a mask a scanner can play out. A sensitivity-weighted combination
  would need coil maps estimated from the (adaptive) measurement itself; SVD needs nothing but the data.
* The **root-sum-of-squares** (RSS) magnitude is what fastMRI and radiologists look at
  (``reconstruction_rss``), so it is the reference image reported beside the virtual coil's.
  ``|virtual coil| <= RSS`` pixel by pixel (Cauchy–Schwarz), with equality where the coil images are
  proportional to the weights.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError

__all__ = ["coil_compress", "rss", "virtual_coil"]


def coil_compress(kspace: np.ndarray, n_virtual: int = 1) -> np.ndarray:
    """SVD coil compression over the last axis: (…, coils) → (…, n_virtual).

    The virtual coils are the leading principal components of the coil covariance (the right singular
    vectors of the samples × coils matrix), so virtual coil 1 keeps the largest share of the energy.
    A linear combination per k-space sample, so it is the same in image space.
    """
    coils = kspace.shape[-1]
    if not 1 <= n_virtual <= coils:
        raise ConfigError(f"n_virtual must be in [1, {coils}], got {n_virtual}")
    flat = kspace.reshape(-1, coils)
    _, _, vh = np.linalg.svd(flat, full_matrices=False)
    return (flat @ vh.conj().T[:, :n_virtual]).reshape(*kspace.shape[:-1], n_virtual)


def virtual_coil(kspace: np.ndarray, coil_axis: int = 0) -> np.ndarray:
    """One SVD virtual coil of a multi-coil k-space slice, e.g. fastMRI's (coils, rows, cols) → (rows, cols)."""
    moved = np.moveaxis(kspace, coil_axis, -1)
    return coil_compress(moved, 1)[..., 0].astype(np.complex64)


def rss(coil_images: np.ndarray, coil_axis: int = 0) -> np.ndarray:
    """Root-sum-of-squares magnitude over the coil axis (float32)."""
    return np.sqrt((np.abs(coil_images) ** 2).sum(axis=coil_axis)).astype(np.float32)
