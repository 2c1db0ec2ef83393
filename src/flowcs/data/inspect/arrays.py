"""Other NumPy ``.npz`` / ``.npy`` files (JPEG archives of the face sets included) for ``flowcs data inspect``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ...errors import DataError
from .core import Report, _file_lines, _first_line, _range, _shapes, register

# ----------------------------------------------------------------------------- other arrays


def _is_array(path: Path) -> bool:
    return path.suffix.lower() in (".npz", ".npy")


@register("NumPy arrays", _is_array)
def _check_arrays(files: list[Path], folder: Path | None, report: Report) -> None:
    lines = []
    for f in files:
        try:
            lines += _check_array_file(f, report)
        except DataError as exc:
            report.problems.append(str(exc))
    _file_lines(report, lines)


def _load_arrays(f: Path) -> dict[str, np.ndarray]:
    """Every array of a ``.npz`` / ``.npy`` file, never unpickling objects."""
    try:
        if f.suffix.lower() == ".npy":
            return {"": np.load(f, allow_pickle=False)}
        with np.load(f, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as exc:
        if "pickle" in str(exc):
            raise DataError(f"{f}: holds pickled Python objects; refused (only plain arrays are read)") from None
        raise DataError(f"{f}: corrupt or unreadable array file ({_first_line(exc)})") from None
    except Exception as exc:  # zip/format/OS errors have many types; all mean "unreadable"
        raise DataError(f"{f}: corrupt or unreadable array file ({type(exc).__name__}: {_first_line(exc)})") from None


def _check_array_file(f: Path, report: Report) -> list[str]:
    arrays = _load_arrays(f)
    if {"jpeg_bytes", "offsets", "names"} <= set(arrays):
        return [_check_jpeg_archive(f, arrays, report)]
    lines = []
    for key, arr in arrays.items():
        label = f"{f.name}[{key}]" if key else f.name
        if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
            bad = int(arr.size - np.isfinite(arr).sum())
            report.problems.append(f"{f}: array {key or '(npy)'!r} contains {bad} NaN/Inf value(s)")
            continue
        rng = _range(np.abs(arr) if arr.dtype.kind == "c" else arr) if arr.dtype.kind in "biuf" else "-"
        lines.append(f"{label}: shape {tuple(arr.shape)}, dtype {arr.dtype}, values {rng}")
    return lines


def _check_jpeg_archive(f: Path, arrays: dict, report: Report) -> str:
    from ..faces import decode_jpeg_npz
    from ..images import decode_rgb

    decode_jpeg_npz(f, 8, indices=[])  # the loader's key and offset checks, without decoding
    blob, offsets, names = arrays["jpeg_bytes"], arrays["offsets"].astype(np.int64), [str(n) for n in arrays["names"]]
    sizes: Counter = Counter()
    for i, name in enumerate(names):
        try:
            img = decode_rgb(blob[offsets[i]:offsets[i + 1]].tobytes(), f"{f}[{name}]")
        except DataError as exc:
            report.problems.append(str(exc))
            continue
        sizes[f"{img.shape[0]}x{img.shape[1]}"] += 1
    return f"{f.name}: JPEG archive of {len(names)} image(s), {sum(sizes.values())} decoded as RGB, " \
           f"size {_shapes(sizes) or '-'}"

