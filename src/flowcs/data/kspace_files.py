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
from .fastmri import (
    SLICE_HALF_WIDTH,
    center_slices,
    find_volumes,
    inspect_volume,
    map_volume_slices,
    refuse_matlab,
    slice_image,
    slice_rss,
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


def read_kspace_images(path: str | os.PathLike, half_width: int | None = SLICE_HALF_WIDTH) -> KSpaceImages:
    """The selected slices of a fastMRI or ISMRMRD file as complex images on the file's own grid (multi-coil: with
    their RSS images); each slice's k-space is read once.

    ``half_width=None`` keeps every slice; otherwise the centre ``± half_width`` slices.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    refuse_matlab(path)

    def one(k: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, int]:  # (image, RSS of >1 coils or None, coils)
        coils = k.shape[0] if k.ndim == 3 else 1
        return slice_image(k), (slice_rss(k) if coils > 1 else None), coils

    if is_ismrmrd(path):
        raw = read_ismrmrd(path)
        n = raw.kspace.shape[0]
        idx = list(range(n)) if half_width is None else center_slices(n, half_width)
        per, fmt = [one(raw.kspace[i]) for i in idx], "ismrmrd"
    else:
        multicoil = inspect_volume(path).multicoil
        per, idx = map_volume_slices(path, one, half_width)  # raw multi-coil slices are not kept in memory
        fmt = "fastmri-multicoil" if multicoil else "fastmri-singlecoil"
    images, rss_images, coils = zip(*per)
    return KSpaceImages(path, fmt, np.stack(images), idx, int(coils[0]),
                        None if rss_images[0] is None else np.stack(rss_images))


def find_kspace_files(path: str | os.PathLike) -> list[Path]:
    """``path`` itself, or the sorted ``*.h5`` / ``*.hdf5`` files of a folder (error when there are none)."""
    path = Path(path)
    if path.is_dir():
        return find_volumes(path)
    if not path.exists():
        raise DataError(f"{path}: file or folder not found")
    return [path]
