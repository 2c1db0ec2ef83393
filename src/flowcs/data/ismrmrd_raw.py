"""ISMRMRD raw data (the ``.h5`` files scanners' converters and Gadgetron write) → fully sampled Cartesian k-space.

Read with the ``ismrmrd`` package (``pip install 'flowcs[ismrmrd]'``; pure Python, installs beside the pinned
torch). What is read, from the XML header of encoding 0 and the acquisitions:

* only 2-D Cartesian data (``trajectory = cartesian``, encoded matrix ``z == 1``);
* imaging lines of encoding space 0 only: noise, navigator, phase-correction, dummy-scan, feedback,
  surface-coil-correction, phase-stabilisation and calibration-only (a separate reference scan) acquisitions
  are skipped, as are lines of other encoding spaces; repeated lines (``average``) are averaged; contrast,
  phase, repetition and set other than 0 are ignored;
* the native grid is the encoded lines themselves: a line ``kspace_encode_step_1 = e`` lands in column
  ``e − minimum`` of a ``maximum − minimum + 1``-column grid (the step-1 encoding limits), and the limit's
  ``center`` must be that grid's middle column ``cols // 2`` (flowcs' and fastMRI's convention for the
  k-space centre; asymmetric, partial-Fourier grids are refused); rows are the readout samples as acquired
  (readout oversampling kept, as fastMRI keeps it);
* every line between the limits must be present in every slice (flowcs simulates masks on fully sampled
  data).

The result has fastMRI's multi-coil layout, (slices, coils, rows, cols) complex64, so everything downstream
(virtual coil, RSS, masks on the native grid) is shared with fastMRI files. Failures are one-line
:class:`~flowcs.errors.DataError` s naming the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..errors import ConfigError, DataError

__all__ = ["IsmrmrdKSpace", "is_ismrmrd", "read_ismrmrd", "write_ismrmrd"]

#: acquisition flags (ISMRMRD constants) whose lines are not image data
_SKIP_FLAGS = ("ACQ_IS_NOISE_MEASUREMENT", "ACQ_IS_NAVIGATION_DATA", "ACQ_IS_PHASECORR_DATA",
               "ACQ_IS_DUMMYSCAN_DATA", "ACQ_IS_RTFEEDBACK_DATA", "ACQ_IS_HPFEEDBACK_DATA",
               "ACQ_IS_SURFACECOILCORRECTIONSCAN_DATA", "ACQ_IS_PHASE_STABILIZATION",
               "ACQ_IS_PHASE_STABILIZATION_REFERENCE")


def _is_image_line(ismrmrd, acq, skip: list[int]) -> bool:
    """An acquisition that belongs on encoding 0's imaging grid (calibration lines count only when they are
    also imaging lines: a separate reference scan may have another resolution)."""
    if acq.encoding_space_ref != 0 or any(acq.is_flag_set(flag) for flag in skip):
        return False
    return not (acq.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)
                and not acq.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING))


@dataclass
class IsmrmrdKSpace:
    path: Path
    kspace: np.ndarray  # (slices, coils, rows, cols) complex64
    matrix_lines: int  # phase-encode lines of the encoded matrix (>= cols)
    skipped: int  # acquisitions that are not imaging lines


def _module():
    try:
        import ismrmrd
        import ismrmrd.xsd
    except ImportError:
        raise ConfigError("reading ISMRMRD files needs the 'ismrmrd' package: pip install 'flowcs[ismrmrd]'") from None
    return ismrmrd


def is_ismrmrd(path: str | os.PathLike) -> bool:
    """True for an HDF5 file with an ISMRMRD ``/dataset`` holding an XML header (no error on other files)."""
    try:
        with h5py.File(path, "r") as f:
            return "dataset" in f and isinstance(f["dataset"], h5py.Group) and "xml" in f["dataset"]
    except (OSError, ValueError):
        return False


def _header(path: Path, dset):
    ismrmrd = _module()
    try:
        xml = dset.read_xml_header()
        header = ismrmrd.xsd.CreateFromDocument(xml.decode() if isinstance(xml, bytes) else xml)
    except LookupError:
        raise DataError(f"{path}: no ISMRMRD XML header (/dataset/xml)") from None
    except Exception as exc:  # the XML parser raises its own types
        raise DataError(f"{path}: unreadable ISMRMRD XML header ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not header.encoding:
        raise DataError(f"{path}: the ISMRMRD header has no <encoding>")
    enc = header.encoding[0]
    traj = getattr(enc.trajectory, "value", enc.trajectory)
    if traj != "cartesian":
        raise DataError(f"{path}: trajectory {traj!r}; flowcs reads Cartesian acquisitions only")
    m = enc.encodedSpace.matrixSize
    if m.z not in (None, 1):
        raise DataError(f"{path}: encoded matrix {m.x}x{m.y}x{m.z} is 3-D; flowcs reads 2-D acquisitions only")
    lim = enc.encodingLimits.kspace_encoding_step_1 if enc.encodingLimits else None
    if lim is None:
        raise DataError(f"{path}: the ISMRMRD header has no kspace_encoding_step_1 limits")
    return int(m.y), int(lim.minimum), int(lim.maximum), int(lim.center)


def read_ismrmrd(path: str | os.PathLike, dataset: str = "dataset") -> IsmrmrdKSpace:
    """Fully sampled 2-D Cartesian k-space (slices, coils, rows, cols) of an ISMRMRD file (see module doc)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: ISMRMRD file not found")
    ismrmrd = _module()
    try:
        dset = ismrmrd.Dataset(str(path), dataset, create_if_needed=False, mode="r")
    except OSError as exc:
        raise DataError(f"{path}: not a readable HDF5 file ({str(exc).splitlines()[0][:120]})") from None
    try:
        ny, lo, hi, center = _header(path, dset)
        try:
            n_acq = dset.number_of_acquisitions()
        except LookupError:
            raise DataError(f"{path}: no acquisitions (/{dataset}/data)") from None
        skip = [getattr(ismrmrd, name) for name in _SKIP_FLAGS]
        lines: dict[tuple[int, int], list[np.ndarray]] = {}
        skipped, shape = 0, None
        for i in range(n_acq):
            acq = dset.read_acquisition(i)
            if not _is_image_line(ismrmrd, acq, skip):
                skipped += 1
                continue
            ix = acq.idx
            if ix.contrast or ix.phase or ix.repetition or ix.set:
                skipped += 1
                continue
            data = np.asarray(acq.data, np.complex64)
            if shape is None:
                shape = data.shape
            elif data.shape != shape:
                raise DataError(f"{path}: acquisition {i} has {data.shape[0]} coils x {data.shape[1]} samples, "
                                f"the first had {shape[0]} x {shape[1]}")
            lines.setdefault((int(ix.slice), int(ix.kspace_encode_step_1)), []).append(data)
    finally:
        dset.close()
    if not lines:
        raise DataError(f"{path}: no imaging acquisitions (only {skipped} noise/navigator/other lines)")
    n_slices = 1 + max(s for s, _ in lines)
    cols = hi - lo + 1
    if center - lo != cols // 2:
        raise DataError(f"{path}: the k-space centre (line {center}) is not the middle of the encoded lines "
                        f"{lo}..{hi} (partial Fourier?); flowcs needs a symmetric Cartesian grid")
    k = np.zeros((n_slices, shape[0], shape[1], cols), np.complex64)
    for (s, e), reps in lines.items():
        if not lo <= e <= hi:
            raise DataError(f"{path}: line {e} of slice {s} is outside the encoding limits {lo}..{hi}")
        k[s, :, :, e - lo] = np.mean(reps, axis=0)
    for s in range(n_slices):
        missing = [e for e in range(lo, hi + 1) if (s, e) not in lines]
        if missing:
            raise DataError(f"{path}: slice {s} is not fully sampled ({len(missing)} of {hi - lo + 1} phase-encode "
                            f"lines missing, e.g. {missing[0]}); flowcs needs fully sampled Cartesian data")
    if not np.all(np.isfinite(k)):
        raise DataError(f"{path}: k-space contains NaN/Inf values")
    return IsmrmrdKSpace(path, k, ny, skipped)


def write_ismrmrd(path: str | os.PathLike, kspace: np.ndarray, noise_lines: int = 0) -> Path:
    """Write fully sampled Cartesian k-space (slices, coils, rows, cols) as an ISMRMRD file with the package's
    writer: one acquisition per (slice, line), encoding limits 0..cols−1 with centre cols // 2, and
    ``noise_lines`` noise-measurement acquisitions first (a converter's layout; tests and conversions)."""
    ismrmrd = _module()
    x = ismrmrd.xsd
    k = np.asarray(kspace, np.complex64)
    if k.ndim != 4:
        raise ConfigError(f"k-space to write must be (slices, coils, rows, cols), got shape {k.shape}")
    n_slices, coils, rows, cols = k.shape
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")  # written whole, then renamed: never a half-written file at path
    tmp.unlink(missing_ok=True)
    enc = x.encodingType(
        encodedSpace=x.encodingSpaceType(matrixSize=x.matrixSizeType(x=rows, y=cols, z=1),
                                         fieldOfView_mm=x.fieldOfViewMm(x=float(rows), y=float(cols), z=1.0)),
        reconSpace=x.encodingSpaceType(matrixSize=x.matrixSizeType(x=rows, y=cols, z=1),
                                       fieldOfView_mm=x.fieldOfViewMm(x=float(rows), y=float(cols), z=1.0)),
        encodingLimits=x.encodingLimitsType(
            kspace_encoding_step_1=x.limitType(minimum=0, maximum=cols - 1, center=cols // 2),
            slice=x.limitType(minimum=0, maximum=n_slices - 1, center=n_slices // 2)),
        trajectory=x.trajectoryType.CARTESIAN)
    header = x.ismrmrdHeader(encoding=[enc], experimentalConditions=x.experimentalConditionsType(
        H1resonanceFrequency_Hz=63_500_000))  # 1.5 T; the reader does not use it
    dset = ismrmrd.Dataset(str(tmp), "dataset", create_if_needed=True)
    try:
        dset.write_xml_header(x.ToXML(header))
        rng = np.random.default_rng(0)
        for _ in range(noise_lines):
            noise = (rng.standard_normal((coils, rows)) + 1j * rng.standard_normal((coils, rows))).astype(np.complex64)
            acq = ismrmrd.Acquisition.from_array(noise)
            acq.set_flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
            dset.append_acquisition(acq)
        for s in range(n_slices):
            for e in range(cols):
                acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(k[s, :, :, e]))
                acq.idx.slice, acq.idx.kspace_encode_step_1 = s, e
                acq.center_sample = rows // 2
                dset.append_acquisition(acq)
    except BaseException:
        dset.close()
        tmp.unlink(missing_ok=True)
        raise
    dset.close()
    os.replace(tmp, path)
    return path
