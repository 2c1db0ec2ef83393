"""``flowcs compare`` end to end on a smoke mnist-classify run: schema, one row per policy, frozen task."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import pytest
import torch

from flowcs.errors import ConfigError
from flowcs.experiments import build_context, compare, get_experiment
from flowcs.experiments.compare_report import compare_markdown
from flowcs.training.checkpoint import load_checkpoint

SHARED_DATA = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()
POLICIES = ["flow", "random", "random-same-total", "loupe", "dps", "adps", "ads"]


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _compare_args(run_dir, *extra):
    parser = argparse.ArgumentParser(prog="flowcs")
    sub = parser.add_subparsers(dest="command", required=True)
    compare.add_parser(sub)
    return parser.parse_args(["compare", "mnist-classify", "--smoke", "--run-dir", str(run_dir), "--device", "cpu",
                              "--threads", "2", *extra])


@pytest.fixture(scope="module")
def smoke_compare(tmp_path_factory):
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip("real MNIST data absent")
    torch.set_num_threads(2)
    run_dir = tmp_path_factory.mktemp("compare-smoke")
    ctx = build_context("mnist-classify", smoke=True, run_dir=str(run_dir), device="cpu")
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    get_experiment("mnist-classify").train(ctx, ["classifier", "unet", "flow"])
    before = _sha(run_dir / "classifier.pt")
    args = _compare_args(run_dir, "--policies", ",".join(POLICIES), "--set", "compare.ads.test_images=16",
                         "--set", "compare.test_subset=64")
    assert compare.run(args) == 0
    return run_dir, before


@pytest.mark.slow  # shares a ~4-min smoke comparison (peers trained on real MNIST)
def test_schema_and_one_row_per_policy(smoke_compare):
    run_dir, _ = smoke_compare
    res = run_dir / "results"
    p = json.loads((res / "compare.json").read_text())
    for key in ("experiment", "metric", "higher_is_better", "budget_unit", "budgets", "policies"):
        assert key in p
    assert p["experiment"] == "mnist-classify" and p["metric"] == "accuracy" and p["budget_unit"] == "percent"
    assert list(p["policies"]) == POLICIES
    nb = len(p["budgets"])
    for row in p["policies"].values():
        assert len(row["mean"]) == nb and len(row["std_seeds"]) == nb and len(row["ci95"]) == nb and row["n"] > 0
        assert all(0.0 <= m <= 1.0 for m in row["mean"])
        assert "trained" in row
    assert p["policies"]["ads"]["n"] == 16 and p["policies"]["flow"]["n"] == 64
    assert set(p["subsets"]["first16"]["policies"]) == set(POLICIES)
    assert set(p["decision_time_ms"]) == set(POLICIES)
    assert p["decision_time_ms"]["ads"]["ms_per_location"] > 0 and p["decision_time_ms"]["flow"]["images"] == 64
    assert "per budget" in p["trained_per_budget"]["loupe"] and "one model" in p["trained_per_budget"]["flow"]
    assert set(p["ordering"]["per_budget"]) == {str(b) for b in p["budgets"]}
    md = (res / "compare.md").read_text()
    assert all(f"| {name} |" in md for name in POLICIES) and "64 test images" in md
    assert "64 validation images" in compare_markdown({**p, "split": "val"})
    assert (res / "compare.png").stat().st_size > 1000 and (res / "compare.run.json").is_file()


@pytest.mark.slow  # shares a ~4-min smoke comparison (peers trained on real MNIST)
def test_peers_are_trained_against_the_frozen_task(smoke_compare):
    run_dir, before = smoke_compare
    assert _sha(run_dir / "classifier.pt") == before  # the task checkpoint is untouched
    p = json.loads((run_dir / "results" / "compare.json").read_text())
    fp = p["task"]["fingerprint"]
    assert fp == _sha(run_dir / "classifier.pt")[:16]
    stages = p["task"]["peers_trained_against"]
    budgets = p["budget_locations"]
    expected = {f"compare-{peer}-k{b}" for peer in ("loupe", "dps", "adps") for b in budgets} | {"compare-ads-prior"}
    assert set(stages) == expected
    assert stages.pop("compare-ads-prior") is None  # the image prior never sees the task: not tied to it
    assert set(stages.values()) == {fp}
    for stage in expected:
        ckpt = load_checkpoint(run_dir / f"{stage}.pt", stage)
        if stage == "compare-ads-prior":
            assert ckpt["done"] and "task" not in ckpt["signature"]
        else:
            assert ckpt["done"] and ckpt["signature"]["task"] == fp
        # only the peer's own weights are trained and saved (the classifier is not part of the objective)
        assert all(k.startswith(("peer.", "model.")) for k in ckpt["model"])
        assert not any("net.1.weight" == k.split(".", 1)[1] for k in ckpt["model"])


@pytest.mark.slow  # shares a ~4-min smoke comparison (peers trained on real MNIST)
def test_rerun_loads_trained_peers_and_reproduces(smoke_compare):
    run_dir, _ = smoke_compare
    first = json.loads((run_dir / "results" / "compare.json").read_text())
    args = _compare_args(run_dir, "--policies", "flow,loupe,dps,adps", "--results", str(run_dir / "again"),
                         "--set", "compare.test_subset=64")
    assert compare.run(args) == 0
    again = json.loads((run_dir / "again" / "compare.json").read_text())
    assert all(v["trained_s"] == 0.0 for v in again["training"].values())
    for name in ("flow", "loupe", "dps", "adps"):
        assert again["policies"][name]["mean"] == first["policies"][name]["mean"]


def test_unknown_policy_and_bad_settings_are_one_line_errors(tmp_path):
    allowed = ["flow", "random", "random-same-total", "loupe", "dps", "adps", "ads"]
    with pytest.raises(ConfigError, match="unknown policy"):
        compare.parse_policies("flow,nope", allowed, allowed)
    with pytest.raises(ConfigError, match="unknown policy"):
        compare.parse_policies("equispaced", allowed, allowed)
    with pytest.raises(ConfigError, match="listed twice"):
        compare.parse_policies("flow,flow", allowed, allowed)
    # the comparison's settings are the compare: section of the experiment config, checked before any work
    with pytest.raises(ConfigError, match="test_mode"):
        build_context("mnist-classify", overrides=["compare.loupe.test_mode=best"], run_dir=str(tmp_path / "r"))
    with pytest.raises(ConfigError, match="unknown config key"):
        build_context("mnist-classify", overrides=["compare.nope=1"], run_dir=str(tmp_path / "r"))
    ctx = build_context("mnist-classify", overrides=["compare.ads.samples=4"], run_dir=str(tmp_path / "r"))
    assert ctx.cfg.compare.ads.samples == 4 and ctx.cfg.compare.ads.steps == 6  # the experiment's preset
