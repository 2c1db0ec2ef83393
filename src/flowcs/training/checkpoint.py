"""Atomic, resumable, safely-loadable checkpoints.

A checkpoint is a dict of tensors and plain Python values, saved atomically
and loaded with ``weights_only=True``. ``kind`` and ``signature`` identify the
model and the configuration that shape it, so a checkpoint of another model
is refused with a clear message instead of a state-dict key dump.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..io import torch_load_safe, torch_save


def save_checkpoint(path: str | Path, kind: str, signature: dict, state: dict[str, Any]) -> None:
    torch_save(path, {"format": "flowcs-checkpoint-1", "kind": kind, "signature": signature, **state})


def load_checkpoint(path: str | Path, kind: str | None = None, signature: dict | None = None) -> dict[str, Any]:
    """Load and validate a checkpoint; raise :class:`CheckpointError` naming the mismatch."""
    ckpt = torch_load_safe(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != "flowcs-checkpoint-1":
        raise CheckpointError(f"{path}: not a flowcs checkpoint")
    if kind is not None and ckpt.get("kind") != kind:
        raise CheckpointError(f"{path}: checkpoint holds a {ckpt.get('kind')!r} model, expected {kind!r}")
    if signature is not None:
        theirs = ckpt.get("signature", {})
        diffs = [f"{k}={theirs[k]!r} (expected {v!r})" if k in theirs
                 else f"{k} not recorded (the checkpoint predates this setting; expected {v!r})"
                 for k, v in signature.items() if theirs.get(k) != v]
        if diffs:
            raise CheckpointError(f"{path}: checkpoint does not match the configuration: {', '.join(diffs)}")
    return ckpt


def load_state_into(module, ckpt: dict, path: str | Path, key: str = "model") -> None:
    try:
        module.load_state_dict(ckpt[key])
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: weights do not fit the model ({str(exc).splitlines()[0][:200]})") from None


def newest_valid(paths: list[Path], kind: str, signature: dict | None = None) -> tuple[Path, dict] | None:
    """The newest loadable checkpoint among ``paths``; corrupt ones are skipped with a warning."""
    for p in sorted((p for p in paths if p.is_file()), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            return p, load_checkpoint(p, kind, signature)
        except CheckpointError as exc:
            if "does not match" in str(exc) or "holds a" in str(exc):
                raise
            warnings.warn(f"skipping unusable checkpoint: {exc}", stacklevel=2)
    return None
