"""No number changes by accident: every experiment's smoke run and smoke comparison reproduce the recorded
fixtures (``tests/smoke_fixtures.py`` explains how they are made and when to regenerate them); and
``flowcs compare`` reports exactly the experiment's own rows for the same seeds and test images."""

from __future__ import annotations

import json
import warnings

import pytest

from smoke_fixtures import (
    EXPERIMENTS,
    FIXTURES,
    SHARED_DATA,
    _cli,
    differences,
    fixture_path,
    loose_differences,
    platform,
    run_smoke,
)

_RUNS: dict = {}


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory):
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip(f"real data folder absent: {SHARED_DATA}")
    return tmp_path_factory.mktemp("smoke-fixtures")


def smoke(experiment: str, root) -> dict:
    if experiment not in _RUNS:
        _RUNS[experiment] = run_smoke(experiment, root)
    return _RUNS[experiment]


@pytest.mark.slow  # ≈ 2.5 minutes for all five experiments (one thread)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_smoke_numbers_match_the_fixtures(experiment, smoke_root):
    recorded, here = json.loads((FIXTURES / "platform.json").read_text()), platform()
    exact = here == recorded
    if not exact:
        warnings.warn(f"smoke fixtures were written on {recorded}, this is {here}: structure and means "
                      "within the other-platform tolerance only", stacklevel=1)
    for kind, payload in smoke(experiment, smoke_root).items():
        want = json.loads(fixture_path(experiment, kind).read_text())
        diffs = differences(payload, want, kind) if exact else loose_differences(payload, want, kind)
        assert not diffs, f"{experiment} {kind} changed:\n" + "\n".join(diffs[:20])


def test_the_other_platform_check_still_catches_a_changed_mean_or_key():
    want = {"policies": {"flow": {"mean": [0.5, 0.6], "ci95": [[0.4, 0.6]]}}, "ordering": {"ok": True}}
    drift = {"policies": {"flow": {"mean": [0.52, 0.58], "ci95": [[0.3, 0.7]]}}, "ordering": {"ok": False}}
    assert loose_differences(drift, want) == []
    broken = {"policies": {"flow": {"mean": [0.5, 0.9], "ci95": [[0.4, 0.6]]}}, "ordering": {"ok": True}}
    assert loose_differences(broken, want) == [".policies.flow.mean[1]: 0.9 != 0.6 (rel 0.15)"]
    assert loose_differences({"policies": {}, "ordering": {"ok": True}}, want) == [".policies.flow: missing"]
    assert differences(drift, want) != []  # the same-platform check is exact


@pytest.mark.slow
@pytest.mark.parametrize("experiment,own", [
    ("mnist-classify", "flow,random,random-same-total"),
    ("mri-4x", "flow,random,equispaced,variable-density,low-frequency")])
def test_compare_rows_equal_the_experiments_own_rows(experiment, own, smoke_root):
    """The same test images and seeds through `flowcs compare` give the rows of the experiment's metrics.json."""
    metrics = smoke(experiment, smoke_root)["metrics"]
    run_dir = smoke_root / experiment
    out = run_dir / "compare-same"
    _cli("compare", experiment, "--smoke", "--run-dir", str(run_dir), "--results", str(out), "--policies", own,
         "--set", "compare.test_subset=null", "--set", f"compare.seeds={metrics['seeds']}",
         "--set", "compare.batch_size=5")  # another batch size: the draws are per sample
    compared = json.loads((out / "compare.json").read_text())
    n_test = metrics.get("test_images") or len(metrics["per_image"]["names"])
    assert compared["test_images"] == n_test and compared["seeds"] == metrics["seeds"]
    for name in own.split(","):
        mine, theirs = metrics["policies"][name], compared["policies"][name]
        assert theirs["mean"] == pytest.approx(mine["mean"], rel=1e-12, abs=1e-12), name
        if "std_seeds" in mine:  # pixel rows: the same per-seed statistics
            assert theirs["std_seeds"] == pytest.approx(mine["std_seeds"], abs=1e-12)
            assert [x for ci in theirs["ci95"] for x in ci] == pytest.approx(
                [x for ci in mine["ci95"] for x in ci], abs=1e-12)
