"""Exported MRI mask generator (flowcs export) and the benchmark command (flowcs bench). No timed assertions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flowcs.errors import ConfigError
from flowcs.export import build_generator, export_policy, load_exported, noise_for, script
from flowcs.flow.model import FlowModel, FrozenEncoder
from flowcs.flow.nets.mlp import MRIVelocityMLP
from flowcs.flow.policy import FlowPolicy
from flowcs.operators.fft import complex_abs
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


def reference_masks(policy: FlowPolicy, y: torch.Tensor, lf: torch.Tensor, k: int, seed: int):
    size = y.shape[-1]
    op = KSpaceLineOperator(size, size)
    acq = lf.expand(y.shape[0], -1).clone()
    cond = complex_abs(op.zero_filled(y, acq))
    masks = policy.propose(cond, k, acq, torch.Generator().manual_seed(seed))
    scores = policy.scores(cond, acq, torch.Generator().manual_seed(seed))
    return masks, scores


@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize("size", [30, 32])  # 30: the encoder pads to a multiple of 8
def test_exported_masks_equal_the_policy(tmp_path, fold, size):
    policy = tiny_policy(size)
    lf = low_frequency_band(size, 0.125)
    k = 7
    out = tmp_path / "policy.pt"
    cfg = export_policy(policy, lf, k, out, {"experiment": "tiny", "image_size": [size, size]},
                        fold_first_layer=fold)
    assert cfg["k"] == k and cfg["steps"] == 5 and cfg["samples"] == 3
    sidecar = json.loads((tmp_path / "policy.pt.json").read_text())
    assert sidecar["low_frequency_lines"] == lf.nonzero().flatten().tolist()
    exp = load_exported(out)
    assert exp.config == cfg
    differing = 0
    for seed in range(4):
        y = lf_kspace(size, 5, lf, seed)
        ref, ref_scores = reference_masks(policy, y, lf, k, seed)
        got = exp.masks(y, seed=seed)
        assert got.dtype == torch.bool and got.shape == (5, size)
        assert (got.sum(1) == k + int(lf.sum())).all() and (got[:, lf]).all()
        torch.testing.assert_close(exp.scores(y, exp.noise(5, seed=seed)), ref_scores, atol=1e-4, rtol=1e-4)
        differing += int((got != ref).any(dim=1).sum())
    assert differing == 0


def test_generator_variants_agree_with_eager(tmp_path):
    """Unfrozen script, frozen script and the eager module give the same masks; bf16 encoder stays close."""
    size = 32
    policy = tiny_policy(size, steps=4, samples=2, seed=1)
    lf = low_frequency_band(size, 0.125)
    y = lf_kspace(size, 3, lf, 5)
    noise = noise_for(3, 2, size, seed=3)
    ref, _ = reference_masks(policy, y, lf, 6, 3)
    for cl in (True, False):
        gen = build_generator(policy, lf, 6, channels_last=cl)
        with torch.inference_mode():
            assert torch.equal(gen(y, noise), ref)
            assert torch.equal(script(gen, freeze=False)(y, noise), ref)
            assert torch.equal(script(gen, freeze=True)(y, noise), ref)
    bf = build_generator(policy, lf, 6, encoder_bf16=True)
    with torch.inference_mode():
        s_bf = bf.scores(y, noise)
        s32 = build_generator(policy, lf, 6).scores(y, noise)
    assert torch.isfinite(s_bf).all() and float((s_bf - s32).abs().max()) < 0.5


def test_steps_and_samples_override(tmp_path):
    size = 32
    policy = tiny_policy(size)
    lf = low_frequency_band(size, 0.125)
    cfg = export_policy(policy, lf, 5, tmp_path / "p.pt", {"image_size": [size, size]}, steps=2, samples=1)
    assert cfg["steps"] == 2 and cfg["samples"] == 1
    policy.steps, policy.samples = 2, 1
    y = lf_kspace(size, 2, lf, 1)
    ref, _ = reference_masks(policy, y, lf, 5, 9)
    assert torch.equal(load_exported(tmp_path / "p.pt").masks(y, seed=9), ref)


def test_load_exported_rejects_other_files(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"a": 1}, bad)
    with pytest.raises(ConfigError, match="not a TorchScript"):
        load_exported(bad)
    with pytest.raises(ConfigError, match="no exported policy"):
        load_exported(tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(other))
    with pytest.raises(ConfigError, match="not a flowcs exported policy"):
        load_exported(other)


def test_exported_policy_runs_without_the_training_code(tmp_path):
    """A fresh process that never imports flowcs loads the archive with torch.jit.load alone."""
    size = 32
    lf = low_frequency_band(size, 0.125)
    export_policy(tiny_policy(size), lf, 5, tmp_path / "p.pt", {"image_size": [size, size]})
    code = ("import sys, torch\n"
            "m = torch.jit.load(sys.argv[1])\n"
            "y = torch.randn(2, 2, 32, 32)\n"
            "mask = m(y, torch.randn(2, 3, 32))\n"
            "assert mask.dtype == torch.bool and mask.shape == (2, 32)\n"
            "assert not any(name.startswith('flowcs') for name in sys.modules)\n"
            "print(int(mask.sum()))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "p.pt")], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": ""})
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip()) == 2 * (5 + int(lf.sum()))


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
    out = tmp_path / "policy.pt"
    proc = run_cli("export", "--run-dir", str(smoke_run), "--out", str(out), "--check", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "masks equal to the training code's on 4/4" in proc.stdout
    cfg = json.loads((tmp_path / "policy.pt.json").read_text())
    assert cfg["experiment"] == "mri-8x" and cfg["columns"] == 208 and cfg["k"] == 18
    assert len(cfg["low_frequency_lines"]) == 8 and cfg["steps"] == 4  # the smoke preset's flow.steps
    # and against the training code directly, on the run's own policy
    from flowcs.experiments.context import load_run
    from flowcs.experiments.mri import Geometry, trained_flow

    ctx = load_run(smoke_run, "cpu")
    setup = Geometry.from_cfg(ctx.cfg)
    policy = trained_flow(ctx)
    y = lf_kspace(208, 3, setup.lf, 11)
    ref, _ = reference_masks(policy, y, setup.lf, setup.k, 4)
    assert torch.equal(load_exported(out).masks(y, seed=4), ref)


def test_cli_export_bad_run_dir_is_one_line(tmp_path):
    proc = run_cli("export", "--run-dir", str(tmp_path), "--out", str(tmp_path / "p.pt"))
    assert proc.returncode != 0
    assert proc.stderr.strip().startswith("flowcs: error:") and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "p.pt").exists()


def test_cli_bench_writes_the_json_keys(smoke_run, tmp_path):
    out = tmp_path / "bench" / "latency.json"
    proc = run_cli("bench", "--run-dir", str(smoke_run), "--runs", "4", "--baseline-runs", "2", "--warmup", "1",
                   "--batches", "1,2", "--steps", "2,4", "--quality-images", "2", "--smoke", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads(out.read_text())
    for key in ("p50_ms", "p90_ms", "p99_ms", "ads_over_flow_per_line", "serving_peak_rss_mb"):
        assert isinstance(payload[key], (int, float)) and payload[key] > 0, key
    env = payload["environment"]
    assert env["torch_version"] == torch.__version__ and env["torch_threads"] == 1 and env["cpu_model"]
    assert len(payload["load_before"]) == 3 and len(payload["load_after"]) == 3
    r = payload["runs"]["mri-8x"]
    assert r["latency_batch1"]["exported"]["n"] == 4 and r["latency_batch1"]["training_code"]["n"] == 2
    same, total = r["exported_masks_equal_training_code"].split("/")
    assert same == total
    assert set(r["throughput_exported"]) == {"1", "2"} and set(r["steps"]) == {"2", "4"}
    assert "ssim_mean" in r["steps"]["4"] and r["steps"]["4"]["masks_equal_to_4_steps"] == "4/4"
    assert "adps_over_flow_per_line" in r["peers"]
    assert "peak_rss_mb" in r["serving_rss"]["exported"]
    md = out.with_suffix(".md").read_text()
    assert "p50" in md and "ADS" in md and "A-DPS" in md and "Load average" in md
