"""Face images: CelebA as users have it, and the 10,000 real CelebA faces in ``shared/data``.

Two sources, one result (:class:`FaceSplit`: uint8 ``(N, S, S, 3)`` RGB + image ids + a protocol string
that travels with every number computed on it):

* ``celeba`` — a user's CelebA download: ``<root>/img_align_celeba/*.jpg`` (178×218) and
  ``<root>/list_eval_partition.txt`` (the standard split: 0 train, 1 val, 2 test). Central square crop
  (178×178), then resize to ``image_size`` (128 for the paper's protocol).
* ``shared-10k`` — ``<data_root>/faces_celeba_10k/celeba_10k_89x109_jpeg.npz``: CelebA ids 000001–010000 at
  half resolution (89×109) as the original JPEG bytes. Decoded here, central 89×89 crop, resize to
  ``image_size`` (64: no upsampling). Split by image id: 000001–008500 train, 008501–009000 validation,
  009001–010000 test (all of
  these ids belong to the official *train* partition, which is why the split is ours).

Decoded arrays are cached under the user cache dir (never next to the read-only source), keyed by the
source file's content / listing, the split and the size; a corrupt cache entry is rebuilt.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..io import atomic_write
from .images import center_square_resize, decode_rgb, load_image_folder, to_tensor
from .root import user_cache_dir

SHARED_DIR = "faces_celeba_10k"
SHARED_NPZ = "celeba_10k_89x109_jpeg.npz"
SHARED_TRAIN = 9000  # ids 000001-009000 for training and validation, the rest test
SHARED_VAL = 500  # the last 500 of those (008501-009000) are the validation split
CELEBA_IMAGES = "img_align_celeba"
CELEBA_PARTITION = "list_eval_partition.txt"
PARTITIONS = {"train": 0, "val": 1, "test": 2}
SOURCES = ("shared-10k", "celeba")
FIXED_TEST_SUBSET = 100


@dataclass
class FaceSplit:
    """One split of a face data set: ``images`` uint8 ``(N, S, S, 3)``, ``names`` (file names = ids)."""

    images: np.ndarray
    names: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.names)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    def tensor(self) -> torch.Tensor:
        """float32 ``(N, 3, S, S)`` in [0, 1]."""
        return to_tensor(self.images)


def fixed_subset(names: list[str], n: int = FIXED_TEST_SUBSET) -> torch.Tensor:
    """Indices of the fixed evaluation subset: the ``n`` lowest image ids of the split (paper: 100 images)."""
    if len(names) < n:
        raise ConfigError(f"the fixed test subset needs {n} images but the split has only {len(names)}")
    order = sorted(range(len(names)), key=lambda i: names[i])
    return torch.tensor(sorted(order[:n]), dtype=torch.long)


# ----------------------------------------------------------------------------- cache


def _cache_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / f"{key}.npz"


def _cached(cache_dir: Path | None, key: str, build) -> tuple[np.ndarray, list[str]]:
    if cache_dir is None:
        return build()
    path = _cache_path(cache_dir, key)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return z["images"], [str(n) for n in z["names"]]
        except Exception as exc:  # a truncated/corrupt cache is not the user's data: rebuild it
            warnings.warn(f"{path}: unusable cache entry ({type(exc).__name__}); rebuilding", stacklevel=2)
    images, names = build()
    try:
        with atomic_write(path, "wb") as fh:
            np.savez(fh, images=images, names=np.array(names))
    except OSError as exc:  # a read-only home must not stop the run
        warnings.warn(f"{path}: cannot write the decoded-image cache ({exc.strerror or exc})", stacklevel=2)
    return images, names


def default_cache_dir() -> Path:
    return user_cache_dir() / "faces"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- shared 10k


def decode_jpeg_npz(path: str | os.PathLike, image_size: int, resample: str = "bicubic",
                    indices: list[int] | None = None) -> tuple[np.ndarray, list[str]]:
    """Decode the packed JPEG archive (keys ``jpeg_bytes``, ``offsets``, ``names``) → central square crop → resize."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = {"jpeg_bytes", "offsets", "names"} - set(z.files)
            if missing:
                raise DataError(f"{path}: npz lacks key(s) {sorted(missing)} (has {sorted(z.files)})")
            blob, offsets, names = z["jpeg_bytes"], z["offsets"].astype(np.int64), [str(n) for n in z["names"]]
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: corrupt or unreadable npz file ({type(exc).__name__}: {exc})") from None
    if offsets.ndim != 1 or offsets.shape[0] != len(names) + 1 or offsets[0] != 0 or offsets[-1] != blob.size \
            or np.any(np.diff(offsets) <= 0):
        raise DataError(f"{path}: inconsistent offsets ({offsets.shape[0]} offsets for {len(names)} names, "
                        f"{blob.size} bytes)")
    chosen = range(len(names)) if indices is None else indices
    out = np.empty((len(chosen), image_size, image_size, 3), dtype=np.uint8)
    for j, i in enumerate(chosen):
        img = decode_rgb(blob[offsets[i]:offsets[i + 1]].tobytes(), f"{path}[{names[i]}]")
        out[j] = center_square_resize(img, image_size, resample)
    return out, [names[i] for i in chosen]


def _shared_split(image_id: int) -> str:
    if image_id > SHARED_TRAIN:
        return "test"
    return "val" if image_id > SHARED_TRAIN - SHARED_VAL else "train"


def load_shared_10k(data_root: str | os.PathLike, split: str, image_size: int = 64,
                    cache_dir: Path | None = None, resample: str = "bicubic") -> FaceSplit:
    """The 10k half-resolution CelebA faces (see module docstring); ``split`` is ``train`` (ids up to 8,500),
    ``val`` (8,501-9,000) or ``test`` (9,001-10,000)."""
    if split not in ("train", "val", "test"):
        raise ConfigError(f"the shared 10k face set has splits 'train', 'val' and 'test' (by image id), not "
                          f"{split!r}")
    path = Path(data_root) / SHARED_DIR / SHARED_NPZ
    if not path.is_file():
        raise DataError(f"{path}: face archive not found (expected the shared CelebA 10k set; "
                        f"or use data.source=celeba with a CelebA folder)")
    key = f"celeba10k-{_sha256(path)[:16]}-{image_size}-{resample}"
    images, names = _cached(cache_dir, key, lambda: decode_jpeg_npz(path, image_size, resample))
    ids = [int(Path(n).stem) for n in names]
    keep = [i for i, v in enumerate(ids) if _shared_split(v) == split]
    if not keep:
        raise DataError(f"{path}: no images in the {split} split (ids {min(ids)}-{max(ids)})")
    scale = "upsampled" if image_size > 89 else "resized"
    first, last = names[keep[0]], names[keep[-1]]
    source = (f"CelebA aligned faces at half resolution 89x109 ({SHARED_DIR}/{SHARED_NPZ}), JPEG bytes decoded, "
              f"central 89x89 crop, {resample} {scale} to {image_size}x{image_size} RGB; {split} split by image id "
              f"({len(keep)} images, {first}-{last})")
    return FaceSplit(images[keep], [names[i] for i in keep], source)


# ----------------------------------------------------------------------------- user CelebA


def read_partition(path: Path) -> dict[str, int]:
    """``list_eval_partition.txt``: one ``<file> <0|1|2>`` per line → {file: partition}."""
    if not path.is_file():
        raise DataError(f"{path}: CelebA partition file not found (expected {CELEBA_PARTITION} beside "
                        f"{CELEBA_IMAGES}/)")
    out: dict[str, int] = {}
    for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise DataError(f"{path}:{lineno}: expected '<image file> <0|1|2>', got {line.strip()[:80]!r}")
        out[parts[0]] = int(parts[1])
    if not out:
        raise DataError(f"{path}: empty partition file")
    return out


def load_celeba(root: str | os.PathLike, split: str, image_size: int = 128, limit: int | None = None,
                cache_dir: Path | None = None, resample: str = "bicubic") -> FaceSplit:
    """A user's CelebA: ``root/img_align_celeba/`` + ``root/list_eval_partition.txt`` (standard split).

    Central 178×178 crop, resize to ``image_size``; ``limit`` keeps the first images of the split (by id).
    """
    root = Path(root)
    if split not in PARTITIONS:
        raise ConfigError(f"CelebA split must be one of {', '.join(PARTITIONS)}, got {split!r}")
    folder = root / CELEBA_IMAGES
    if not folder.is_dir():
        raise DataError(f"{folder}: CelebA image folder not found (expected {CELEBA_IMAGES}/ under {root})")
    part_path = root / CELEBA_PARTITION
    partition = read_partition(part_path)
    names = sorted(n for n, p in partition.items() if p == PARTITIONS[split])
    if limit is not None:
        names = names[:limit]
    if not names:
        raise DataError(f"{part_path}: no images in the {split} partition")
    stamp = hashlib.sha256(f"{root.resolve()}|{part_path.stat().st_mtime_ns}|{','.join(names)}".encode())
    key = f"celeba-{stamp.hexdigest()[:16]}-{split}-{image_size}-{resample}"
    images, names = _cached(cache_dir, key, lambda: load_image_folder(folder, names, image_size, resample))
    source = (f"CelebA img_align_celeba 178x218 ({root}), central 178x178 crop, {resample} resize to "
              f"{image_size}x{image_size} RGB; standard {split} partition ({len(names)} images, "
              f"{names[0]}-{names[-1]})")
    return FaceSplit(images, names, source)


def load_faces(data_root: str | os.PathLike, split: str, source: str = "shared-10k", image_size: int = 64,
               path: str | os.PathLike | None = None, limit: int | None = None, cache: bool = True) -> FaceSplit:
    """Entry point used by the experiments: ``source`` = ``shared-10k`` | ``celeba``.

    ``path`` (celeba only) is the folder holding ``img_align_celeba/``; default ``<data_root>/celeba``.
    """
    if source not in SOURCES:
        raise ConfigError(f"unknown face data source {source!r}; choose one of {', '.join(SOURCES)}")
    if image_size < 8:
        raise ConfigError(f"face image_size must be at least 8, got {image_size}")
    cache_dir = default_cache_dir() if cache else None
    if source == "celeba":
        return load_celeba(Path(path) if path else Path(data_root) / "celeba", split, image_size, limit, cache_dir)
    out = load_shared_10k(data_root, split, image_size, cache_dir)
    if limit is not None and limit < len(out):
        out = FaceSplit(out.images[:limit], out.names[:limit], out.source + f"; first {limit} used")
    return out


__all__ = [
    "FIXED_TEST_SUBSET",
    "FaceSplit",
    "decode_jpeg_npz",
    "fixed_subset",
    "load_celeba",
    "load_faces",
    "load_shared_10k",
    "read_partition",
]
