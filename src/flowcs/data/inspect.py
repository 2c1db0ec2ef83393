"""``flowcs data inspect PATH``: validate a data file or folder with the loaders' own checks.

Each inspector returns a :class:`Report`: summary lines for what is fine and
one line per problem (file + what is wrong). Inspectors are registered per
kind, so new data formats plug in with :func:`register`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import FlowcsError


@dataclass
class Report:
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


Inspector = Callable[[Path, Report], bool]  # returns True when it recognised the path
_INSPECTORS: list[Inspector] = []


def register(inspector: Inspector) -> Inspector:
    _INSPECTORS.append(inspector)
    return inspector


def inspect_path(path: Path) -> Report:
    report = Report(path)
    if not path.exists():
        report.problems.append(f"{path}: no such file or folder")
        return report
    for inspector in _INSPECTORS:
        if inspector(path, report):
            return report
    report.problems.append(f"{path}: unrecognised data format (expected MNIST IDX files or a folder of them)")
    return report


def _describe(arr: np.ndarray) -> str:
    return f"shape {tuple(arr.shape)}, dtype {arr.dtype}, values {arr.min()}..{arr.max()}"


@register
def _mnist(path: Path, report: Report) -> bool:
    from .mnist import read_idx

    files = sorted(path.glob("*-ubyte*")) if path.is_dir() else [path]
    files = [f for f in files if "-idx" in f.name and f.name.split(".")[0].endswith("ubyte")]
    if not files:
        return False
    report.kind = "MNIST IDX"
    for f in files:
        try:
            report.summary.append(f"{f.name}: {_describe(read_idx(f))}")
        except FlowcsError as exc:
            report.problems.append(str(exc))
    return True
