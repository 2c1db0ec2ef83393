"""Exported MRI mask generator (flowcs export) and the benchmark command (flowcs bench). No timed assertions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from flowcs.acquisition import Magnitude
from flowcs.errors import ConfigError
from flowcs.export import build_generator, export_policy, load_exported
from flowcs.flow.model import FlowModel, FrozenEncoder
from flowcs.flow.nets.mlp import MRIVelocityMLP
from flowcs.flow.policy import FlowPolicy
from flowcs.operators.kspace import KSpaceLineOperator, low_frequency_band
from flowcs.tasks.unet import ReconUNet

REPO = Path(__file__).resolve().parents[1]


def tiny_policy(size: int = 30, steps: int = 5, samples: int = 3, seed: int = 0) -> FlowPolicy:
    """A small MRI flow policy with non-trivial weights (BN statistics and the zero-initialised output layer set)."""
    torch.manual_seed(seed)
    enc = ReconUNet(1, 1, (4, 8, 8), 8)
    for m in enc.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    vel = MRIVelocityMLP(size, sum(enc.feature_channels), hidden=32, layers=3, time_dim=16)
    torch.nn.init.normal_(vel.out.weight, std=0.3)
    torch.nn.init.normal_(vel.out.bias, std=0.1)
    return FlowPolicy(FlowModel(FrozenEncoder(enc, "encode"), vel), size, steps=steps, samples=samples)


def lf_kspace(size: int, batch: int, lf: torch.Tensor, seed: int = 0) -> torch.Tensor:
    op = KSpaceLineOperator(size, size)
    x = torch.randn(batch, 2, size, size, generator=torch.Generator().manual_seed(seed))
    return op.measure(x, lf.expand(batch, -1))


def reference(policy: FlowPolicy, y: torch.Tensor, lf: torch.Tensor, k: int, seed: int, pool: int = 1):
    """(masks, scores) of the training code on LF k-space ``y`` (its x0 from a generator seeded ``seed``)."""
    size = y.shape[-1]
    op = KSpaceLineOperator(size, size)
    acq = lf.expand(y.shape[0], -1).clone()
    cond = Magnitude(pool)(op, op.zero_filled(y, acq), acq)
    masks = policy.propose(cond, k, acq, torch.Generator().manual_seed(seed))
    scores = policy.scores(cond, acq, torch.Generator().manual_seed(seed))
    return masks, scores


def assert_masks_agree(got: torch.Tensor, ref: torch.Tensor, scores: torch.Tensor, lf: torch.Tensor, k: int):
    """Equal masks wherever the k-th and (k+1)-th best non-LF scores are more than 1e-4 apart."""
    free = scores.masked_fill(lf.expand_as(scores), float("-inf")).sort(dim=1, descending=True).values
    clear = (free[:, k - 1] - free[:, k]) > 1e-4
    assert bool(clear.any())
    assert torch.equal(got[clear], ref[clear])
    assert (got.sum(1) == k + int(lf.sum())).all() and bool(got[:, lf].all())


@pytest.mark.parametrize("ext", [".pt2", ".onnx"])
@pytest.mark.parametrize("size,pool", [(30, 1), (32, 1), (32, 4), (30, 4)])  # 30: the encoder pads; pooled inputs
def test_exported_scores_and_masks_equal_the_policy(tmp_path, ext, size, pool):
    policy = tiny_policy(size)
    lf = low_frequency_band(size, 0.125)
    k = 7
    out = tmp_path / f"policy{ext}"
    cfg = export_policy(policy, lf, k, size, out, {"experiment": "tiny"}, pool)
    assert cfg["k"] == k and cfg["steps"] == 5 and cfg["samples"] == 3 and cfg["pool"] == pool
    sidecar = json.loads((tmp_path / f"policy{ext}.json").read_text())
    assert sidecar["low_frequency_lines"] == lf.nonzero().flatten().tolist()
    exp = load_exported(out)
    assert exp.config == cfg and exp.runtime == ("onnxruntime" if ext == ".onnx" else "torch")
    for seed in range(3):
        y = lf_kspace(size, 5, lf, seed)
        ref, ref_scores = reference(policy, y, lf, k, seed, pool)
        got = exp.masks(y, seed=seed)  # batch 5 through a program exported with batch 2: the batch is dynamic
        assert got.dtype == torch.bool and got.shape == (5, size)
        torch.testing.assert_close(exp.scores(y, exp.noise(5, seed=seed)), ref_scores, atol=1e-4, rtol=1e-4)
        assert_masks_agree(got, ref, ref_scores, lf, k)


def test_steps_and_samples_override_and_prior(tmp_path):
    size = 32
    policy = tiny_policy(size)
    policy.prior = torch.linspace(0, 1, size)
    lf = low_frequency_band(size, 0.125)
    cfg = export_policy(policy, lf, 5, size, tmp_path / "p.pt2", {}, steps=2, samples=1)
    assert cfg["steps"] == 2 and cfg["samples"] == 1
    policy.steps, policy.samples = 2, 1
    y = lf_kspace(size, 2, lf, 1)
    ref, scores = reference(policy, y, lf, 5, 9)
    exp = load_exported(tmp_path / "p.pt2")
    torch.testing.assert_close(exp.scores(y, exp.noise(2, seed=9)), scores, atol=1e-4, rtol=1e-4)
    assert_masks_agree(exp.masks(y, seed=9), ref, scores, lf, 5)


def test_sequential_policies_are_not_exported():
    policy = tiny_policy(32)
    policy.rounds = 2
    with pytest.raises(ConfigError, match="one-shot"):
        build_generator(policy, low_frequency_band(32, 0.125), 5, 32)


def test_loading_refuses_other_files_and_unpickles_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for name in ("evil.pt2", "evil.onnx"):
        bad = tmp_path / name
        torch.save({"a": Evil()}, bad)
        with pytest.raises(ConfigError, match="not a torch.export program|not a readable ONNX model"):
            load_exported(bad)
    assert not marker.exists()  # nothing was unpickled
    with pytest.raises(ConfigError, match="no exported policy"):
        load_exported(tmp_path / "missing.pt2")
    with pytest.raises(ConfigError, match="unknown export format"):
        (tmp_path / "p.pt").write_bytes(b"x")
        load_exported(tmp_path / "p.pt")
    other = tmp_path / "other.pt2"
    torch.export.save(torch.export.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),)), other)
    with pytest.raises(ConfigError, match="not a flowcs exported policy"):
        load_exported(other)


def test_exported_policy_runs_without_the_training_code(tmp_path):
    """A fresh process that never imports flowcs runs the .pt2 with torch alone and the .onnx with ONNX Runtime."""
    size = 32
    lf = low_frequency_band(size, 0.125)
    policy = tiny_policy(size)
    for ext in (".pt2", ".onnx"):
        export_policy(policy, lf, 5, size, tmp_path / f"p{ext}", {})
    code = ("import sys, numpy as np, torch, onnxruntime as ort\n"
            "m = torch.export.load(sys.argv[1]).module()\n"
            "y, n = torch.randn(2, 2, 32, 32), torch.randn(2, 3, 32)\n"
            "mask, scores = m(y, n)\n"
            "assert mask.dtype == torch.bool and mask.shape == (2, 32)\n"
            "s = ort.InferenceSession(sys.argv[2], providers=['CPUExecutionProvider'])\n"
            "m2, s2 = s.run(None, {'kspace': y.numpy(), 'noise': n.numpy()})\n"
            "assert np.abs(s2 - scores.numpy()).max() < 1e-4\n"
            "assert not any(name.startswith('flowcs') for name in sys.modules)\n"
            "print(int(mask.sum()), int(m2.sum()))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "p.pt2"), str(tmp_path / "p.onnx")],
                          capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [str(2 * (5 + int(lf.sum())))] * 2


def test_percentiles_and_time_calls():
    from flowcs.bench.timing import percentiles, time_calls

    p = percentiles([float(i) for i in range(1, 101)])
    assert (p["p50_ms"], p["p90_ms"], p["p99_ms"], p["n"]) == (50.0, 90.0, 99.0, 100)
    calls = []
    wall, cpu = time_calls(calls.append, 3, warmup=2)
    assert calls == [0, 1, 0, 1, 2] and len(wall) == len(cpu) == 3


# ----------------------------------------------------------------------------- CLI on a smoke-trained MRI run


def run_cli(*args, cwd=REPO):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "flowcs", *args], capture_output=True, text=True, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    from flowcs.data.synthetic import write_synthetic_dataset

    data = tmp_path_factory.mktemp("synthetic-fastmri")
    write_synthetic_dataset(data, 5, n_slices=3, rows=224, cols=216, seed=0)
    run_dir = tmp_path_factory.mktemp("mri-8x-smoke")
    proc = run_cli("train", "mri-8x", "--smoke", "--run-dir", str(run_dir), "--device", "cpu",
                   "--set", "data.source=fastmri", "--set", f"data.fastmri_dir={data}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run_dir / "flow.pt").is_file()
    return run_dir


def test_cli_export_masks_equal_the_run_policy(smoke_run, tmp_path):
    out = tmp_path / "policy.pt2"
    proc = run_cli("export", "--run-dir", str(smoke_run), "--out", str(out), "--check", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "masks equal to the training code's on 4/4" in proc.stdout
    cfg = json.loads((tmp_path / "policy.pt2.json").read_text())
    assert cfg["experiment"] == "mri-8x" and cfg["columns"] == 208 and cfg["k"] == 18
    # the step count and samples are the run's own configuration (config.yaml), not a default of the exporter
    run_cfg = yaml.safe_load((smoke_run / "config.yaml").read_text())
    assert cfg["steps"] == run_cfg["flow"]["steps"] == 4 and cfg["samples"] == run_cfg["flow"]["samples"]
    assert len(cfg["low_frequency_lines"]) == 8 and cfg["pool"] == run_cfg["encoder"]["pool"]
    # and against the training code directly, on the run's own policy
    from flowcs.experiments import get_experiment
    from flowcs.experiments.context import load_run

    ctx = load_run(smoke_run, "cpu")
    exp = get_experiment("mri-8x")
    geometry, policy = exp.geometry(ctx.cfg), exp.flow_policy(ctx)
    y = lf_kspace(208, 3, geometry.lf, 11)
    ref, scores = reference(policy, y, geometry.lf, geometry.k, 4, geometry.pool)
    assert_masks_agree(load_exported(out).masks(y, seed=4), ref, scores, geometry.lf, geometry.k)


def test_cli_export_bad_run_dir_is_one_line(tmp_path):
    proc = run_cli("export", "--run-dir", str(tmp_path), "--out", str(tmp_path / "p.pt2"))
    assert proc.returncode != 0
    assert proc.stderr.strip().startswith("flowcs: error:") and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "p.pt2").exists()


def test_cli_bench_writes_the_json_keys(smoke_run, tmp_path):
    out = tmp_path / "bench" / "latency.json"
    proc = run_cli("bench", "--run-dir", str(smoke_run), "--runs", "4", "--baseline-runs", "2", "--warmup", "1",
                   "--batches", "1,2", "--steps", "2,4", "--samples", "1,2", "--quality-images", "2",
                   "--quality-seeds", "2", "--smoke", "--out", str(out))
    assert proc.returncode in (0, 3), proc.stderr[-3000:]  # 3: the test machine is busy (valid: false)
    payload = json.loads(out.read_text())
    assert payload["valid"] == (proc.returncode == 0) and payload["schema"] == "flowcs-bench/2"
    assert payload["git_commit"] and payload["runtime"] in ("pt2", "onnx")
    for key in ("p50_ms", "p90_ms", "p99_ms", "ads_over_flow_per_line", "serving_peak_rss_mb"):
        assert isinstance(payload[key], (int, float)) and payload[key] > 0, key
    env = payload["environment"]
    assert env["torch_version"] == torch.__version__ and env["torch_threads"] == 1 and env["cpu_model"]
    assert len(payload["load_before"]) == 3 and len(payload["load_after"]) == 3
    r = payload["runs"]["mri-8x"]
    for runtime in ("pt2", "onnx", "torchscript", "eager"):
        assert r["latency_batch1"][runtime]["n"] == 4 and r["masks_equal_training_code"][runtime] == "16/16"
        assert set(r["throughput"][runtime]) == {"1", "2"}
    assert r["latency_batch1"]["training_code"]["n"] == 2
    q = r["quality"]
    assert q["split"] == "val" and q["reference"] == "steps=4 samples=2" and set(q["rows"]) == {
        "steps=2 samples=1", "steps=2 samples=2", "steps=4 samples=1", "steps=4 samples=2"}
    assert q["rows"]["steps=4 samples=2"]["masks_equal_to_reference"] == "4/4"
    assert "adps_over_flow_per_line" in r["peers"]
    assert "peak_rss_mb" in r["serving_rss"]["exported"]
    md = out.with_suffix(".md").read_text()
    assert "p50" in md and "ADS" in md and "A-DPS" in md and "Load average" in md and "ONNX Runtime" in md


def test_bench_marks_a_busy_machine_invalid():
    from flowcs.bench import MAX_LOAD, quiet_machine

    assert MAX_LOAD == 1.0
    assert quiet_machine([0.9, 0.8, 3.0], [[1.95, 1.0, 1.0], [1.2, 1.0, 1.0]], threads=1)  # 15-min lag: ignored
    assert not quiet_machine([1.0, 0.1, 0.1], [[0.5, 0.5, 0.5]], threads=1)  # busy before the first timing
    assert not quiet_machine([0.5, 1.2, 0.1], [[0.5, 0.5, 0.5]], threads=1)  # busy in the last 5 minutes
    assert not quiet_machine([0.2, 0.3, 0.4], [[1.3, 0.5, 0.5], [2.0, 0.5, 0.5]], threads=1)  # another job started
    assert quiet_machine([0.2, 0.3, 0.4], [[2.9, 0.5, 0.5]], threads=2)  # the benchmark's own 2 threads
