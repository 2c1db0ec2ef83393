"""One entry point for the raw k-space files ``flowcs mri mask`` and the mask function read.

Formats are recognised by content, not by suffix: fastMRI single-coil and multi-coil ``.h5`` (a ``kspace``
dataset), ISMRMRD raw data (an HDF5 ``/dataset`` with an XML header), and a MATLAB ``.mat`` named as the
wrong format. Every slice comes back as one complex image on the file's own grid (multi-coil: the SVD
virtual coil, :mod:`flowcs.data.coils`), so masks can be chosen on that grid.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .coils import rss
from .fastmri import (
    SLICE_HALF_WIDTH,
    center_slices,
    inspect_volume,
    kspace_to_image,
    read_rss,
    read_volume_images,
    slice_image,
)
from .ismrmrd_raw import is_ismrmrd, read_ismrmrd

__all__ = ["KSpaceImages", "find_kspace_files", "read_kspace_images"]


@dataclass
class KSpaceImages:
    path: Path
    format: str  # fastmri-singlecoil | fastmri-multicoil | ismrmrd
    images: np.ndarray  # (n, rows, cols) complex64, one per selected slice
    slices: list[int]
    coils: int
    rss: np.ndarray | None = None  # (n, rows, cols) float32 RSS of the coil images (multi-coil files only)

    @property
    def cols(self) -> int:
        return int(self.images.shape[-1])


def _check_not_matlab(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with open(path, "rb") as fh:
        if fh.read(6) == b"MATLAB":
            raise DataError(f"{path}: a MATLAB .mat file, not a fastMRI / ISMRMRD .h5 file (wrong format)")


def read_kspace_images(path: str | os.PathLike, half_width: int | None = SLICE_HALF_WIDTH) -> KSpaceImages:
    """The selected slices of a fastMRI or ISMRMRD file as complex images on the file's own grid.

    ``half_width=None`` keeps every slice; otherwise the centre ``± half_width`` slices.
    """
    path = Path(path)
    _check_not_matlab(path)
    if is_ismrmrd(path):
        raw = read_ismrmrd(path)
        idx = list(range(raw.kspace.shape[0])) if half_width is None else center_slices(raw.kspace.shape[0],
                                                                                         half_width)
        images = np.stack([slice_image(raw.kspace[i]) for i in idx])
        coils = int(raw.kspace.shape[1])
        rss_images = np.stack([rss(kspace_to_image(raw.kspace[i]), 0) for i in idx]) if coils > 1 else None
        return KSpaceImages(path, "ismrmrd", images, idx, coils, rss_images)
    info = inspect_volume(path)
    images, idx = read_volume_images(path, None, half_width)
    fmt = "fastmri-multicoil" if info.multicoil else "fastmri-singlecoil"
    rss_images = np.stack([read_rss(path, i, stored=False) for i in idx]) if info.multicoil else None
    return KSpaceImages(path, fmt, images, idx, info.coils, rss_images)


def find_kspace_files(path: str | os.PathLike) -> list[Path]:
    """``path`` itself, or the sorted ``*.h5`` files of a folder (error when there are none)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".h5", ".hdf5") and p.is_file())
        if not files:
            raise DataError(f"{path}: no .h5 files in this folder")
        return files
    if not path.exists():
        raise DataError(f"{path}: file or folder not found")
    return [path]
