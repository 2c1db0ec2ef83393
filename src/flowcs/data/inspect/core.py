"""The inspector's machinery: :class:`Report`, the format registry (:func:`register`) and :func:`inspect_path`,
which hands each file or folder to the format that claims it (formats live in the sibling modules)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import ConfigError, DataError

__all__ = ["Report", "Kind", "KINDS", "FOLDER_KINDS", "register", "inspect_path", "MAX_FILE_LINES"]

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
#: layouts recognised from a whole folder before its files are looked at (``claims(folder)``)
FOLDER_KINDS: list[Kind] = []


def register(name: str, claims: Callable[[Path], bool], folder: bool = False):
    """Decorator: register ``check`` for the files (``folder``: the folders) ``claims`` accepts (earlier kinds win)."""

    def deco(check):
        (FOLDER_KINDS if folder else KINDS).append(Kind(name, claims, check))
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
    folder_kind = next((k for k in FOLDER_KINDS if k.claims(folder)), None)
    if folder_kind is not None:  # a whole-folder layout (e.g. CelebA's img_align_celeba/ + partition file)
        report.kind = folder_kind.name
        _run(folder_kind.check, [], folder, report)
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

