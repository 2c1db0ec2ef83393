"""Image utilities shared by every image experiment: decoding, cropping, resizing, folders, tensors.

Conventions: images handled with PIL are ``numpy`` ``uint8`` arrays of shape
``(H, W, 3)`` (RGB) or ``(N, H, W, 3)``; model-side images are float tensors
``(N, C, H, W)`` in [0, 1]. Every problem with an input file is a one-line
:class:`~flowcs.errors.DataError` that names the file.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
RESAMPLE = ("nearest", "bilinear", "bicubic", "lanczos", "box")


def _pil():
    try:
        from PIL import Image
    except ImportError as exc:  # Pillow comes with matplotlib; say so if it is missing anyway
        raise DataError(f"reading images needs Pillow (pip install pillow): {exc}") from None
    return Image


def _resample(name: str):
    image = _pil()
    if name not in RESAMPLE:
        raise ConfigError(f"unknown resampling filter {name!r}; choose one of {', '.join(RESAMPLE)}")
    return getattr(image.Resampling, name.upper())


def _to_rgb_array(img, where: str) -> np.ndarray:
    if img.mode != "RGB":
        raise DataError(f"{where}: not an RGB image (mode {img.mode!r}); convert it to 8-bit RGB first")
    return np.asarray(img, dtype=np.uint8).copy()


def decode_rgb(data: bytes, where: str) -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG...) into an ``(H, W, 3)`` uint8 RGB array.

    ``where`` names the source in error messages (a file, or ``archive[entry]``).
    """
    image = _pil()
    try:
        with image.open(io.BytesIO(data)) as img:
            img.load()
            return _to_rgb_array(img, where)
    except DataError:
        raise
    except Exception as exc:  # PIL raises many types (UnidentifiedImageError, OSError, SyntaxError...)
        raise DataError(f"{where}: unreadable image ({type(exc).__name__}: {_first_line(exc)})") from None


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read one image file as ``(H, W, 3)`` uint8 RGB; unreadable or non-RGB files are a DataError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read image file ({exc.strerror or exc})") from None
    return decode_rgb(data, str(path))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else "no details"


def center_crop_box(height: int, width: int, crop_h: int, crop_w: int) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` of the central ``crop_h`` × ``crop_w`` window.

    An odd margin puts the extra pixel at the right / bottom (as :func:`flowcs.data.pad_images` does).
    """
    if not (0 < crop_h <= height and 0 < crop_w <= width):
        raise ConfigError(f"crop {crop_h}x{crop_w} does not fit in an image of {height}x{width}")
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return left, top, left + crop_w, top + crop_h


def crop_center(x: torch.Tensor | np.ndarray, height: int, width: int | None = None, channels_last: bool = False):
    """Central crop of the spatial dims: ``(..., H, W)`` (or ``(..., H, W, C)`` with ``channels_last``).

    The inverse of :func:`flowcs.data.pad_images` (28 → 32 → 28 is the identity).
    """
    width = height if width is None else width
    hd, wd = (-3, -2) if channels_last else (-2, -1)
    h, w = x.shape[hd], x.shape[wd]
    left, top, right, bottom = center_crop_box(h, w, height, width)
    if channels_last:
        return x[..., top:bottom, left:right, :]
    return x[..., top:bottom, left:right]


def resize(img: np.ndarray, size: int | tuple[int, int], resample: str = "bicubic") -> np.ndarray:
    """Resize an ``(H, W, 3)`` uint8 image to ``size`` (``int`` = square, or ``(height, width)``) with PIL.

    PIL's filters are antialiased when shrinking, so downscaling does not alias.
    """
    image = _pil()
    h, w = (size, size) if isinstance(size, int) else size
    if h < 1 or w < 1:
        raise ConfigError(f"resize target must be positive, got {h}x{w}")
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ConfigError(f"resize expects an (H, W, 3) uint8 image, got {img.shape} {img.dtype}")
    if img.shape[:2] == (h, w):
        return img.copy()
    return np.asarray(image.fromarray(img).resize((w, h), _resample(resample)), dtype=np.uint8).copy()


def center_square_resize(img: np.ndarray, size: int, resample: str = "bicubic") -> np.ndarray:
    """Central square crop (side = the shorter side) then resize to ``size`` × ``size``."""
    side = min(img.shape[0], img.shape[1])
    return resize(crop_center(img, side, side, channels_last=True), size, resample)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W, C)`` or ``(H, W, C)`` → float32 ``(N, C, H, W)`` / ``(C, H, W)`` in [0, 1]."""
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise ConfigError(f"to_tensor expects uint8 (N, H, W, C) or (H, W, C), got {images.shape} {images.dtype}")
    t = torch.from_numpy(np.ascontiguousarray(images))
    t = t.permute(2, 0, 1) if t.ndim == 3 else t.permute(0, 3, 1, 2)
    return t.float().div_(255.0).contiguous()


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Inverse of :func:`to_tensor`: float ``(N, C, H, W)`` / ``(C, H, W)`` in [0, 1] → uint8 channels-last."""
    t = images.detach().cpu().clamp(0, 1).mul(255.0).round().to(torch.uint8)
    t = t.permute(1, 2, 0) if t.ndim == 3 else t.permute(0, 2, 3, 1)
    return t.contiguous().numpy()


def list_images(folder: str | os.PathLike, suffixes: Iterable[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Image files (by suffix) directly in ``folder``, sorted by name; an empty or missing folder is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: image folder not found")
    suffixes = tuple(s.lower() for s in suffixes)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise DataError(f"{folder}: no image files ({', '.join(suffixes)}) in this folder")
    return files


def load_image_folder(
    folder: str | os.PathLike,
    names: Iterable[str] | None = None,
    size: int | None = None,
    resample: str = "bicubic",
    same_size: bool = True,
) -> tuple[np.ndarray, list[str]]:
    """Load RGB images from a folder → ``(N, S, S, 3)`` uint8 and their file names.

    ``names``: the files to read (default: every image file, sorted). ``size``: central square crop then
    resize to ``size`` × ``size`` (default: keep the native size, which then must be the same for all).
    With ``same_size`` (default) every raw image must have the size of the first one: a stray image of
    another size usually means the wrong folder or a half-processed data set. Errors name the file.
    """
    folder = Path(folder)
    if names is None:
        paths = list_images(folder)
    else:
        paths = [folder / n for n in names]
        if not paths:
            raise DataError(f"{folder}: no image files requested")
        if not folder.is_dir():
            raise DataError(f"{folder}: image folder not found")
    out: list[np.ndarray] = []
    first: tuple[int, int] | None = None
    for p in paths:
        if not p.is_file():
            raise DataError(f"{p}: image file not found")
        img = read_rgb(p)
        if first is None:
            first = img.shape[:2]
        elif (same_size or size is None) and img.shape[:2] != first:
            raise DataError(f"{p}: image is {img.shape[0]}x{img.shape[1]} but {paths[0].name} is "
                            f"{first[0]}x{first[1]} (mixed image sizes in {folder})")
        out.append(img if size is None else center_square_resize(img, size, resample))
    return np.stack(out), [p.name for p in paths]


__all__ = [
    "IMAGE_SUFFIXES",
    "center_crop_box",
    "center_square_resize",
    "crop_center",
    "decode_rgb",
    "list_images",
    "load_image_folder",
    "read_rgb",
    "resize",
    "to_tensor",
    "to_uint8",
]
