"""A run directory is used by one process at a time.

Two ``flowcs train … --run-dir D`` started together would both train and write into D (interleaved step logs,
checkpoints overwriting each other). :func:`lock_run_dir` takes ``D/.flowcs.lock`` (created atomically with
``O_EXCL``, holding the owner's pid, host, start time and command) for the life of the process; a second
process ends with one line naming the first. A lock left by a process that no longer runs (killed, machine
rebooted) is detected and taken over. Taking the lock is also the moment to remove the temporary files a killed
process may have left (``.<name>.<random>.tmp`` of :func:`flowcs.io.atomic_write`): nobody else writes here.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import sys
import time
from pathlib import Path

from .errors import ConfigError

__all__ = ["LOCK_NAME", "RunDirLock", "lock_run_dir", "remove_stale_temporaries"]

LOCK_NAME = ".flowcs.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


class RunDirLock:
    """The lock file of one run directory, released when the process exits (or by :meth:`release`)."""

    def __init__(self, path: Path):
        self.path = path
        self.held = False

    def acquire(self) -> RunDirLock:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "command": " ".join(["flowcs", *sys.argv[1:]])[:300]}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = _read(self.path)
                pid = int(owner.get("pid", 0) or 0)
                same_host = owner.get("host") in (None, me["host"])
                if pid == os.getpid():
                    self.held = True
                    return self
                if pid and (_alive(pid) or not same_host):
                    raise ConfigError(
                        f"{self.path.parent}: run directory in use by process {pid} on {owner.get('host', '?')} "
                        f"(started {owner.get('started', '?')}: {owner.get('command', '?')}); wait for it to finish "
                        f"or choose another --run-dir") from None
                print(f"flowcs: {self.path.parent}: taking over the lock of process {pid or '?'}, which no longer "
                      f"runs", file=sys.stderr)
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            self.held = True
            atexit.register(self.release)
            return self
        raise ConfigError(f"{self.path}: cannot take the run directory's lock")

    def release(self) -> None:
        if self.held and _read(self.path).get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the ``.<name>.<random>.tmp`` files an interrupted atomic write left in ``run_dir`` (not recursive)."""
    removed = []
    for p in Path(run_dir).glob(".*.tmp"):
        if p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def lock_run_dir(run_dir: str | os.PathLike) -> RunDirLock:
    """Create ``run_dir`` if needed, take its lock, and clean up what a killed run left behind."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{run_dir}: cannot create the run directory ({exc.strerror or exc})") from None
    lock = RunDirLock(run_dir / LOCK_NAME).acquire()
    removed = remove_stale_temporaries(run_dir)
    if removed:
        print(f"flowcs: {run_dir}: removed {len(removed)} temporary file(s) left by an interrupted run",
              file=sys.stderr)
    return lock
