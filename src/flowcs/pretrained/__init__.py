"""Pretrained policies shipped with flowcs: ``flowcs mri mask FILE`` works right after installation.

Each folder is a stripped run directory (config, encoder, flow and MoDL weights in float16) packaged from a
committed, clean-commit run by ``scripts/make_pretrained.py``, with ``PROVENANCE.json`` beside it: the commit,
the training data, the validation SSIM of the chosen setting and the test SSIM next to the central block's.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError

__all__ = ["DEFAULT", "available", "path", "provenance"]

DEFAULT = "mri-8x"
_ROOT = Path(__file__).resolve().parent


def available() -> list[str]:
    return sorted(p.name for p in _ROOT.iterdir() if (p / "PROVENANCE.json").is_file())


def path(name: str = DEFAULT) -> Path:
    """The run directory of a shipped policy."""
    p = _ROOT / name
    if not (p / "PROVENANCE.json").is_file():
        raise ConfigError(f"no pretrained policy {name!r}; shipped: {', '.join(available()) or 'none'}")
    return p


def provenance(name: str = DEFAULT) -> dict:
    return json.loads((path(name) / "PROVENANCE.json").read_text())
