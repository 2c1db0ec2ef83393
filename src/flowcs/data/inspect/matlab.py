"""MATLAB ``.mat`` and BART ``.cfl/.hdr`` files for ``flowcs data inspect``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DataError
from .core import Report, _file_lines, register

# ----------------------------------------------------------------------------- MATLAB .mat


def _is_mat(path: Path) -> bool:
    return path.suffix.lower() == ".mat"


@register("MATLAB .mat", _is_mat)
def _check_mat(files: list[Path], folder: Path | None, report: Report) -> None:
    import scipy.io

    from ..mri_files import read_espirit_kspace, read_kellman

    lines = []
    for f in files:
        try:
            try:
                keys = [name for name, *_ in scipy.io.whosmat(f)]  # the variable names, without loading them
            except Exception:  # unreadable: read_kellman's load_mat says so in the loaders' words
                keys = ["data"]
            if "data" in keys:
                scan = read_kellman(f)
                te = ", ".join(f"{t:g}" for t in scan.te)
                lines.append(f"{f.name}: Kellman fat-water, {scan.images.shape[0]} echo image(s) of "
                             f"{scan.images.shape[1]}x{scan.images.shape[2]} {scan.images.dtype}, "
                             f"|image| max {np.abs(scan.images).max():.4g}" + (f", TE {te}" if te else ""))
            elif "DATA" in keys:
                k = read_espirit_kspace(f)
                lines.append(f"{f.name}: multi-coil k-space (readout, phase-encode, coils) {k.shape} {k.dtype}, "
                             f"|k| max {np.abs(k).max():.4g}")
            else:
                raise DataError(f"{f}: no 'data' (Kellman fat-water) or 'DATA' (multi-coil k-space) variable "
                                f"(found: {', '.join(keys) or 'nothing'})")
        except DataError as exc:
            report.problems.append(str(exc))
    _file_lines(report, lines)



# ----------------------------------------------------------------------------- BART .cfl / .hdr


def _is_cfl(path: Path) -> bool:
    return path.suffix.lower() in (".cfl", ".hdr")


@register("BART .cfl/.hdr", _is_cfl)
def _check_cfl(files: list[Path], folder: Path | None, report: Report) -> None:
    from ..fastmri import check_finite
    from ..mri_files import read_cfl

    lines = []
    for base in sorted({f.with_suffix("") for f in files}):
        try:
            arr = read_cfl(base)
            check_finite(base.with_suffix(".cfl"), arr, "data")
        except DataError as exc:
            report.problems.append(str(exc))
            continue
        dims = list(arr.shape)
        while len(dims) > 1 and dims[-1] == 1:
            dims.pop()
        lines.append(f"{base.name}.cfl: dims {tuple(dims)}, complex64, |x| max {np.abs(arr).max():.4g}")
    _file_lines(report, lines)
