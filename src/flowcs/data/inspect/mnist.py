"""MNIST IDX files (and the approximate training-image fallback) for ``flowcs data inspect``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ...errors import DataError
from .core import Report, _describe, _range, register

# ----------------------------------------------------------------------------- MNIST

_IDX = re.compile(r"-idx\d-ubyte(\.gz)?$")


def _is_mnist(path: Path) -> bool:
    from ..mnist import APPROX_TRAIN_NPZ

    return bool(_IDX.search(path.name)) or path.name == APPROX_TRAIN_NPZ


@register("MNIST IDX", _is_mnist)
def _check_mnist(files: list[Path], folder: Path | None, report: Report) -> None:
    """A folder: each split as ``load_mnist`` reads it; only when that fails, each of its files alone."""
    from ..mnist import APPROX_TRAIN_NPZ, load_mnist

    if folder is None:
        _check_mnist_files(files, report)
        return
    rest = list(files)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        mine = [f for f in files
                if f.name.startswith(prefix + "-") or (split == "train" and f.name == APPROX_TRAIN_NPZ)]
        rest = [f for f in rest if f not in mine]
        try:
            s = load_mnist(folder, split)
        except DataError as exc:
            if not _check_mnist_files(mine, report):  # no file is broken on its own: report the split's problem
                report.problems.append(str(exc))
            continue
        images, labels = s.images.numpy(), s.labels.numpy()
        report.summary.append(f"{split} split: images {_describe(images)}; labels {_range(labels)} "
                              f"({len(np.unique(labels))} classes); {s.source}")
    _check_mnist_files(rest, report)


def _check_mnist_files(files: list[Path], report: Report) -> int:
    """Read each file on its own (summary line or problem line); returns the number of problems."""
    from ..mnist import APPROX_TRAIN_NPZ, MNIST_MD5, _read_approx_npz, read_idx

    problems = 0
    for f in files:
        try:
            if f.name == APPROX_TRAIN_NPZ:
                images, labels = _read_approx_npz(f)
                report.summary.append(f"{f.name}: images {_describe(images)}; labels {_describe(np.asarray(labels))} "
                                      "(approximate training images, within ±1 grey level of the official file)")
            else:
                md5 = " (md5 verified)" if f.name in MNIST_MD5 else ""
                report.summary.append(f"{f.name}: {_describe(read_idx(f))}{md5}")
        except DataError as exc:
            problems += 1
            report.problems.append(str(exc))
    return problems
