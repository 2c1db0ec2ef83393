"""No number changes by accident: every experiment's smoke run and smoke comparison reproduce the recorded
fixtures (``tests/smoke_fixtures.py`` explains how they are made and when to regenerate them)."""

from __future__ import annotations

import json

import pytest

from smoke_fixtures import EXPERIMENTS, SHARED_DATA, differences, fixture_path, run_smoke


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory):
    return tmp_path_factory.mktemp("smoke-fixtures")


@pytest.mark.slow  # ≈ 3 minutes for all five experiments (one thread)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_smoke_numbers_match_the_fixtures(experiment, smoke_root):
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip(f"real data folder absent: {SHARED_DATA}")
    got = run_smoke(experiment, smoke_root)
    for kind, payload in got.items():
        want = json.loads(fixture_path(experiment, kind).read_text())
        diffs = differences(payload, want, kind)
        assert not diffs, f"{experiment} {kind} changed:\n" + "\n".join(diffs[:20])
