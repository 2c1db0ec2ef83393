"""Synthetic MR volumes written in the exact fastMRI single-coil ``.h5`` layout.

For tests and for users without fastMRI access (its data-use agreement cannot be signed here).
Each volume is a stack of 2-D cross-sections of a 3-D Shepp–Logan-like phantom — the classic
ten ellipses (Shepp & Logan 1974, the "modified" contrasts of Toft) turned into ellipsoids, jittered
per volume — multiplied by a smooth random phase (a random low-order polynomial in x, y, z), so
the images are complex like real MR data. K-space is the centred orthonormal FFT of each slice.

Written like an official file: ``kspace`` complex64 (slices, rows, cols), ``ismrmrd_header``
(ISMRMRD XML with the matrix sizes), ``reconstruction_esc`` (slices, 320, 320) float32 magnitudes
of the central crop (smaller when the image is smaller), attributes ``acquisition``, ``max``,
``norm``, ``patient_id``. Files are written atomically (temporary file, then rename).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import torch

from ..errors import ConfigError
from ..io import atomic_write
from ..operators.fft import fft2c

__all__ = ["phantom_volume", "write_fastmri_volume", "write_synthetic_dataset", "SHEPP_LOGAN"]

#: (intensity, semi-axis a, semi-axis b, centre x, centre y, angle in degrees) — modified Shepp–Logan
SHEPP_LOGAN = np.array([
    [1.0, 0.69, 0.92, 0.0, 0.0, 0],
    [-0.8, 0.6624, 0.8740, 0.0, -0.0184, 0],
    [-0.2, 0.1100, 0.3100, 0.22, 0.0, -18],
    [-0.2, 0.1600, 0.4100, -0.22, 0.0, 18],
    [0.1, 0.2100, 0.2500, 0.0, 0.35, 0],
    [0.1, 0.0460, 0.0460, 0.0, 0.1, 0],
    [0.1, 0.0460, 0.0460, 0.0, -0.1, 0],
    [0.1, 0.0460, 0.0230, -0.08, -0.605, 0],
    [0.1, 0.0230, 0.0230, 0.0, -0.606, 0],
    [0.1, 0.0230, 0.0460, 0.06, -0.605, 0],
])

_HEADER = """<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">
  <acquisitionSystemInformation><systemVendor>flowcs-synthetic</systemVendor></acquisitionSystemInformation>
  <encoding>
    <encodedSpace><matrixSize><x>{rows}</x><y>{cols}</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>{rows_mm}</x><y>{cols_mm}</y><z>3</z></fieldOfView_mm></encodedSpace>
    <reconSpace><matrixSize><x>{recon}</x><y>{recon}</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>{recon_mm}</x><y>{recon_mm}</y><z>3</z></fieldOfView_mm></reconSpace>
    <encodingLimits><kspace_encoding_step_1><minimum>0</minimum><maximum>{cols_m1}</maximum>
      <center>{center}</center></kspace_encoding_step_1></encodingLimits>
    <trajectory>cartesian</trajectory>
  </encoding>
</ismrmrdHeader>
"""


def phantom_volume(n_slices: int, rows: int, cols: int, seed: int = 0, object_size: float = 0.25) -> np.ndarray:
    """Complex64 (n_slices, rows, cols) images of a jittered 3-D Shepp–Logan phantom with smooth phase.

    ``object_size`` is the phantom's half-height as a fraction of ``rows`` (fastMRI knees fill about
    the central half of the 640-row readout-oversampled image).
    """
    if n_slices < 1 or rows < 8 or cols < 8:
        raise ConfigError(f"synthetic volume needs >= 1 slice and >= 8x8 pixels, got ({n_slices}, {rows}, {cols})")
    rng = np.random.default_rng(seed)
    ell = SHEPP_LOGAN.copy()
    ell[:, 1:3] *= rng.uniform(0.85, 1.15, size=(len(ell), 2))
    ell[:, 3:5] += rng.normal(0, 0.02, size=(len(ell), 2))
    ell[:, 5] += rng.normal(0, 5, size=len(ell))
    ell[2:, 0] *= rng.uniform(0.6, 1.6, size=len(ell) - 2)
    c_depth = rng.uniform(0.7, 1.0, size=len(ell))  # ellipsoid semi-axis along the slice direction
    scale = 2 * object_size * rows
    y = (np.arange(rows) - rows / 2) / (scale / 2)
    x = (np.arange(cols) - cols / 2) / (scale / 2) * rng.uniform(0.9, 1.1)
    yy, xx = np.meshgrid(y, x, indexing="ij")
    zs = np.linspace(-0.6, 0.6, n_slices) if n_slices > 1 else np.zeros(1)
    poly = rng.normal(0, 1.0, size=6)
    vol = np.zeros((n_slices, rows, cols), dtype=np.complex64)
    for s, z in enumerate(zs):
        img = np.zeros((rows, cols))
        for (val, a, b, x0, y0, ang), c in zip(ell, c_depth):
            shrink = 1.0 - (z / c) ** 2
            if shrink <= 0:
                continue
            t = np.deg2rad(ang)
            xr = (xx - x0) * np.cos(t) + (yy - y0) * np.sin(t)
            yr = -(xx - x0) * np.sin(t) + (yy - y0) * np.cos(t)
            img[(xr / a) ** 2 + (yr / b) ** 2 <= shrink] += val
        img = np.clip(img, 0, None) * (1.0 + 0.05 * rng.normal())
        phase = poly[0] + poly[1] * xx + poly[2] * yy + poly[3] * z + poly[4] * xx * yy + poly[5] * (xx**2 - yy**2)
        vol[s] = (img * np.exp(1j * phase)).astype(np.complex64)
    return vol


def write_fastmri_volume(
    path: str | os.PathLike,
    images: np.ndarray | None = None,
    *,
    n_slices: int = 8,
    rows: int = 640,
    cols: int = 368,
    seed: int = 0,
    acquisition: str = "CORPD_FBK",
    patient_id: str | None = None,
    kspace: np.ndarray | None = None,
) -> Path:
    """Write one volume in the fastMRI single-coil layout; returns the path.

    ``images`` (complex, (slices, rows, cols)) defaults to :func:`phantom_volume`; ``kspace`` overrides
    the FFT of the images entirely (tests use it to plant NaNs).
    """
    path = Path(path)
    if images is None and kspace is None:
        images = phantom_volume(n_slices, rows, cols, seed)
    if kspace is None:
        kspace = fft2c(torch.from_numpy(np.ascontiguousarray(images, dtype=np.complex64))).numpy()
        mag = np.abs(images)
    else:
        from .fastmri import kspace_to_image

        mag = np.abs(kspace_to_image(np.nan_to_num(kspace, nan=0.0, posinf=0.0, neginf=0.0)))
    kspace = np.asarray(kspace, dtype=np.complex64)
    n, r, c = kspace.shape
    recon = min(320, r, c)
    r0, c0 = (r - recon) // 2, (c - recon) // 2
    esc = mag[:, r0:r0 + recon, c0:c0 + recon].astype(np.float32)
    header = _HEADER.format(rows=r, cols=c, rows_mm=r * 0.5, cols_mm=c * 0.5, recon=recon, recon_mm=recon * 0.5,
                            cols_m1=c - 1, center=c // 2)
    with atomic_write(path, "w+b") as fh, h5py.File(fh, "w") as f:
        f.create_dataset("kspace", data=kspace)
        f.create_dataset("ismrmrd_header", data=np.bytes_(header.encode("utf-8")))
        f.create_dataset("reconstruction_esc", data=esc)
        f.attrs["acquisition"] = acquisition
        f.attrs["max"] = float(esc.max()) if esc.size else 0.0
        f.attrs["norm"] = float(np.linalg.norm(esc))
        f.attrs["patient_id"] = patient_id or f"synthetic-{seed:06d}"
    return path


def write_synthetic_dataset(folder: str | os.PathLike, n_volumes: int, *, n_slices: int = 8, rows: int = 640,
                            cols: int = 368, seed: int = 0, names: Sequence[str] | None = None) -> list[Path]:
    """``n_volumes`` synthetic fastMRI files ``file_synth_XXXX.h5`` in ``folder`` (created)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(names) if names is not None else [f"file_synth_{seed + i:04d}.h5" for i in range(n_volumes)]
    return [write_fastmri_volume(folder / names[i], n_slices=n_slices, rows=rows, cols=cols, seed=seed + i)
            for i in range(n_volumes)]
