"""Tests for flowcs.metrics: agreement with scikit-image and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from flowcs.errors import ConfigError, DataError, FlowcsError
from flowcs.metrics import (
    HIGHER_IS_BETTER,
    METRICS,
    accuracy,
    mae,
    nmse,
    psnr,
    ssim,
    summarize,
)


def _pair(shape, seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    gt = rng.random(shape)
    pred = np.clip(gt + noise * rng.standard_normal(shape), 0.0, None)
    return gt, pred


def _smooth(h, w):
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    gt = np.exp(-((xx - 0.4) ** 2 + (yy - 0.6) ** 2) / 0.05) + 0.3 * np.sin(6 * xx) * np.cos(4 * yy) + 0.5
    pred = 0.9 * gt + 0.05 * np.cos(10 * yy) + 0.02
    return gt, pred


# ----------------------------------------------------------------------------- SSIM


@pytest.mark.parametrize("shape", [(3, 33, 33), (2, 32, 48), (2, 7, 7), (1, 8, 13)])
def test_ssim_matches_skimage_random(shape):
    gt, pred = _pair(shape, seed=sum(shape))
    ours = ssim(torch.from_numpy(pred), torch.from_numpy(gt))
    assert ours.shape == (shape[0],)
    assert ours.dtype == torch.float64
    for i in range(shape[0]):
        ref = structural_similarity(gt[i], pred[i], data_range=gt[i].max())
        assert ours[i].item() == pytest.approx(ref, abs=1e-6)
    # Not trivially 1 (the test would be vacuous otherwise).
    assert float(ours.max()) < 0.99


def test_ssim_matches_skimage_smooth_and_4d_single_channel():
    gt, pred = _smooth(40, 37)
    ref = structural_similarity(gt, pred, data_range=gt.max())
    ours3 = ssim(torch.from_numpy(pred)[None], torch.from_numpy(gt)[None])
    ours4 = ssim(torch.from_numpy(pred)[None, None], torch.from_numpy(gt)[None, None])
    assert ours3.item() == pytest.approx(ref, abs=1e-6)
    assert ours4.item() == pytest.approx(ref, abs=1e-6)
    assert 0.5 < ref < 0.999


def test_ssim_float32_input_matches_float64_reference():
    gt, pred = _pair((2, 24, 24), seed=3)
    ours = ssim(torch.from_numpy(pred).float(), torch.from_numpy(gt).float())
    gt32, pred32 = gt.astype(np.float32).astype(np.float64), pred.astype(np.float32).astype(np.float64)
    for i in range(2):
        ref = structural_similarity(gt32[i], pred32[i], data_range=gt32[i].max())
        assert ours[i].item() == pytest.approx(ref, abs=1e-6)


def test_ssim_multichannel_matches_skimage_channel_axis():
    gt, pred = _pair((2, 3, 20, 25), seed=7)
    ours = ssim(torch.from_numpy(pred), torch.from_numpy(gt))
    for i in range(2):
        ref = structural_similarity(gt[i], pred[i], data_range=gt[i].max(), channel_axis=0)
        assert ours[i].item() == pytest.approx(ref, abs=1e-6)


def test_ssim_explicit_data_range_and_win_size():
    gt, pred = _pair((2, 30, 30), seed=11)
    ours = ssim(torch.from_numpy(pred), torch.from_numpy(gt), data_range=1.0)
    ours_w = ssim(
        torch.from_numpy(pred), torch.from_numpy(gt), data_range=torch.tensor([1.0, 2.0]), win_size=5
    )
    for i in range(2):
        assert ours[i].item() == pytest.approx(
            structural_similarity(gt[i], pred[i], data_range=1.0), abs=1e-6
        )
        ref_w = structural_similarity(gt[i], pred[i], data_range=float(i + 1), win_size=5)
        assert ours_w[i].item() == pytest.approx(ref_w, abs=1e-6)


def test_ssim_identical_images_is_one():
    gt, _ = _pair((3, 1, 16, 16), seed=5)
    t = torch.from_numpy(gt)
    assert torch.allclose(ssim(t, t.clone()), torch.ones(3, dtype=torch.float64), atol=1e-12)


def test_ssim_errors():
    a = torch.rand(2, 16, 16)
    with pytest.raises(ConfigError, match=r"\(2, 16, 16\).*\(2, 16, 15\)"):
        ssim(a, torch.rand(2, 16, 15))
    with pytest.raises(ConfigError, match=r"smaller than the 7x7 window"):
        ssim(torch.rand(2, 6, 16), torch.rand(2, 6, 16))
    with pytest.raises(ConfigError, match="win_size"):
        ssim(a, a, win_size=4)
    with pytest.raises(ConfigError, match="data_range"):
        ssim(a, a, data_range=0.0)
    with pytest.raises(ConfigError, match="data_range"):
        ssim(a, a, data_range=torch.ones(3))
    with pytest.raises(ConfigError, match=r"\(B, H, W\)"):
        ssim(torch.rand(1, 1, 1, 16, 16), torch.rand(1, 1, 1, 16, 16))
    with pytest.raises(DataError, match="target image 1"):
        ssim(a, torch.stack([torch.rand(16, 16), torch.zeros(16, 16)]))


# ----------------------------------------------------------------------------- PSNR


def test_psnr_matches_skimage():
    gt, pred = _pair((3, 17, 20), seed=2)
    ours = psnr(torch.from_numpy(pred), torch.from_numpy(gt))
    ours1 = psnr(torch.from_numpy(pred), torch.from_numpy(gt), data_range=1.0)
    for i in range(3):
        ref = peak_signal_noise_ratio(gt[i], pred[i], data_range=gt[i].max())
        assert ours[i].item() == pytest.approx(ref, abs=1e-9)
        assert ours1[i].item() == pytest.approx(
            peak_signal_noise_ratio(gt[i], pred[i], data_range=1.0), abs=1e-9
        )


def test_psnr_hand_computed():
    target = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]], dtype=torch.float64)  # max 1 -> data_range 1
    pred = target + 0.1  # MSE = 0.01
    assert psnr(pred, target).item() == pytest.approx(20.0, abs=1e-9)
    assert psnr(pred, target, data_range=2.0).item() == pytest.approx(20.0 + 20 * math.log10(2), abs=1e-9)
    assert math.isinf(psnr(target, target).item())


# ----------------------------------------------------------------------------- NMSE / MAE


def test_nmse_and_mae_hand_computed():
    target = torch.tensor([[3.0, 4.0], [1.0, 0.0]])  # ||t||^2 = 25, 1
    pred = torch.tensor([[3.0, 2.0], [0.0, 0.5]])  # err^2 = 4, 1.25 ; |err| = (0, 2), (1, 0.5)
    assert nmse(pred, target).tolist() == pytest.approx([4 / 25, 1.25 / 1])
    assert mae(pred, target).tolist() == pytest.approx([1.0, 0.75])
    # Images of any rank: (B, C, H, W).
    t4 = torch.ones(2, 2, 3, 3)
    assert mae(t4 * 1.5, t4).tolist() == pytest.approx([0.5, 0.5])
    assert nmse(t4 * 1.5, t4).tolist() == pytest.approx([0.25, 0.25])


def test_nmse_mae_shape_mismatch():
    with pytest.raises(
        ConfigError, match=r"metric nmse: prediction shape \(2, 3\) differs from target shape \(3, 2\)"
    ):
        nmse(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(FlowcsError, match=r"metric mae: .*\(2, 3\).*\(2, 4\)"):
        mae(torch.zeros(2, 3), torch.zeros(2, 4))


# ----------------------------------------------------------------------------- accuracy


def test_accuracy_from_logits_and_labels():
    target = torch.tensor([0, 2, 1, 1])
    logits = torch.tensor([[2.0, 0.1, 0.0], [0.0, 0.1, 3.0], [1.0, 0.0, 0.0], [0.0, 5.0, 1.0]])
    acc = accuracy(logits, target)
    assert acc.dtype == torch.float64
    assert acc.tolist() == [1.0, 1.0, 0.0, 1.0]
    assert accuracy(torch.tensor([0, 1, 1, 0]), target).tolist() == [1.0, 0.0, 1.0, 0.0]
    assert accuracy(torch.tensor([0.0, 2.0, 1.0, 1.0]), target).tolist() == [1.0, 1.0, 1.0, 1.0]


def test_accuracy_errors():
    target = torch.tensor([0, 1])
    with pytest.raises(ConfigError, match=r"\(3, 4\).*\(2,\)"):
        accuracy(torch.zeros(3, 4), target)
    with pytest.raises(ConfigError, match="not integer-valued"):
        accuracy(torch.tensor([0.3, 0.7]), target)


# ----------------------------------------------------------------------------- summarize


def test_summarize():
    vals = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0])
    s = summarize(vals)
    assert s["n"] == 5
    assert s["mean"] == pytest.approx(4.0)
    assert s["std"] == pytest.approx(math.sqrt(np.mean((vals.numpy() - 4.0) ** 2)))  # ddof=0
    assert s["std"] == pytest.approx(np.std([1, 2, 3, 4, 10]))
    lo, hi = s["ci95"]
    assert lo < s["mean"] < hi
    assert lo >= 1.0 and hi <= 10.0
    assert summarize([1.0, 2.0, 3.0, 4.0, 10.0]) == s  # deterministic, accepts lists


def test_summarize_small_and_empty():
    s = summarize([0.7])
    assert s == {"mean": 0.7, "std": 0.0, "n": 1, "ci95": (0.7, 0.7)}
    with pytest.raises(ConfigError):
        summarize([])


def test_summarize_ci_shrinks_with_n():
    rng = np.random.default_rng(0)
    small = summarize(rng.normal(size=20))
    big = summarize(rng.normal(size=2000))
    assert (big["ci95"][1] - big["ci95"][0]) < (small["ci95"][1] - small["ci95"][0])
    assert big["ci95"][0] < big["mean"] < big["ci95"][1]


# ----------------------------------------------------------------------------- registry


def test_registry():
    assert set(METRICS) == set(HIGHER_IS_BETTER) == {"ssim", "psnr", "nmse", "mae", "accuracy"}
    assert METRICS["ssim"] is ssim and METRICS["accuracy"] is accuracy
    assert HIGHER_IS_BETTER["nmse"] is False and HIGHER_IS_BETTER["psnr"] is True
    gt, pred = _pair((2, 12, 12), seed=1)
    for name in ("ssim", "psnr", "nmse", "mae"):
        out = METRICS[name](torch.from_numpy(pred), torch.from_numpy(gt))
        assert out.shape == (2,) and torch.isfinite(out).all()
