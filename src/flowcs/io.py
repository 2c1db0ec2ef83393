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

from .errors import CheckpointError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary sibling of ``path`` for writing; rename it into place on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not supported on every platform/filesystem.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as pretty, key-sorted-free JSON (order kept for readability)."""
    text = json.dumps(obj, indent=2, allow_nan=False, default=_json_default) + "\n"
    with atomic_write(path, "w") as handle:
        handle.write(text)


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
