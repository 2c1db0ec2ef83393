"""Where flowcs looks for data sets.

Two layouts have to work without configuration: the CI / developer checkout,
where read-only data sits in ``../shared/data`` next to the repository, and an
installed package used by someone else, who either passes a path, sets
``$FLOWCS_DATA`` or lets ``flowcs data download`` fill a per-user cache.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError

ENV_VAR = "FLOWCS_DATA"


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/flowcs`` or ``~/.cache/flowcs`` (not created here)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "flowcs"


def _repo_shared_data() -> Path:
    # src/flowcs/data/root.py -> parents[3] is the repository root of an editable install.
    return Path(__file__).resolve().parents[3] / ".." / "shared" / "data"


def resolve_data_root(explicit: str | os.PathLike | None = None) -> Path:
    """Return the data root, first match wins.

    1. ``explicit`` (must be an existing directory): the user said so;
    2. ``$FLOWCS_DATA`` (must exist): per-machine setting;
    3. ``../shared/data`` from the current directory: the CI / developer layout;
    4. ``../shared/data`` from the repository holding this file: same layout when
       an editable install is run from another directory;
    5. ``user_cache_dir() / "data"`` (created): where downloads go for users.

    An explicit path or variable that does not exist is an error rather than a
    silent fall-through, so a typo never ends up reading (or downloading into)
    another folder.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_dir():
            raise DataError(f"{path}: data root not found (given explicitly)")
        return path.resolve()
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise DataError(f"{path}: data root not found (from ${ENV_VAR})")
        return path.resolve()
    for candidate in (Path.cwd() / ".." / "shared" / "data", _repo_shared_data()):
        if candidate.is_dir():
            return candidate.resolve()
    cache = user_cache_dir() / "data"
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{cache}: cannot create data cache folder ({exc.strerror or exc})") from None
    return cache.resolve()
