"""Wrapping the user's network as a flowcs :class:`~flowcs.tasks.base.Task`: predict, loss, per-sample score."""

from __future__ import annotations

import torch

from flowcs.tasks.base import Task


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of the magnitude images, peak = the target's maximum magnitude."""
    mag_p = pred.pow(2).sum(1).sqrt()
    mag_t = target.pow(2).sum(1).sqrt()
    mse = (mag_p - mag_t).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    peak = mag_t.flatten(1).amax(1).clamp_min(1e-12)
    return 10 * torch.log10(peak ** 2 / mse)


class OwnReconTask(Task):
    """Any network ``net(zero_filled, mask_image) -> image``; MSE loss, PSNR metric (higher is better)."""

    name = "own-recon"
    metric = "psnr"
    higher_is_better = True

    def predict(self, zero_filled, mask_image):
        return self.model(zero_filled, mask_image)

    def loss(self, pred, target, reduction="mean"):
        per = (pred - target).pow(2).flatten(1).mean(1)
        return per.mean() if reduction == "mean" else per

    def score(self, pred, target):
        return psnr(pred, target)
