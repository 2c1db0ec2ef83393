"""Fetch the official MNIST files (network; never called by the tests).

Files are streamed into a temporary sibling and only renamed into place after
their md5 matches the official release, so an interrupted or tampered
download never leaves a file that :func:`~flowcs.data.mnist.load_mnist` would
trust.
"""

from __future__ import annotations

import hashlib
import http.client
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from ..errors import DataError
from ..io import atomic_write
from .mnist import MNIST_MD5

DEFAULT_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
_CHUNK = 1 << 16
_TIMEOUT_S = 60


class _ChecksumMismatch(Exception):
    pass


def _has_md5(path: Path, expected: str) -> bool:
    if not path.is_file():
        return False
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest() == expected


def _fetch(url: str, target: Path, expected_md5: str, progress: bool) -> None:
    """Stream ``url`` into ``target`` atomically; raise before the rename if the md5 is wrong."""
    request = urllib.request.Request(url, headers={"User-Agent": "flowcs"})
    with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
        total = response.headers.get("Content-Length")
        digest = hashlib.md5(usedforsecurity=False)
        with (
            atomic_write(target, "wb") as out,
            tqdm(
                total=int(total) if total and total.isdigit() else None,
                unit="B",
                unit_scale=True,
                desc=target.name,
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
            if digest.hexdigest() != expected_md5:
                raise _ChecksumMismatch(f"md5 {digest.hexdigest()} != official {expected_md5}")


def download_mnist(
    to: str | Path,
    mirrors: Sequence[str] = DEFAULT_MIRRORS,
    progress: bool = True,
) -> list[Path]:
    """Download the four official MNIST ``.gz`` files into ``to``; return their paths.

    Files already present with the official md5 are kept; others are fetched
    from the first mirror that delivers the right bytes.
    """
    to = Path(to).expanduser()
    if to.exists() and not to.is_dir():
        raise DataError(f"{to}: exists and is not a folder")
    if not mirrors:
        raise DataError(f"{to}: no download mirrors given")
    paths = []
    for name, md5 in MNIST_MD5.items():
        target = to / name
        if not _has_md5(target, md5):
            errors = []
            for mirror in mirrors:
                url = mirror.rstrip("/") + "/" + name
                try:
                    _fetch(url, target, md5, progress)
                    break
                except (OSError, http.client.HTTPException, ValueError, _ChecksumMismatch) as exc:
                    errors.append(f"{url}: {exc}")
            else:
                raise DataError(
                    f"{target}: download failed from every mirror ({'; '.join(errors)}); "
                    "check the network or copy the official files into the folder by hand"
                )
        paths.append(target)
    return paths
