"""Real MR data beside fastMRI: MATLAB ``.mat`` images / k-space, BART ``.cfl``, and the MRI data-set builder.

Readers
-------
* :func:`read_kellman` — ISMRM 2012 fat–water challenge files (``PKdata*.mat``): ``data.images`` is
  complex (rows, cols, slice=1, coil=1, echoes), coil-combined, image domain. Each echo is one image;
  its centred orthonormal FFT is a realistic single-coil Cartesian k-space.
* :func:`read_espirit_kspace` + :func:`coil_compress` + :func:`espirit_image` — the 8-coil ESPIRiT brain
  k-space (``DATA``: readout × phase-encode × coil). Coils are compressed to one virtual coil by SVD
  (the first principal component of the coil covariance: the virtual coil that keeps the most energy),
  and the zero-padded phase-encode columns are dropped so the image has its native 320 × 168 grid.
* :func:`read_cfl` / :func:`write_cfl` — BART ``.cfl`` (raw complex64, column-major) + ``.hdr`` (dims).

Geometry and normalisation (used identically for training, evaluation and ``flowcs mri mask``)
--------------------------------------------------------------------------------------------
* :func:`crop_or_pad` brings a complex image to size × size **in image space**, per axis: if the axis is
  longer, keep the central ``size`` pixels (start = (n − size) // 2, fastMRI's centre crop); if it is
  shorter, zero-pad symmetrically (``(size − n) // 2`` zeros before, the rest after). Kellman images
  (256 × 192 or 192 × 256 or 256 × 256) therefore become e.g. 208 × 208 by cropping the 256-axis and
  padding the 192-axis with 8 zero columns/rows on each side; at 128 × 128 both axes are cropped to
  the central field of view (heart and surroundings). Images keep their native orientation (no
  transposition): k-space lines are the columns of the image as stored.
* :func:`lf_scale` — per-image normalisation that a scanner can compute *before* the policy runs: the
  image is divided by the maximum magnitude of the zero-filled reconstruction from the central
  low-frequency band alone (the band the LF-first protocol measures first). After it the LF image
  peaks at exactly 1 and the full image at about 1. Metrics use the target's own maximum as data
  range, so they do not depend on this scale.

Data-set builder
----------------
:func:`build_mri_splits` returns train/val/test :class:`ImageSet` s. Kellman files are split **by
file** (all echoes of a file in one set; never by echo); the ESPIRiT brain slice is an extra test
image. fastMRI folders are split **by volume** (:func:`flowcs.data.fastmri.split_volumes`) and read
lazily per slice.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io
import torch

from ..errors import ConfigError, DataError
from ..operators.fft import fft2c, ifft2c
from ..operators.kspace import low_frequency_band
from .coils import coil_compress
from .fastmri import FastMRISlices, check_finite, find_volumes, split_volumes

__all__ = [
    "ImageSet",
    "KellmanScan",
    "build_mri_splits",
    "coil_compress",
    "crop_or_pad",
    "espirit_image",
    "lf_scale",
    "load_mat",
    "random_view",
    "read_cfl",
    "read_espirit_kspace",
    "read_kellman",
    "write_cfl",
]


# ----------------------------------------------------------------------------- .mat readers


def load_mat(path: str | os.PathLike) -> dict:
    """``scipy.io.loadmat`` with one-line errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: .mat file not found")
    try:
        return scipy.io.loadmat(path)
    except NotImplementedError:
        raise DataError(f"{path}: MATLAB v7.3 (HDF5) .mat files are not supported; save with -v7") from None
    except Exception as exc:  # scipy raises ValueError/TypeError/OSError/zlib errors on damaged files
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: unreadable .mat file (truncated or corrupt: {msg[:160]})") from None


@dataclass
class KellmanScan:
    path: Path
    images: np.ndarray  # complex64 (echoes, rows, cols)
    te: list[float] = field(default_factory=list)
    field_strength: float | None = None


def read_kellman(path: str | os.PathLike) -> KellmanScan:
    """One ``PKdata*.mat`` file → complex64 images (echoes, rows, cols)."""
    path = Path(path)
    mat = load_mat(path)
    try:
        data = mat["data"][0, 0]
        images = np.asarray(data["images"])
    except (KeyError, IndexError, ValueError, TypeError):
        raise DataError(f"{path}: no 'data.images' struct field (not a Kellman fat-water file)") from None
    if images.ndim != 5 or images.shape[2] != 1 or images.shape[3] != 1:
        raise DataError(f"{path}: data.images has shape {images.shape}, expected (rows, cols, 1, 1, echoes)")
    if not np.iscomplexobj(images):
        raise DataError(f"{path}: data.images is {images.dtype}, expected complex images")
    out = np.ascontiguousarray(np.moveaxis(images[:, :, 0, 0, :], -1, 0).astype(np.complex64))
    check_finite(path, out, "data.images")
    te = np.asarray(data["TE"]).ravel().tolist() if "TE" in data.dtype.names else []
    fs = float(np.asarray(data["FieldStrength"]).ravel()[0]) if "FieldStrength" in data.dtype.names else None
    return KellmanScan(path, out, [float(t) for t in te], fs)


def read_espirit_kspace(path: str | os.PathLike, key: str = "DATA") -> np.ndarray:
    """Multi-coil Cartesian k-space (readout, phase-encode, coils) from a ``.mat`` file."""
    path = Path(path)
    mat = load_mat(path)
    if key not in mat:
        found = ", ".join(k for k in mat if not k.startswith("__")) or "nothing"
        raise DataError(f"{path}: no '{key}' variable (found: {found})")
    k = np.asarray(mat[key])
    if k.ndim != 3 or not np.iscomplexobj(k):
        raise DataError(f"{path}: '{key}' has shape {k.shape} and dtype {k.dtype}, "
                        "expected complex (readout, phase-encode, coils)")
    return check_finite(path, k, f"'{key}'")


def espirit_image(path: str | os.PathLike, key: str = "DATA", drop_zero_columns: bool = True) -> np.ndarray:
    """Single virtual-coil complex64 image of the ESPIRiT brain k-space (rows = readout, cols = phase-encode).

    With ``drop_zero_columns`` the all-zero phase-encode columns (zero padding) are removed first, so the
    image is on the acquired grid (320 × 168 for ``brain_alias_8ch.mat``).
    """
    k = read_espirit_kspace(path, key)
    if drop_zero_columns:
        used = np.flatnonzero(np.abs(k).sum(axis=(0, 2)) > 0)
        if used.size == 0:
            raise DataError(f"{path}: k-space is all zeros")
        k = k[:, used[0]:used[-1] + 1]
    v = coil_compress(k, 1)[..., 0]
    return ifft2c(torch.from_numpy(np.ascontiguousarray(v.astype(np.complex64)))).numpy()


# ----------------------------------------------------------------------------- BART .cfl / .hdr


def _cfl_paths(base: str | os.PathLike) -> tuple[Path, Path]:
    base = Path(base)
    if base.suffix in (".cfl", ".hdr"):
        base = base.with_suffix("")
    return base.with_suffix(".cfl"), base.with_suffix(".hdr")


def read_cfl(base: str | os.PathLike) -> np.ndarray:
    """BART array: dims from ``<base>.hdr`` (line after ``# Dimensions``), complex64 column-major data."""
    cfl, hdr = _cfl_paths(base)
    for p in (hdr, cfl):
        if not p.is_file():
            raise DataError(f"{p}: BART file not found")
    lines = hdr.read_text(errors="replace").splitlines()
    try:
        i = next(j for j, ln in enumerate(lines) if ln.strip().startswith("# Dimensions"))
        dims = [int(d) for d in lines[i + 1].split()]
    except (StopIteration, IndexError, ValueError):
        raise DataError(f"{hdr}: no valid '# Dimensions' line (not a BART header)") from None
    if not dims or any(d < 1 for d in dims):
        raise DataError(f"{hdr}: invalid dimensions {dims}")
    n = int(np.prod(dims))
    size = cfl.stat().st_size
    if size != 8 * n:
        raise DataError(f"{cfl}: {size} bytes, but the header's dims {dims} need {8 * n} (truncated or mismatched)")
    data = np.fromfile(cfl, dtype=np.complex64, count=n)
    return check_finite(cfl, data, "complex data").reshape(dims, order="F")


def write_cfl(base: str | os.PathLike, array: np.ndarray) -> None:
    """Write a BART ``.cfl/.hdr`` pair (dims padded to 16 like BART does)."""
    from ..io import atomic_write

    cfl, hdr = _cfl_paths(base)
    arr = np.asarray(array, dtype=np.complex64)
    dims = list(arr.shape) + [1] * max(0, 16 - arr.ndim)
    with atomic_write(cfl, "wb") as fh:
        fh.write(np.asfortranarray(arr).tobytes(order="F"))
    with atomic_write(hdr, "w") as fh:
        fh.write("# Dimensions\n" + " ".join(map(str, dims)) + " \n")


# ----------------------------------------------------------------------------- geometry & normalisation


def _place(n: int, size: int, shift: int) -> tuple[int, int, int]:
    """(source start, destination start, length) along one axis for crop (n ≥ size) or pad (n < size)."""
    if n >= size:
        start = min(max((n - size) // 2 + shift, 0), n - size)
        return start, 0, size
    dst = min(max((size - n) // 2 + shift, 0), size - n)
    return 0, dst, n


def crop_or_pad(image: torch.Tensor, size: int, shift: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """(…, rows, cols) → (…, size, size): centre crop of long axes, symmetric zero-pad of short axes.

    ``shift`` moves the crop window (or the placement in the padded canvas) by (dy, dx) pixels, clipped
    so the window stays inside the image (data augmentation); (0, 0) is the deterministic centre.
    """
    if size < 1:
        raise ConfigError(f"crop size must be positive, got {size}")
    rows, cols = image.shape[-2:]
    sr, dr, lr = _place(rows, size, shift[0])
    sc, dc, lc = _place(cols, size, shift[1])
    out = image.new_zeros(*image.shape[:-2], size, size)
    out[..., dr:dr + lr, dc:dc + lc] = image[..., sr:sr + lr, sc:sc + lc]
    return out


def lf_scale(images: torch.Tensor, lf_fraction: float, eps: float = 1e-12) -> torch.Tensor:
    """(B,) max magnitude of each complex image's low-frequency-band zero-filled reconstruction."""
    if not images.is_complex():
        raise ConfigError("lf_scale expects complex images (B, H, W)")
    band = low_frequency_band(images.shape[-1], lf_fraction).to(images.device)
    lf = ifft2c(fft2c(images) * band)
    return lf.abs().flatten(1).amax(1).clamp_min(eps)


def random_view(image: torch.Tensor, size: int, generator: torch.Generator, *, flips: bool = True,
                transpose: bool = False, max_shift: int = 0, random_phase: bool = True) -> torch.Tensor:
    """Augmented size × size complex view of one (rows, cols) complex image.

    Random horizontal/vertical flips, optional transposition, a random shift of the crop window of
    up to ``max_shift`` pixels per axis, and a random global phase e^{iφ}.
    """
    def coin() -> bool:
        return bool(torch.rand(1, generator=generator) < 0.5)

    img = image
    if transpose and coin():
        img = img.transpose(-2, -1)
    if flips and coin():
        img = img.flip(-1)
    if flips and coin():
        img = img.flip(-2)
    shift = (0, 0)
    if max_shift > 0:
        s = torch.randint(-max_shift, max_shift + 1, (2,), generator=generator)
        shift = (int(s[0]), int(s[1]))
    out = crop_or_pad(img, size, shift)
    if random_phase:
        phi = float(torch.rand(1, generator=generator)) * 2 * np.pi
        out = out * complex(np.cos(phi), np.sin(phi))
    return out


# ----------------------------------------------------------------------------- data sets


class ImageSet:
    """Complex MR images with their volume (file) names; ``image(i)`` → complex64 tensor (rows, cols).

    In-memory sets keep native sizes (cropped/padded later, so augmentation can shift the window);
    fastMRI sets read lazily and are already centre-cropped by the reader.
    """

    def __init__(self, images: Sequence[torch.Tensor] | None = None, names: Sequence[str] = (),
                 volumes: Sequence[str] = (), lazy: FastMRISlices | None = None):
        self._images = list(images or [])
        self._lazy = lazy
        self.names = list(names)
        self.volumes = list(volumes)
        n = len(lazy) if lazy is not None else len(self._images)
        if len(self.names) != n or len(self.volumes) != n:
            raise ConfigError("ImageSet: names/volumes must have one entry per image")

    def __len__(self) -> int:
        return len(self.names)

    def image(self, i: int) -> torch.Tensor:
        if self._lazy is not None:
            return torch.from_numpy(np.ascontiguousarray(self._lazy.image(i)))
        return self._images[i]

    def describe(self) -> dict:
        vols = sorted(set(self.volumes))
        return {"images": len(self), "volumes": vols}


def _kellman_set(paths: list[Path]) -> ImageSet:
    imgs, names, vols = [], [], []
    for p in paths:
        scan = read_kellman(p)
        for e in range(scan.images.shape[0]):
            imgs.append(torch.from_numpy(scan.images[e]))
            names.append(f"{p.name}#echo{e + 1}")
            vols.append(p.name)
    return ImageSet(imgs, names, vols)


def build_mri_splits(
    source: str,
    data_root: Path,
    size: int | None,
    *,
    kellman_dir: str = "mri_complex_kellman_fatwater",
    val_files: Sequence[str] = (),
    test_files: Sequence[str] = (),
    brain: str | None = None,
    fastmri_dir: str | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    half_width: int | None = 10,
    splits: Sequence[str] = ("train", "val", "test"),
) -> dict[str, ImageSet]:
    """Train/val/test image sets (only the requested ``splits`` are loaded).

    ``source="kellman"``: ``<data_root>/<kellman_dir>/*.mat`` split by file — ``test_files`` and
    ``val_files`` by name, the rest trains; the ESPIRiT slice ``brain`` (relative to ``data_root``)
    is appended to the test set. ``source="fastmri"``: ``*.h5`` in ``fastmri_dir`` split by volume.
    """
    def resolve(p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else data_root / q

    out: dict[str, ImageSet] = {}
    if source == "kellman":
        folder = resolve(kellman_dir)
        if not folder.is_dir():
            raise DataError(f"{folder}: Kellman data folder not found (the PKdata*.mat files of the ISMRM 2012 "
                            "fat-water challenge; see docs/data.md) — or train on your own fastMRI .h5 folder: "
                            "--set data.source=fastmri --set data.fastmri_dir=DIR")
        files = sorted(folder.glob("*.mat"), key=lambda p: p.name)
        names = {p.name for p in files}
        for f in [*val_files, *test_files]:
            if f not in names:
                raise DataError(f"{folder / f}: split file not found in the Kellman folder")
        overlap = set(val_files) & set(test_files)
        if overlap:
            raise ConfigError(f"files in both val and test: {', '.join(sorted(overlap))}")
        by_split = {"val": [p for p in files if p.name in set(val_files)],
                    "test": [p for p in files if p.name in set(test_files)]}
        by_split["train"] = [p for p in files if p.name not in set(val_files) | set(test_files)]
        if not by_split["train"]:
            raise DataError(f"{folder}: no training files left after the val/test split")
        for s in splits:
            out[s] = _kellman_set(by_split[s])
        if "test" in splits and brain:
            path = resolve(brain)
            img = torch.from_numpy(espirit_image(path))
            t = out["test"]
            out["test"] = ImageSet([*t._images, img], [*t.names, path.name], [*t.volumes, path.name])
        return out
    if source == "fastmri":
        if not fastmri_dir:
            raise ConfigError("data.source 'fastmri' needs data.fastmri_dir (a folder of single-coil .h5 files)")
        vols = split_volumes(find_volumes(resolve(fastmri_dir)), val_fraction, test_fraction, split_seed)
        for s in splits:
            lazy = FastMRISlices(vols[s], size, half_width)
            out[s] = ImageSet(names=[f"{lazy.volume_of(i)}#slice{lazy.slices[i][1]}" for i in range(len(lazy))],
                              volumes=[lazy.volume_of(i) for i in range(len(lazy))], lazy=lazy)
            if len(out[s]) == 0 and s != "val":
                raise DataError(f"{resolve(fastmri_dir)}: the {s} split is empty")
        return out
    raise ConfigError(f"unknown MRI data source {source!r}; choose 'kellman' or 'fastmri'")
