"""fastMRI ``.h5`` volumes (single- and multi-coil): validation, centre slices, image-space crop, lazy reads.

Official layouts (fastMRI, Zbontar et al. 2018):

* single-coil ``kspace``: complex64, shape (slices, rows, cols), e.g. (35, 640, 368) — fully sampled,
  centred (``image = fftshift(ifft2(ifftshift(kspace), norm="ortho"))``);
* multi-coil ``kspace``: complex64, shape (slices, coils, rows, cols), e.g. (16, 15, 640, 368); each slice
  is reduced to one SVD virtual coil (:mod:`flowcs.data.coils`: linear in k-space, so a mask chosen on it
  is a mask for the measured coils) and ``reconstruction_rss`` (slices, 320, 320), or the RSS computed
  from the coils, is the reference magnitude (:func:`read_rss`);
* ``ismrmrd_header``: the ISMRMRD XML header (bytes);
* ``reconstruction_esc`` / ``reconstruction_rss``: (slices, 320, 320) float32 magnitude targets;
* attributes ``acquisition``, ``max``, ``norm``, ``patient_id``.

What flowcs does with a volume (SPEC §6): keep the slices ``centre ± 10`` (centre = slices // 2,
21 slices, clipped to the volume), take each slice to image space with the centred orthonormal
inverse FFT, centre-crop it to size × size (fastMRI's ``center_crop``: start = (rows − size) // 2)
and hand that complex image on; the k-space operator re-FFTs it, so the sampled lines live on
the cropped image's k-space grid. A crop larger than the image is an error, never padding.

Everything a damaged or foreign file can do ends in a one-line :class:`DataError` that starts
with the file path: not HDF5 / truncated, a MATLAB file, no ``kspace``, wrong rank, a coil axis in the
wrong place, non-complex values, NaN/Inf values, a ``reconstruction_rss`` that does not match the
k-space, a crop larger than the image.

Reads are lazy and per slice. h5py handles are opened on first use *inside the process that reads*
(the known h5py + DataLoader problem: a handle opened in the parent and inherited by forked
workers leads to corrupt reads and memory growth), so :class:`FastMRISlices` is safe with
``num_workers > 0`` and pickles without open handles.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError, DataError
from ..operators.fft import ifft2c, to_real
from .coils import rss, virtual_coil

__all__ = [
    "SLICE_HALF_WIDTH",
    "VolumeInfo",
    "FastMRISlices",
    "center_crop",
    "center_slices",
    "check_finite",
    "find_volumes",
    "inspect_volume",
    "kspace_to_image",
    "map_volume_slices",
    "refuse_matlab",
    "read_rss",
    "read_slice",
    "read_volume_images",
    "slice_image",
    "slice_rss",
    "split_volumes",
]

#: slices kept on each side of the centre slice
SLICE_HALF_WIDTH = 10
H5_SUFFIXES = (".h5", ".hdf5")
#: more "coils" than this on an axis means that axis is an image axis (fastMRI has 4–32 coils)
MAX_COILS = 64
MIN_COLS = 16  # narrower multi-coil 'images' with more coils than columns are a coil axis stored last


@dataclass(frozen=True)
class VolumeInfo:
    path: Path
    n_slices: int
    rows: int
    cols: int
    attrs: dict = field(default_factory=dict)
    has_header: bool = False
    coils: int = 1
    rank: int = 3  # 3: single-coil (slices, rows, cols); 4: multi-coil (slices, coils, rows, cols)

    @property
    def multicoil(self) -> bool:
        return self.rank == 4


def refuse_matlab(path: Path) -> None:
    """A MATLAB file (v7.3 ones are HDF5 too) is named as the wrong format, not as a corrupt or foreign HDF5 file."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    if head == b"MATLAB":
        raise DataError(f"{path}: a MATLAB .mat file, not a fastMRI / ISMRMRD .h5 file (wrong format)")


def _open(path: Path) -> h5py.File:
    if not path.is_file():
        raise DataError(f"{path}: fastMRI file not found")
    refuse_matlab(path)
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: not a readable HDF5 file (truncated or corrupt: {msg[:160]})") from None


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[h5py.File]:
    """Open a volume; any low-level h5py failure on damaged metadata becomes one DataError naming the file."""
    try:
        with _open(path) as f:
            yield f
    except DataError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: corrupt HDF5 file ({type(exc).__name__}: {str(exc)[:120]})") from None


def _check_kspace(path: Path, f: h5py.File) -> h5py.Dataset:
    if "kspace" not in f:
        found = ", ".join(sorted(f.keys())[:8]) or "nothing"
        hint = " (an ISMRMRD raw-data file: read it with flowcs.data.ismrmrd_raw)" if "dataset" in f else ""
        raise DataError(f"{path}: no 'kspace' dataset (found: {found}); not a fastMRI file{hint}")
    ks = f["kspace"]
    if not isinstance(ks, h5py.Dataset):
        raise DataError(f"{path}: 'kspace' is a group, expected a (slices, [coils,] rows, cols) complex dataset")
    if ks.ndim not in (3, 4):
        raise DataError(f"{path}: 'kspace' has rank {ks.ndim} (shape {ks.shape}), expected 3 (slices, rows, cols) "
                        "or 4 (slices, coils, rows, cols)")
    if ks.dtype.kind != "c":  # before the layout checks: a real view's last axis of 2 is not a coil axis
        raise DataError(f"{path}: 'kspace' has dtype {ks.dtype}, expected complex values")
    # the coil axis last: more "coils" than any array has, or an image narrower than both 16 columns and the
    # coil count (a (slices, rows, cols, coils) file of a small image)
    if ks.ndim == 4 and ks.shape[3] < ks.shape[1] and (ks.shape[1] > MAX_COILS or ks.shape[3] < MIN_COLS):
        raise DataError(f"{path}: 'kspace' has shape {ks.shape}: the coil axis looks last; fastMRI multi-coil "
                        "k-space is (slices, coils, rows, cols)")
    if ks.ndim == 4 and ks.shape[1] > MAX_COILS:
        raise DataError(f"{path}: 'kspace' has shape {ks.shape}: {ks.shape[1]} coils is implausible; expected "
                        f"(slices, coils <= {MAX_COILS}, rows, cols)")
    if min(ks.shape) < 1:
        raise DataError(f"{path}: 'kspace' is empty (shape {ks.shape})")
    if "reconstruction_rss" in f:
        r = f["reconstruction_rss"]
        if not isinstance(r, h5py.Dataset) or r.ndim != 3 or r.shape[0] != ks.shape[0]:
            shape = getattr(r, "shape", "a group")
            raise DataError(f"{path}: 'reconstruction_rss' has shape {shape}, expected (slices={ks.shape[0]}, "
                            "height, width) to match 'kspace'")
    return ks


def _attrs(f: h5py.File) -> dict:
    out = {}
    for k, v in f.attrs.items():
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif isinstance(v, np.generic):
            v = v.item()
        elif isinstance(v, np.ndarray):
            v = v.tolist()
        out[k] = v
    return out


def inspect_volume(path: str | os.PathLike) -> VolumeInfo:
    """Open, validate the layout (not the values) and describe one volume."""
    path = Path(path)
    with _reading(path) as f:
        ks = _check_kspace(path, f)
        rows, cols = int(ks.shape[-2]), int(ks.shape[-1])
        return VolumeInfo(path, int(ks.shape[0]), rows, cols, _attrs(f), "ismrmrd_header" in f,
                          int(ks.shape[1]) if ks.ndim == 4 else 1, ks.ndim)


def center_slices(n_slices: int, half_width: int = SLICE_HALF_WIDTH) -> list[int]:
    """Indices ``centre − half_width … centre + half_width`` (centre = n // 2), clipped to the volume."""
    if n_slices < 1:
        raise ConfigError(f"a volume needs at least one slice, got {n_slices}")
    if half_width < 0:
        raise ConfigError(f"half_width must be >= 0, got {half_width}")
    c = n_slices // 2
    return list(range(max(0, c - half_width), min(n_slices, c + half_width + 1)))


def check_finite(path: Path | str, array: np.ndarray, what: str) -> np.ndarray:
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.isfinite(array).sum())
        raise DataError(f"{path}: {what} contains {bad} NaN/Inf value(s)")
    return array


def kspace_to_image(kspace: np.ndarray) -> np.ndarray:
    """Centred orthonormal inverse 2-D FFT of a complex (…, rows, cols) array (the flowcs convention)."""
    return ifft2c(torch.from_numpy(np.ascontiguousarray(kspace, dtype=np.complex64))).numpy()


def slice_image(kspace: np.ndarray) -> np.ndarray:
    """Complex (rows, cols) image of one slice: (rows, cols) single-coil, or (coils, rows, cols) → SVD virtual coil."""
    return kspace_to_image(virtual_coil(kspace, 0) if kspace.ndim == 3 else kspace)


def center_crop(image: np.ndarray, size: int, path: Path | str = "<array>") -> np.ndarray:
    """Central size × size crop of a (…, rows, cols) array; start = (n − size) // 2 (fastMRI's convention)."""
    rows, cols = image.shape[-2:]
    if size < 1:
        raise ConfigError(f"crop size must be positive, got {size}")
    if size > rows or size > cols:
        raise DataError(f"{path}: crop {size}x{size} is larger than the {rows}x{cols} image")
    r0, c0 = (rows - size) // 2, (cols - size) // 2
    return image[..., r0:r0 + size, c0:c0 + size]


def _read_kspace_slice(path: Path, ks: h5py.Dataset, index: int) -> np.ndarray:
    if not 0 <= index < ks.shape[0]:
        raise DataError(f"{path}: slice {index} out of range (volume has {ks.shape[0]} slices)")
    try:
        k = ks[index]
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: cannot read k-space slice {index} (truncated or corrupt file: {msg[:160]})") from None
    return check_finite(path, k, f"k-space slice {index}")


def read_slice(path: str | os.PathLike, index: int, size: int | None = None) -> np.ndarray:
    """One slice as a complex64 image (rows, cols), centre-cropped to size × size when ``size`` is given."""
    path = Path(path)
    with _reading(path) as f:
        ks = _check_kspace(path, f)
        img = slice_image(_read_kspace_slice(path, ks, index))
    return center_crop(img, size, path) if size else img


def map_volume_slices(path: str | os.PathLike, fn, half_width: int | None = SLICE_HALF_WIDTH,
                      size: int | None = None) -> tuple[list, list[int]]:
    """``[fn(kspace of slice i) for the selected slices]`` and their indices, reading each slice once.

    ``kspace`` is (rows, cols) or (coils, rows, cols); ``half_width=None`` keeps every slice; ``size`` checks
    first that a size × size crop fits. Every selected slice is checked for NaN/Inf as it is read.
    """
    path = Path(path)
    with _reading(path) as f:
        ks = _check_kspace(path, f)
        idx = list(range(ks.shape[0])) if half_width is None else center_slices(ks.shape[0], half_width)
        rows, cols = ks.shape[-2:]
        if size and (size > rows or size > cols):
            raise DataError(f"{path}: crop {size}x{size} is larger than the {rows}x{cols} image")
        return [fn(_read_kspace_slice(path, ks, i)) for i in idx], idx


def read_volume_images(path: str | os.PathLike, size: int | None = None,
                       half_width: int | None = SLICE_HALF_WIDTH) -> tuple[np.ndarray, list[int]]:
    """The centre slices of a volume as complex64 images (n, size, size) and their slice indices.

    ``half_width=None`` keeps every slice. Every selected slice is checked for NaN/Inf before anything
    is returned.
    """
    imgs, idx = map_volume_slices(path, slice_image, half_width, size)
    out = np.stack(imgs)
    return (center_crop(out, size, path) if size else out), idx


def slice_rss(kspace: np.ndarray) -> np.ndarray:
    """RSS magnitude of one slice's coil images (single-coil: the image magnitude), on the full grid."""
    image = kspace_to_image(kspace)
    return rss(image, 0) if kspace.ndim == 3 else np.abs(image).astype(np.float32)


def read_rss(path: str | os.PathLike, index: int, stored: bool = True) -> np.ndarray:
    """Reference magnitude of one slice: ``reconstruction_rss`` when the file has it and ``stored`` (fastMRI's
    320 × 320 crop), else the RSS of the coil images on the full grid (single-coil: the image magnitude)."""
    path = Path(path)
    with _reading(path) as f:
        ks = _check_kspace(path, f)
        k = _read_kspace_slice(path, ks, index)
        if stored and "reconstruction_rss" in f:
            return check_finite(path, np.asarray(f["reconstruction_rss"][index], np.float32), "reconstruction_rss")
    return slice_rss(k)


def find_volumes(folder: str | os.PathLike) -> list[Path]:
    """Sorted ``*.h5`` / ``*.hdf5`` files of a folder (error when there are none)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: fastMRI folder not found")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in H5_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"{folder}: no .h5 files found")
    return files


def split_volumes(files: Sequence[str | os.PathLike], val_fraction: float = 0.1, test_fraction: float = 0.1,
                  seed: int = 0) -> dict[str, list[Path]]:
    """Volume-level train/val/test split: every slice of a volume lands in the same set.

    Files are sorted by name and shuffled with ``seed`` (deterministic); each non-zero fraction gets at
    least one volume when there are enough volumes to keep one for training.
    """
    for frac, what in ((val_fraction, "val_fraction"), (test_fraction, "test_fraction")):
        if not 0 <= frac < 1:
            raise ConfigError(f"{what} {frac} must be in [0, 1)")
    if val_fraction + test_fraction >= 1:
        raise ConfigError(f"val_fraction + test_fraction = {val_fraction + test_fraction} leaves no training volumes")
    paths = sorted({Path(f) for f in files}, key=lambda p: p.name)
    if len({p.name for p in paths}) != len(paths):
        raise ConfigError("two volumes share a file name; splits are defined by file name")
    random.Random(seed).shuffle(paths)
    n = len(paths)
    n_test = int(round(test_fraction * n))
    n_val = int(round(val_fraction * n))
    if test_fraction > 0 and n_test == 0 and n - n_val >= 2:
        n_test = 1
    if val_fraction > 0 and n_val == 0 and n - n_test >= 2:
        n_val = 1
    if n - n_test - n_val < 1:
        raise DataError(f"only {n} volume(s): too few for a train/val/test split by volume")
    return {"test": sorted(paths[:n_test]), "val": sorted(paths[n_test:n_test + n_val]),
            "train": sorted(paths[n_test + n_val:])}


class FastMRISlices(Dataset):
    """Lazy dataset of the centre slices of several volumes, cropped to size × size (``size=None``: uncropped).

    ``ds[i]`` is a float32 (2, size, size) tensor (real, imaginary) of slice ``ds.slices[i]``; the
    layout of every file is validated up front (metadata only), the values on read. Each process
    opens its own read-only h5py handles on first access.
    """

    def __init__(self, files: Sequence[str | os.PathLike], size: int | None,
                 half_width: int | None = SLICE_HALF_WIDTH):
        self.files = [Path(f) for f in files]
        self.size = None if size is None else int(size)  # None: every slice on its own full grid
        self.slices: list[tuple[int, int]] = []  # (file index, slice index)
        for fi, path in enumerate(self.files):
            info = inspect_volume(path)
            if self.size and (self.size > info.rows or self.size > info.cols):
                raise DataError(f"{path}: crop {self.size}x{self.size} is larger than the "
                                f"{info.rows}x{info.cols} image")
            idx = range(info.n_slices) if half_width is None else center_slices(info.n_slices, half_width)
            self.slices += [(fi, s) for s in idx]
        self._handles: dict[int, h5py.File] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.slices)

    def _dataset(self, fi: int) -> h5py.Dataset:
        if os.getpid() != self._pid:  # forked worker: never touch the parent's handles
            self._handles, self._pid = {}, os.getpid()
        if fi not in self._handles:
            self._handles[fi] = _open(self.files[fi])
        return _check_kspace(self.files[fi], self._handles[fi])

    def image(self, i: int) -> np.ndarray:
        """Complex64 (size, size) image of item ``i``."""
        fi, s = self.slices[i]
        k = _read_kspace_slice(self.files[fi], self._dataset(fi), s)
        img = slice_image(k)
        return center_crop(img, self.size, self.files[fi]) if self.size else img

    def __getitem__(self, i: int) -> torch.Tensor:
        return to_real(torch.from_numpy(np.ascontiguousarray(self.image(i))))

    def volume_of(self, i: int) -> str:
        return self.files[self.slices[i][0]].name

    def close(self) -> None:
        for h in self._handles.values():
            h.close()
        self._handles = {}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass
