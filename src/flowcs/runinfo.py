"""Run metadata (command, config, seed, versions, git commit, device, wall time) and seeding."""

from __future__ import annotations

import platform
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; an unavailable explicit device is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda requested but no CUDA device is available (use --device auto or cpu)")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ConfigError(f"unknown device {name!r}: use auto, cpu or cuda")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


#: what decides the numbers: a change here (uncommitted, or a new untracked file) makes a commit ``-dirty``;
#: results, docs and tests being edited while a run goes do not
CODE_PATHS = ("src", "configs", "pyproject.toml")


def git_commit(repo: Path | None = None) -> str | None:
    """HEAD, with ``-dirty`` when the code (:data:`CODE_PATHS`) differs from it (None outside a git checkout)."""
    repo = repo or Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=normal", "--", *CODE_PATHS],
                               cwd=repo, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def versions() -> dict[str, str]:
    import h5py
    import matplotlib
    import scipy

    return {"flowcs": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
            "numpy": np.__version__, "scipy": scipy.__version__, "h5py": h5py.__version__,
            "matplotlib": matplotlib.__version__}


def run_metadata(
    config: dict, seed: int, device: torch.device, started: float, commit: str | None, extra: dict | None = None
) -> dict[str, Any]:
    """``commit`` is the one read when the run started (:func:`git_commit`): a commit made while a long run is
    going must not be recorded as the run's."""
    return {
        "command": " ".join(sys.argv),
        "config": config,
        "seed": seed,
        "git_commit": commit,
        "versions": versions(),
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_time_s": round(time.time() - started, 1),
        **(extra or {}),
    }
