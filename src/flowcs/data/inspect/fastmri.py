"""fastMRI (single- and multi-coil) and ISMRMRD ``.h5`` files for ``flowcs data inspect``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ...errors import DataError
from .core import Report, _file_lines, _first_line, _shapes, register

# ----------------------------------------------------------------------------- fastMRI .h5


def _is_h5(path: Path) -> bool:
    return path.suffix.lower() in (".h5", ".hdf5")


def _ismrmrd_line(f: Path) -> str:
    from ..ismrmrd_raw import read_ismrmrd

    raw = read_ismrmrd(f)  # header, Cartesian 2-D, fully sampled, finite
    s, c, r, n = raw.kspace.shape
    return (f"{f.name}: ISMRMRD raw data, {s} slice(s) x {c} coil(s) x {r} readout samples x {n} phase-encode "
            f"lines (fully sampled Cartesian; {raw.skipped} noise/navigator/other acquisitions skipped)")


@register("fastMRI / ISMRMRD .h5", _is_h5)
def _check_h5(files: list[Path], folder: Path | None, report: Report) -> None:
    from ..fastmri import SLICE_HALF_WIDTH, center_slices, inspect_volume, read_volume_images
    from ..ismrmrd_raw import is_ismrmrd

    lines, shapes, slices, used = [], Counter(), [], 0
    synthetic, peak = 0, 0.0
    for f in files:
        try:
            if is_ismrmrd(f):
                lines.append(_ismrmrd_line(f))
                continue
            info = inspect_volume(f)  # layout: kspace present, rank 3 or 4, coil axis, complex, not empty
            images, _ = read_volume_images(f, half_width=None)  # every slice: readable and finite
        except DataError as exc:
            report.problems.append(str(exc))
            continue
        except Exception as exc:  # h5py raises RuntimeError/KeyError/ValueError on damaged metadata
            report.problems.append(f"{f}: corrupt HDF5 file ({type(exc).__name__}: {_first_line(exc)})")
            continue
        mag = float(np.abs(images).max()) if images.size else 0.0
        peak = max(peak, mag)
        is_synth = str(info.attrs.get("patient_id", "")).startswith("synthetic-")
        synthetic += is_synth
        shapes[f"{info.rows}x{info.cols}"] += 1
        slices.append(info.n_slices)
        used += len(center_slices(info.n_slices, SLICE_HALF_WIDTH))
        acq = info.attrs.get("acquisition")
        coils = f"{info.coils}-coil " if info.multicoil else "single-coil "
        lines.append(f"{f.name}: {info.n_slices} slices of {coils}{info.rows}x{info.cols} complex k-space, "
                     f"|image| max {mag:.4g}" + (f", {acq}" if acq else "") +
                     (", ISMRMRD header" if info.has_header else ", no ISMRMRD header") +
                     (", synthetic" if is_synth else ""))
    _file_lines(report, lines)
    if slices:
        report.summary.append(
            f"{len(slices)} volume(s)" + (f" ({synthetic} synthetic)" if synthetic else "") +
            f", slices per volume {min(slices)}..{max(slices)} (total {sum(slices)}; the loader keeps the centre "
            f"±{SLICE_HALF_WIDTH}: {used} slices), k-space {_shapes(shapes)}, |image| max {peak:.4g}")
