"""``flowcs data inspect PATH``: validate a data file or folder with the loaders' own checks.

What it recognises (by file name, like the loaders do):

* MNIST IDX files (``*-idx?-ubyte`` / ``.gz``) and the approximate training-image
  fallback ``mnist_train_from_png_approx.npz`` — read with :func:`flowcs.data.mnist.read_idx`
  (md5 check of the official ``.gz`` names included); a folder's splits are then loaded with
  :func:`flowcs.data.mnist.load_mnist`, which adds the cross-file checks (counts, shapes, labels).
* image folders (``.jpg``, ``.png``...) — every file decoded with
  :func:`flowcs.data.images.read_rgb`; mixed sizes reported as :func:`load_image_folder` does;
  the CelebA layout (``img_align_celeba/`` + ``list_eval_partition.txt``) with its partition file.
* fastMRI single-coil ``.h5`` volumes, real or synthetic — layout with
  :func:`flowcs.data.fastmri.inspect_volume`, every slice's values with
  :func:`flowcs.data.fastmri.read_volume_images` (the loader's NaN/Inf check).
* MATLAB ``.mat`` (Kellman fat-water images, multi-coil ``DATA`` k-space), BART ``.cfl/.hdr``
  pairs, and any other ``.npz`` / ``.npy`` array file (JPEG archives of the face sets included).
* a folder of such folders (a data root): each sub-folder is inspected.

The result is a :class:`Report`: summary lines for what is fine and one line per problem, each
starting with the file at fault (the loaders' own one-line :class:`~flowcs.errors.DataError`
messages, so ``inspect`` and training say the same thing). The CLI exits 0 when there is no
problem, 1 otherwise; a path that does not exist is a usage error (exit 2).

New formats plug in with :func:`register`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError

#: at most this many per-file summary lines per kind (problems are never capped)
MAX_FILE_LINES = 20


@dataclass
class Report:
    """What ``inspect`` found: ``summary`` lines when fine, ``problems`` (one per line, file first)."""

    path: Path
    kind: str = "unknown"
    summary: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def render(self) -> str:
        head = f"{self.path}: {self.kind}, " + ("OK" if self.ok else f"{len(self.problems)} problem(s)")
        return "\n".join([head, *(f"  {s}" for s in self.summary), *(f"  problem: {p}" for p in self.problems)])


@dataclass
class Kind:
    """One data format: which files it ``claims`` and how it ``check`` s them.

    ``check(files, folder, report)`` gets the claimed files (sorted) and the folder they were found
    in (``None`` when the user named a single file).
    """

    name: str
    claims: Callable[[Path], bool]
    check: Callable[[list[Path], Path | None, Report], None]


KINDS: list[Kind] = []


def register(name: str, claims: Callable[[Path], bool]):
    """Decorator: register ``check`` for the files ``claims`` accepts (earlier kinds win)."""

    def deco(check):
        KINDS.append(Kind(name, claims, check))
        return check

    return deco


# ----------------------------------------------------------------------------- entry point


def inspect_path(path: str | Path) -> Report:
    """Inspect a file or folder; a path that does not exist is a :class:`ConfigError` (usage error)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such file or folder")
    report = Report(path)
    if path.is_dir():
        _inspect_folder(path, report, depth=0)
    else:
        _inspect_file(path, report)
    return report


def _inspect_file(path: Path, report: Report) -> None:
    kind = next((k for k in KINDS if k.claims(path)), None)
    if kind is None:
        report.problems.append(
            f"{path}: unrecognised data format (expected MNIST IDX, .npz/.npy, an image, fastMRI .h5, "
            ".mat or BART .cfl/.hdr)")
        return
    report.kind = kind.name
    _run(kind.check, [path], None, report)


def _run(check: Callable, files: list[Path], folder: Path | None, report: Report) -> None:
    try:
        check(files, folder, report)
    except DataError as exc:
        report.problems.append(str(exc))
    except Exception as exc:  # an inspector must never end in a traceback: report it as a problem
        where = folder if folder is not None else files[0]
        report.problems.append(f"{where}: cannot be inspected ({type(exc).__name__}: {_first_line(exc)})")


def _inspect_folder(folder: Path, report: Report, depth: int) -> None:
    try:
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        report.problems.append(f"{folder}: cannot list folder ({exc.strerror or exc})")
        return
    files = [p for p in entries if p.is_file()]
    subdirs = [p for p in entries if p.is_dir()]
    if (folder / CELEBA_IMAGES).is_dir():
        report.kind = "CelebA folder"
        _run(_check_celeba, [], folder, report)
        return
    claimed: dict[str, tuple[Kind, list[Path]]] = {}
    rest = []
    for f in files:
        kind = next((k for k in KINDS if k.claims(f)), None)
        if kind is None:
            rest.append(f)
        else:
            claimed.setdefault(kind.name, (kind, []))[1].append(f)
    if claimed:
        report.kind = " + ".join(claimed)
        for kind, kfiles in claimed.values():
            _run(kind.check, kfiles, folder, report)
        if rest:
            report.summary.append(f"ignored {len(rest)} other file(s): {_names(rest)}")
        return
    if subdirs and depth == 0:
        report.kind = "data root"
        for sub in subdirs:
            sub_report = Report(sub)
            _inspect_folder(sub, sub_report, depth + 1)
            report.summary.append(f"{sub.name}/: {sub_report.kind}, " +
                                  ("OK" if sub_report.ok else f"{len(sub_report.problems)} problem(s)"))
            report.summary.extend(f"  {s}" for s in sub_report.summary)
            report.problems.extend(sub_report.problems)
        return
    if not files and not subdirs:
        report.kind = "empty folder"
        report.problems.append(f"{folder}: empty folder (no data files)")
        return
    report.kind = "no data"
    found = _names(files + subdirs)
    if depth > 0:  # inside a data root, a folder of formats flowcs does not read is not a problem
        report.summary.append(f"nothing flowcs reads here (found: {found})")
        return
    report.problems.append(f"{folder}: no recognised data files (found: {found})")


# ----------------------------------------------------------------------------- helpers


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else "no details"


def _names(paths: list[Path], n: int = 6) -> str:
    shown = ", ".join(p.name + ("/" if p.is_dir() else "") for p in paths[:n])
    return shown + (f" and {len(paths) - n} more" if len(paths) > n else "")


def _range(values: np.ndarray) -> str:
    if values.size == 0:
        return "empty"
    lo, hi = values.min(), values.max()
    if np.issubdtype(values.dtype, np.floating):
        return f"{lo:.4g}..{hi:.4g}"
    return f"{lo}..{hi}"


def _describe(arr: np.ndarray) -> str:
    return f"shape {tuple(arr.shape)}, dtype {arr.dtype}, values {_range(arr)}"


def _shapes(counter: Counter) -> str:
    return ", ".join(f"{k} ×{v}" if v > 1 else k for k, v in counter.most_common())


def _file_lines(report: Report, lines: list[str]) -> None:
    report.summary.extend(lines[:MAX_FILE_LINES])
    if len(lines) > MAX_FILE_LINES:
        report.summary.append(f"... and {len(lines) - MAX_FILE_LINES} more file(s)")


# ----------------------------------------------------------------------------- MNIST

_IDX = re.compile(r"-idx\d-ubyte(\.gz)?$")


def _is_mnist(path: Path) -> bool:
    from .mnist import APPROX_TRAIN_NPZ

    return bool(_IDX.search(path.name)) or path.name == APPROX_TRAIN_NPZ


@register("MNIST IDX", _is_mnist)
def _check_mnist(files: list[Path], folder: Path | None, report: Report) -> None:
    """A folder: each split as ``load_mnist`` reads it; only when that fails, each of its files alone."""
    from .mnist import APPROX_TRAIN_NPZ, load_mnist

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
    from .mnist import APPROX_TRAIN_NPZ, MNIST_MD5, _read_approx_npz, read_idx

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


# ----------------------------------------------------------------------------- fastMRI .h5


def _is_h5(path: Path) -> bool:
    return path.suffix.lower() in (".h5", ".hdf5")


@register("fastMRI single-coil .h5", _is_h5)
def _check_h5(files: list[Path], folder: Path | None, report: Report) -> None:
    from .fastmri import SLICE_HALF_WIDTH, center_slices, inspect_volume, read_volume_images

    lines, shapes, slices, used = [], Counter(), [], 0
    synthetic, peak = 0, 0.0
    for f in files:
        try:
            info = inspect_volume(f)  # layout: kspace present, rank 3, complex, not empty
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
        lines.append(f"{f.name}: {info.n_slices} slices of {info.rows}x{info.cols} complex k-space, "
                     f"|image| max {mag:.4g}" + (f", {acq}" if acq else "") +
                     (", ISMRMRD header" if info.has_header else ", no ISMRMRD header") +
                     (", synthetic" if is_synth else ""))
    _file_lines(report, lines)
    if slices:
        report.summary.append(
            f"{len(slices)} volume(s)" + (f" ({synthetic} synthetic)" if synthetic else "") +
            f", slices per volume {min(slices)}..{max(slices)} (total {sum(slices)}; the loader keeps the centre "
            f"±{SLICE_HALF_WIDTH}: {used} slices), k-space {_shapes(shapes)}, |image| max {peak:.4g}")


# ----------------------------------------------------------------------------- images


def _is_image(path: Path) -> bool:
    from .images import IMAGE_SUFFIXES

    return path.suffix.lower() in IMAGE_SUFFIXES


@register("image folder", _is_image)
def _check_images(files: list[Path], folder: Path | None, report: Report) -> None:
    from .images import read_rgb

    if folder is not None:
        from .images import list_images

        files = list_images(folder)  # the loader's own listing (same suffixes, same order)
    first: tuple[Path, tuple[int, int]] | None = None
    sizes: Counter = Counter()
    lo, hi, n = 255, 0, 0
    for f in files:
        try:
            img = read_rgb(f)
        except DataError as exc:
            report.problems.append(str(exc))
            continue
        n += 1
        size = img.shape[:2]
        sizes[f"{size[0]}x{size[1]}"] += 1
        lo, hi = min(lo, int(img.min())), max(hi, int(img.max()))
        if first is None:
            first = (f, size)
        elif size != first[1] and folder is not None:
            report.problems.append(f"{f}: image is {size[0]}x{size[1]} but {first[0].name} is "
                                   f"{first[1][0]}x{first[1][1]} (mixed image sizes in {folder})")
    if n:
        report.summary.append(f"{n} RGB image(s), dtype uint8, size {_shapes(sizes)}, values {lo}..{hi}")


CELEBA_IMAGES = "img_align_celeba"


def _check_celeba(_files: list[Path], folder: Path | None, report: Report) -> None:
    from .faces import CELEBA_PARTITION, read_partition

    assert folder is not None
    images = folder / CELEBA_IMAGES
    part_path = folder / CELEBA_PARTITION
    try:
        partition = read_partition(part_path)
    except DataError as exc:
        report.problems.append(str(exc))
        partition = {}
    if partition:
        counts = Counter(partition.values())
        report.summary.append(f"{CELEBA_PARTITION}: {len(partition)} images (train {counts[0]}, "
                              f"val {counts[1]}, test {counts[2]})")
        missing = sorted(n for n in partition if not (images / n).is_file())
        for name in missing[:MAX_FILE_LINES]:
            report.problems.append(f"{images / name}: listed in {CELEBA_PARTITION} but missing")
        if len(missing) > MAX_FILE_LINES:
            report.problems.append(f"{images}: {len(missing) - MAX_FILE_LINES} more listed images missing")
    sub = Report(images)
    _run(_check_images, [], images, sub)
    report.summary.extend(f"{CELEBA_IMAGES}/: {s}" for s in sub.summary)
    report.problems.extend(sub.problems)


# ----------------------------------------------------------------------------- MATLAB .mat


def _is_mat(path: Path) -> bool:
    return path.suffix.lower() == ".mat"


@register("MATLAB .mat", _is_mat)
def _check_mat(files: list[Path], folder: Path | None, report: Report) -> None:
    import scipy.io

    from .mri_files import read_espirit_kspace, read_kellman

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
    from .fastmri import check_finite
    from .mri_files import read_cfl

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
    from .faces import decode_jpeg_npz
    from .images import decode_rgb

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


__all__ = ["KINDS", "Kind", "Report", "inspect_path", "register"]
