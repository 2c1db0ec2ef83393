"""Shared test fixtures: the real data root (../shared/data) and a clean per-test cwd."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip(f"real data folder absent: {SHARED_DATA / 'mnist'}")
    return SHARED_DATA
