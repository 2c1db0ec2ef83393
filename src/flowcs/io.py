"""Atomic file writes and safe loading.

Every artefact flowcs writes (checkpoints, metrics, figures, configs) goes
through :func:`atomic_write`: data is written to a temporary file in the same
directory, flushed and fsync'ed, then renamed over the target. A crash or a
full disk therefore leaves either the previous file or the new one, never a
half-written file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError, FlowcsError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary sibling of ``path`` for writing; rename it into place on success."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise FlowcsError(f"{path}: cannot write ({exc.strerror or exc}); nothing was changed") from None
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):  # full disk, permissions, quota: one clear line, old file intact
            raise FlowcsError(f"{path}: cannot write ({exc.strerror or exc}); the previous file is intact") from None
        raise
    _fsync_dir(path.parent)


def write_texts(files: dict[Path, str]) -> None:
    """Write several text files as one unit: all are written and fsync'ed to temp files first, then renamed.

    A failure while writing leaves every target as it was (the renames only start once all data is on disk).
    """
    staged: list[tuple[str, Path]] = []
    try:
        for path, text in files.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            staged.append((tmp, path))
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o666 & ~_UMASK)
    except BaseException as exc:
        for tmp, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(exc, OSError):
            target = staged[-1][1] if staged else next(iter(files))
            raise FlowcsError(f"{target}: cannot write ({exc.strerror or exc}); "
                              "the previous files are intact") from None
        raise
    for tmp, path in staged:
        os.replace(tmp, path)
    for parent in {p.parent for _, p in staged}:
        _fsync_dir(parent)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not supported on every platform/filesystem.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def to_json(obj: Any) -> str:
    """Pretty JSON (key order kept for readability); NaN/inf are refused: they are not valid JSON."""
    return json.dumps(obj, indent=2, allow_nan=False, default=_json_default) + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as JSON."""
    with atomic_write(path, "w") as handle:
        handle.write(to_json(obj))


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as handle:
        handle.write(text)


def save_with(path: str | os.PathLike, writer: Callable[[Any], None], mode: str = "wb") -> None:
    """Atomically write through a callback that takes a file handle (e.g. ``fig.savefig``)."""
    with atomic_write(path, mode) as handle:
        writer(handle)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _check_zip_crc(path: Path) -> None:
    """torch.save writes a zip with CRC-32 per record, but torch.load does not verify them: do it here, so a
    flipped byte in the weights is a clear error (and ``--resume`` falls back to the previous checkpoint)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({str(exc)[:160]})") from None
    if bad is not None:
        raise CheckpointError(f"{path}: corrupt checkpoint (checksum mismatch in record {bad})")


def torch_save(path: str | os.PathLike, obj: Any) -> None:
    """Atomically ``torch.save`` an object made of tensors and plain Python types."""
    with atomic_write(path, "wb") as handle:
        torch.save(obj, handle)


def torch_load_safe(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Load a torch file without unpickling arbitrary objects (``weights_only=True``).

    A file from an untrusted source that tries to run code, or a corrupt /
    truncated file, ends in a :class:`CheckpointError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    _check_zip_crc(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle/zip errors have many types; all mean "not loadable"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise CheckpointError(
                f"{path}: refused to load: the file contains objects other than tensors and "
                f"plain data (possibly malicious or from another program) [{first[:160]}]"
            ) from None
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({first[:160]})") from None
