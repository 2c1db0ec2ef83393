"""MNIST from the official IDX files (or the documented approximate fallback).

Everything a corrupt, truncated or wrong file can do ends in a one-line
:class:`~flowcs.errors.DataError` that starts with the file path, instead of a
reshape error from numpy or silently wrong pixels.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError

#: md5 of the official gzipped files (yann.lecun.com release, as mirrored by torchvision).
MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

#: Training images rebuilt from PNGs (within ±1 grey level); used only when the official file is absent.
APPROX_TRAIN_NPZ = "mnist_train_from_png_approx.npz"

_SPLIT_PREFIX = {"train": "train", "test": "t10k"}
_IDX_UINT8 = 0x08
_IDX_OTHER_TYPES = {0x09: "int8", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32", 0x0E: "float64"}
_DOWNLOAD_HINT = "run `flowcs data download mnist --to {folder}` or pass the folder holding the files"


def file_md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def read_idx(path: str | os.PathLike, verify_checksum: bool = True) -> np.ndarray:
    """Read a uint8 IDX file (gzipped if the name ends in ``.gz``) into an array of its dims.

    Official ``.gz`` names are md5-checked (when ``verify_checksum``) because a
    file that merely parses may still be a different or damaged copy.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: IDX file not found")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read IDX file ({exc.strerror or exc})") from None
    expected_md5 = MNIST_MD5.get(path.name)
    if verify_checksum and expected_md5 is not None:
        actual = file_md5(raw)
        if actual != expected_md5:
            raise DataError(
                f"{path}: md5 {actual} differs from the official MNIST release ({expected_md5}); "
                "the file is damaged or not the official one (re-download it, or pass "
                "verify_checksum=False / --set data.verify_checksum=false to skip the check)"
            )
    if path.name.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt or truncated gzip file ({exc})") from None
    return _parse_idx(path, raw)


def _parse_idx(path: Path, data: bytes) -> np.ndarray:
    if len(data) < 4:
        raise DataError(f"{path}: truncated IDX file (only {len(data)} bytes, no complete header)")
    if data[0] != 0 or data[1] != 0:
        raise DataError(
            f"{path}: not an IDX file (bad magic number 0x{data[:4].hex()}; first two bytes must be zero)"
        )
    code, ndim = data[2], data[3]
    if code != _IDX_UINT8:
        kind = _IDX_OTHER_TYPES.get(code, "unknown")
        raise DataError(
            f"{path}: unsupported IDX data type code 0x{code:02x} ({kind}); only 0x08 (uint8) is supported"
        )
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX file (header of {ndim} dims needs {header} bytes)")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64))
    found = len(data) - header
    if found < expected:
        raise DataError(f"{path}: truncated IDX file (expected {expected} bytes of data, found {found})")
    if found > expected:
        raise DataError(
            f"{path}: IDX file has {found - expected} trailing bytes (expected {expected} bytes of data "
            f"for dims {dims}, found {found})"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


@dataclass
class MnistSplit:
    """One MNIST split: ``images`` uint8 (n, 28, 28), ``labels`` int64 (n,), and where they came from."""

    images: torch.Tensor
    labels: torch.Tensor
    source: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _first_existing(folder: Path, names: list[str]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def _idx_source(path: Path, verify_checksum: bool) -> str:
    checked = verify_checksum and path.name in MNIST_MD5
    return f"official IDX {path.name} ({'md5 verified' if checked else 'md5 not checked'})"


def _read_approx_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = {"images", "labels"} - set(npz.files)
            if missing:
                raise DataError(f"{path}: npz lacks key(s) {sorted(missing)} (has {sorted(npz.files)})")
            images, labels = npz["images"], npz["labels"]
    except DataError:
        raise
    except Exception as exc:  # zip/pickle/format errors have many types; all mean "unreadable"
        raise DataError(f"{path}: corrupt or unreadable npz file ({type(exc).__name__}: {exc})") from None
    if images.dtype != np.uint8:
        raise DataError(f"{path}: images must be uint8, found {images.dtype}")
    return images, labels


def load_mnist(folder: str | os.PathLike, split: str, verify_checksum: bool = True) -> MnistSplit:
    """Load the ``"train"`` or ``"test"`` split from ``folder`` (e.g. ``<data_root>/mnist``).

    Official IDX files (``.gz`` or un-gzipped) are preferred. Only for the
    training images, when no official file is present, the approximate
    ``mnist_train_from_png_approx.npz`` is used, and ``source`` says so: results
    on it are not byte-exact MNIST.
    """
    if split not in _SPLIT_PREFIX:
        raise ConfigError(f"MNIST split must be 'train' or 'test', got {split!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: MNIST folder not found; {_DOWNLOAD_HINT.format(folder=folder)}")
    prefix = _SPLIT_PREFIX[split]
    img_name, lbl_name = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
    img_path = _first_existing(folder, [f"{img_name}.gz", img_name])
    lbl_path = _first_existing(folder, [f"{lbl_name}.gz", lbl_name])
    npz_path = folder / APPROX_TRAIN_NPZ if split == "train" and img_path is None else None
    if npz_path is not None and not npz_path.is_file():
        npz_path = None

    missing = []
    if img_path is None and npz_path is None:
        missing.append(f"{img_name}.gz" + (f" (or {APPROX_TRAIN_NPZ})" if split == "train" else ""))
    if lbl_path is None and npz_path is None:
        missing.append(f"{lbl_name}.gz")
    if missing:
        raise DataError(
            f"{folder}: missing MNIST {split} file(s): {', '.join(missing)}; "
            + _DOWNLOAD_HINT.format(folder=folder)
        )

    npz_labels = None
    if img_path is not None:
        images = read_idx(img_path, verify_checksum)
        img_source = _idx_source(img_path, verify_checksum)
        where = img_path
    else:
        assert npz_path is not None
        images, npz_labels = _read_approx_npz(npz_path)
        img_source = f"approximate npz {APPROX_TRAIN_NPZ} (within ±1 grey level of official)"
        where = npz_path
    if lbl_path is not None:
        labels = read_idx(lbl_path, verify_checksum)
        lbl_source, lbl_where = _idx_source(lbl_path, verify_checksum), lbl_path
    else:
        labels, lbl_source, lbl_where = npz_labels, f"npz {APPROX_TRAIN_NPZ}", npz_path

    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{where}: MNIST images must have shape (n, 28, 28), found {images.shape}")
    if labels.ndim != 1:
        raise DataError(f"{lbl_where}: MNIST labels must be one-dimensional, found shape {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{lbl_where}: {labels.shape[0]} labels but {images.shape[0]} images in {Path(where).name}"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{lbl_where}: labels must lie in 0..9, found {labels.min()}..{labels.max()}")
    return MnistSplit(
        images=torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)),
        labels=torch.from_numpy(labels.astype(np.int64)),
        source=f"images: {img_source}; labels: {lbl_source}",
    )


def train_val_split(n: int, val_size: int = 5000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic (seeded, device-independent) split of ``range(n)`` into sorted train / val indices."""
    if not 0 <= val_size < n:
        raise ConfigError(f"val_size must lie in [0, n) = [0, {n}), got {val_size}")
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=generator)
    val_idx, _ = torch.sort(perm[:val_size])
    train_idx, _ = torch.sort(perm[val_size:])
    return train_idx, val_idx


def load_mnist_split(folder: str | os.PathLike, split: str, val_size: int = 5000,
                     verify_checksum: bool = True) -> MnistSplit:
    """``train``, ``val`` or ``test``: the validation images are held out of the official training set.

    ``val`` = ``val_size`` images chosen by :func:`train_val_split` (seed 0, sorted), ``train`` = the rest, so the
    two never share an image; ``test`` is the official test set, untouched.
    """
    if split not in ("train", "val", "test"):
        raise ConfigError(f"MNIST split must be 'train', 'val' or 'test', got {split!r}")
    if split == "test":
        return load_mnist(folder, "test", verify_checksum)
    full = load_mnist(folder, "train", verify_checksum)
    train_idx, val_idx = train_val_split(len(full), val_size)
    idx = train_idx if split == "train" else val_idx
    return MnistSplit(full.images[idx], full.labels[idx],
                      f"{full.source}; {split}: {len(idx)} of the {len(full)} training images "
                      f"(validation = {val_size} held out by a seeded permutation)")


def pad_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad the last two dims centrally to ``size`` x ``size`` (28 -> 32 adds 2 px per side).

    Power-of-two sizes suit U-Nets with several down-sampling stages; an odd
    margin puts the extra pixel at the bottom / right.
    """
    if images.ndim < 2:
        raise ConfigError(f"pad_images needs (..., H, W) images, got shape {tuple(images.shape)}")
    h, w = images.shape[-2:]
    if size < h or size < w:
        raise ConfigError(f"pad size {size} is smaller than the images ({h}x{w})")
    top, left = (size - h) // 2, (size - w) // 2
    out = images.new_zeros((*images.shape[:-2], size, size))
    out[..., top : top + h, left : left + w] = images
    return out
