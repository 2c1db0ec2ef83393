"""mnist-recon and faces-recon: configs, smoke runs end to end, metrics by hand, and one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from flowcs.errors import ConfigError
from flowcs.experiments import build_context, faces_recon, get_experiment
from flowcs.experiments.pixel import UNetConfig, budgets_to_pixels, first_measurement
from flowcs.experiments.recon import DataConsistentTask, make_recon_unet, recon_metrics
from flowcs.masks import random_mask
from flowcs.metrics import mae, psnr, ssim
from flowcs.policies.random import RandomPolicy

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared" / "data").resolve()
PNG = b"\x89PNG\r\n\x1a\n"


def run_cli(*args, env_extra: dict | None = None, timeout: int = 600):
    # One intra-op thread: on a shared 2-core machine two spinning OpenMP threads are many times slower.
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "flowcs", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


def assert_one_line_error(proc, *fragments):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()
    assert err and err[-1].startswith("flowcs: error:"), proc.stderr[-2000:]
    for f in fragments:
        assert f in err[-1], err[-1]


def _losses(path: Path, key: str) -> list[float]:
    return [json.loads(line)[key] for line in path.read_text().splitlines() if line.strip()]


def _went_down(values: list[float]) -> bool:
    third = max(1, len(values) // 3)
    return np.mean(values[-third:]) < np.mean(values[:third])


# ----------------------------------------------------------------------------- configs


def test_budgets_in_pixels_or_percent():
    assert budgets_to_pixels([10, 500], "pixels", 1024) == [10, 500]
    assert budgets_to_pixels([4.8828125, 48.828125], "percent", 16384) == [800, 8000]  # the paper's budgets
    assert budgets_to_pixels([4.8828125, 48.828125], "percent", 4096) == [200, 2000]
    with pytest.raises(ConfigError, match="exceeds the 1024 pixels"):
        budgets_to_pixels([2000], "pixels", 1024)
    with pytest.raises(ConfigError, match="whole number"):
        budgets_to_pixels([2.5], "pixels", 1024)
    with pytest.raises(ConfigError, match="out of range"):
        budgets_to_pixels([120], "percent", 1024)
    with pytest.raises(ConfigError, match="unit 'px'"):
        budgets_to_pixels([1], "px", 1024)


def test_first_samples_plus_budget_must_fit(tmp_path):
    with pytest.raises(ConfigError, match="first_samples=600 plus the largest budget of 500"):
        build_context("mnist-recon", overrides=["flow.first_samples=600"], run_dir=str(tmp_path / "r"),
                      data=str(tmp_path))
    with pytest.raises(ConfigError, match="grid_budgets"):
        build_context("mnist-recon", overrides=["eval.grid_budgets=[30]"], run_dir=str(tmp_path / "r"),
                      data=str(tmp_path))
    with pytest.raises(ConfigError, match="image_size must be at least 28"):
        build_context("mnist-recon", overrides=["data.image_size=16"], run_dir=str(tmp_path / "r"),
                      data=str(tmp_path))
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------- metrics by hand


def test_mae_psnr_ssim_match_hand_computed_values():
    target = torch.zeros(1, 1, 2, 2)
    pred = torch.tensor([[[[0.0, 1.0], [0.5, 0.5]]]])
    assert mae(pred, target).item() == pytest.approx(0.5)  # (0 + 1 + .5 + .5) / 4
    assert psnr(pred, target, data_range=1.0).item() == pytest.approx(10 * np.log10(1 / 0.375))  # mse 1.5/4
    # constant 7x7 images: one window, zero variances -> SSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01 R)^2
    a, b, c1 = 0.5, 0.25, 1e-4
    value = ssim(torch.full((1, 7, 7), b), torch.full((1, 7, 7), a), data_range=1.0).item()
    assert value == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1))
    # one 7x7 window with structure: the textbook formula with sample (N-1) covariances
    rng = np.random.default_rng(0)
    x, y = rng.random((7, 7)), rng.random((7, 7))
    c2 = (0.03) ** 2
    vx, vy, cxy = x.var(ddof=1), y.var(ddof=1), np.cov(x.ravel(), y.ravel())[0, 1]
    hand = ((2 * x.mean() * y.mean() + c1) * (2 * cxy + c2)) / ((x.mean() ** 2 + y.mean() ** 2 + c1) * (vx + vy + c2))
    got = ssim(torch.tensor(x)[None], torch.tensor(y)[None], data_range=1.0).item()
    assert got == pytest.approx(hand, rel=1e-9)


def test_recon_metrics_clamp_predictions_to_the_pixel_range():
    target = torch.full((2, 3, 8, 8), 0.5)
    pred = target.clone()
    pred[0] = 1.7  # clamped to 1 -> error 0.5 per pixel
    m = recon_metrics()
    assert m["mae"](pred, target).tolist() == pytest.approx([0.5, 0.0])
    assert m["psnr"](pred, target)[0].item() == pytest.approx(10 * np.log10(1 / 0.25))
    assert m["ssim"](pred, target)[1].item() == pytest.approx(1.0)


def test_data_consistency_keeps_measured_pixels_and_blends_soft_masks():
    cfg = faces_recon.Config()
    torch.manual_seed(0)
    task = DataConsistentTask(make_recon_unet(UNetConfig(widths=[4, 8, 8], bottleneck=8), 3)).freeze()
    op = get_experiment("faces-recon").operator(cfg)
    x = torch.rand(2, 3, 64, 64)
    mask = random_mask(2, op.n_locations, 500, None, torch.Generator().manual_seed(1))
    pred = task.predict(op.zero_filled(op.measure(x, mask), mask), op.mask_to_image(mask))
    m = op.mask_to_image(mask).expand_as(x)
    assert torch.equal(pred[m], x[m])  # measured pixels come back exactly, in every channel
    raw = task.model(torch.cat([op.zero_filled(op.measure(x, mask), mask), m[:, :1].float()], 1))
    assert torch.allclose(pred[~m], raw[~m])  # the U-Net fills the rest
    soft = torch.full((2, op.n_locations), 0.5)
    pred = task.predict(op.zero_filled(op.measure(x, soft), soft), op.mask_to_image(soft))
    raw = task.model(torch.cat([0.25 * x, torch.full_like(x[:, :1], 0.5)], 1))
    assert torch.allclose(pred, 0.25 * x + 0.75 * raw, atol=1e-6)  # convex blend with weight m^2
    with pytest.raises(ConfigError, match="eval.full has no meaning"):
        build_context("faces-recon", overrides=["eval.full=true"])


def test_one_mask_is_shared_by_the_three_colour_channels():
    op = get_experiment("faces-recon").operator(faces_recon.Config())
    assert op.image_shape == (3, 64, 64) and op.n_locations == 64 * 64
    x = torch.rand(4, 3, 64, 64) + 0.1  # no zero pixels: zeros in the measurement come from the mask
    gen = torch.Generator().manual_seed(0)
    acquired, cond = first_measurement(op, x, 41, gen)
    mask = RandomPolicy(op.n_locations).propose(cond, 200, acquired, gen)
    assert mask.shape == (4, 4096) and int(mask.sum(1)[0]) == 241
    y = op.zero_filled(op.measure(x, mask), mask)
    measured = y != 0
    assert torch.equal(measured[:, 0], measured[:, 1]) and torch.equal(measured[:, 0], measured[:, 2])
    assert torch.equal(measured[:, 0].reshape(4, -1), mask)
    assert cond.shape == (4, 4, 64, 64)  # 3 zero-filled colour channels + 1 mask channel
    soft = random_mask(4, op.n_locations, 100, None, gen).float() * 0.5
    ys = op.measure(x, soft)
    assert torch.allclose(ys[:, 0] / x[:, 0], ys[:, 2] / x[:, 2])


# ----------------------------------------------------------------------------- smoke runs


@pytest.fixture(scope="module")
def mnist_smoke(tmp_path_factory):
    if not (SHARED / "mnist").is_dir():
        pytest.skip(f"real data folder absent: {SHARED / 'mnist'}")
    run_dir = tmp_path_factory.mktemp("mnist-recon")
    proc = run_cli("run", "mnist-recon", "--smoke", "--run-dir", str(run_dir), "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, proc


@pytest.fixture(scope="module")
def faces_smoke(tmp_path_factory):
    if not (SHARED / "faces_celeba_10k").is_dir():
        pytest.skip(f"real data folder absent: {SHARED / 'faces_celeba_10k'}")
    run_dir = tmp_path_factory.mktemp("faces-recon")
    proc = run_cli("run", "faces-recon", "--smoke", "--run-dir", str(run_dir), "--device", "cpu", "--ablation")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, proc


def _check_schema(metrics: dict, name: str, metric: str, unit: str, n: int, full: bool = True):
    assert metrics["experiment"] == name and metrics["metric"] == metric and metrics["budget_unit"] == unit
    assert set(metrics["policies"]) == {"flow", "random", "random-same-total"} | ({"full"} if full else set())
    for rows in [metrics["policies"], *metrics["extra_metrics"].values()]:
        for row in rows.values():
            assert len(row["mean"]) == len(metrics["budgets"]) and row["n"] == n
            assert all(np.isfinite(row["mean"]))
    assert set(metrics["extra_metrics"]) == {"mae", "psnr", "ssim"} - {metric}
    assert metrics["total_pixels"] == [b + metrics["first_samples"] for b in metrics["budget_pixels"]]
    assert len(metrics["margins"]["flow_vs_random"]) == len(metrics["budgets"])
    assert "protocol" in metrics["data"] and "train" in metrics["data"] and "test" in metrics["data"]


def test_mnist_smoke_outputs(mnist_smoke):
    run_dir, proc = mnist_smoke
    res = run_dir / "results"
    metrics = json.loads((res / "metrics.json").read_text())
    _check_schema(metrics, "mnist-recon", "mae", "pixels", 256)
    assert metrics["budgets"] == [10, 100, 500] and metrics["budget_pixels"] == [10, 100, 500]
    assert metrics["image_shape"] == [1, 32, 32] and metrics["first_samples"] == 10
    assert "zero-padded centrally to 32x32" in metrics["data"]["protocol"]
    for row in metrics["policies"].values():
        assert all(0 <= m <= 1 for m in row["mean"])
    # more pixels, better random reconstruction: the frozen U-Net is doing its job
    assert metrics["policies"]["random"]["mean"][0] > metrics["policies"]["random"]["mean"][-1]
    for fig in ("mae_vs_budget.png", "psnr_vs_budget.png", "ssim_vs_budget.png", "density.png",
                "recon_10px.png", "recon_100px.png", "recon_500px.png"):
        assert (res / fig).read_bytes()[:8] == PNG, fig
    run = json.loads((res / "run.json").read_text())
    assert run["config"]["data"]["image_size"] == 32 and "wall_time_s" in run
    assert "| flow |" in (res / "metrics.md").read_text() and "PSNR" in (res / "metrics.md").read_text()
    assert not list(res.glob(".*.tmp"))


def test_mnist_smoke_lowers_the_losses(mnist_smoke, tmp_path):
    run_dir, _ = mnist_smoke
    assert _went_down(_losses(run_dir / "unet.log.jsonl", "loss"))
    # The flow trains with the task loss alone, whose value depends mostly on the budget drawn for each batch
    # (1-49 %); at one fixed budget its decrease shows within a smoke-sized run (here ~0.18 -> ~0.155).
    fixed = tmp_path / "fixed-budget"
    fixed.mkdir()
    shutil.copy(run_dir / "unet.pt", fixed / "unet.pt")
    proc = run_cli("train", "mnist-recon", "--smoke", "--stage", "flow", "--run-dir", str(fixed), "--resume",
                   "--device", "cpu", "--set", "flow.rate_min=10", "--set", "flow.rate_max=10",
                   "--set", "flow.loop.steps_per_epoch=60")
    assert proc.returncode == 0, proc.stderr[-2000:]
    task = _losses(fixed / "flow.log.jsonl", "task")
    assert len(task) == 20 and _went_down(task), task


def test_mnist_resume_is_a_no_op(mnist_smoke):
    run_dir, _ = mnist_smoke
    before = (run_dir / "flow.pt").stat().st_mtime_ns
    proc = run_cli("train", "mnist-recon", "--smoke", "--run-dir", str(run_dir), "--resume")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run_dir / "flow.pt").stat().st_mtime_ns == before


def test_faces_smoke_outputs(faces_smoke):
    run_dir, _ = faces_smoke
    res = run_dir / "results"
    metrics = json.loads((res / "metrics.json").read_text())
    _check_schema(metrics, "faces-recon", "psnr", "percent", 64, full=False)
    assert metrics["higher_is_better"] is True and metrics["data_consistency"] is True
    assert metrics["budgets"] == faces_recon.PAPER_RATES
    assert metrics["budget_pixels"] == [200, 400, 800, 1200, 2000]  # of 64 x 64
    assert metrics["image_shape"] == [3, 64, 64]
    sub = metrics["subsets"]["fixed32"]
    assert sub["indices"] == list(range(32)) and sub["policies"]["flow"]["n"] == 32
    assert "89x89 crop" in metrics["data"]["protocol"] and "shared by the 3 channels" in metrics["data"]["protocol"]
    for fig in ("psnr_vs_budget.png", "density.png", "recon_200px.png", "recon_800px.png", "recon_2000px.png"):
        assert (res / fig).read_bytes()[:8] == PNG, fig
    assert _went_down(_losses(run_dir / "unet.log.jsonl", "loss"))


def test_faces_smoke_flow_lowers_the_task_loss_at_a_fixed_budget(faces_smoke, tmp_path):
    """As for mnist-recon: the task loss depends mostly on the budget drawn per batch (4.9-48.8 %), so its decrease
    is checked at one fixed budget, from the smoke run's frozen U-Net."""
    run_dir, _ = faces_smoke
    fixed = tmp_path / "fixed-budget"
    fixed.mkdir()
    shutil.copy(run_dir / "unet.pt", fixed / "unet.pt")
    proc = run_cli("train", "faces-recon", "--smoke", "--stage", "flow", "--run-dir", str(fixed), "--resume",
                   "--device", "cpu", "--set", "flow.rate_min=20", "--set", "flow.rate_max=20",
                   "--set", "flow.loop.epochs=4", "--set", "flow.loop.log_every=6")  # 4 x 32 steps (~0.16 -> ~0.14)
    assert proc.returncode == 0, proc.stderr[-2000:]
    task = _losses(fixed / "flow.log.jsonl", "task")
    assert len(task) >= 12 and _went_down(task), task


def test_faces_ablation_scores_target_and_loss_on_validation(faces_smoke):
    """The reconstruction experiments' own ablation: the flow objective is chosen on validation faces."""
    run_dir, _ = faces_smoke
    ab = json.loads((run_dir / "results" / "ablation.json").read_text())
    assert ab["split"] == "val" and ab["selected_on"] == "val" and ab["metric"] == "psnr"
    assert set(ab["policies"]) == {"rounds=1 target=saliency loss=task", "rounds=1 target=none loss=task",
                                   "objective=joint rounds=1 target=none loss=task"}
    for row in ab["policies"].values():
        assert row["n"] == 32 and len(row["mean"]) == 1 and 5 < row["mean"][0] < 60
    assert ab["winner"] in ab["policies"]
    best = max(ab["policies"].values(), key=lambda r: r["mean"][0])
    assert ab["policies"][ab["winner"]]["mean"] == best["mean"]
    assert {"saliency", "greedy", "none", "trained flow policy"} <= set(ab["targets"]["estimators"])
    for stage in ("ablation-rounds1_targetsaliency_losstask", "ablation-rounds1_targetnone_losstask",
                  "ablation-objectivejoint_rounds1_targetnone_losstask"):
        assert (run_dir / f"{stage}.pt").is_file()


def test_faces_checkpoint_for_another_image_size_is_refused(faces_smoke, tmp_path):
    run_dir, _ = faces_smoke
    res = tmp_path / "res"
    proc = run_cli("evaluate", "faces-recon", "--smoke", "--run-dir", str(run_dir), "--results", str(res),
                   "--set", "data.image_size=128")
    assert_one_line_error(proc, "unet.pt", "image_size=64 (expected 128)")
    assert not res.exists()


# ----------------------------------------------------------------------------- bad input


def test_budget_above_the_pixel_count(tmp_path):
    proc = run_cli("evaluate", "mnist-recon", "--set", "eval.budgets=[10, 2000]", "--run-dir", str(tmp_path / "r"))
    assert_one_line_error(proc, "2000 pixels exceeds the 1024 pixels")
    assert proc.returncode == 2 and not (tmp_path / "r").exists()
    proc = run_cli("train", "faces-recon", "--set", "eval.budget_unit=pixels", "--set", "eval.budgets=[5000]",
                   "--run-dir", str(tmp_path / "r"))
    assert_one_line_error(proc, "5000 pixels exceeds the 4096 pixels")


@pytest.mark.parametrize("bad", ["unreadable", "grey"])
def test_celeba_folder_with_a_bad_image(tmp_path, bad):
    from PIL import Image

    root = tmp_path / "celeba"
    (root / "img_align_celeba").mkdir(parents=True)
    Image.fromarray(np.zeros((218, 178, 3), np.uint8)).save(root / "img_align_celeba" / "000001.jpg")
    if bad == "unreadable":
        (root / "img_align_celeba" / "000002.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    else:
        Image.fromarray(np.zeros((218, 178), np.uint8)).save(root / "img_align_celeba" / "000002.jpg")
    (root / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 0\n")
    run_dir = tmp_path / "run"
    proc = run_cli("train", "faces-recon", "--smoke", "--set", "data.source=celeba", "--set", f"data.path={root}",
                   "--run-dir", str(run_dir), env_extra={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert_one_line_error(proc, "000002.jpg", "unreadable image" if bad == "unreadable" else "not an RGB image")
    assert not list(run_dir.glob("*.pt"))
    assert not list((tmp_path / "cache").rglob("*.npz"))  # nothing half-written in the cache either
