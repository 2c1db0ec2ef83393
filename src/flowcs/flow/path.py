"""Linear (rectified-flow) probability path and the flow-matching loss."""

from __future__ import annotations

import torch

from ..rng import rand_rows


class LinearPath:
    """x_t = (1 − t)·x0 + t·x1 with constant target velocity u = x1 − x0."""

    def sample_t(self, batch: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
        return rand_rows(batch, generator=generator, device=device)

    def interpolate(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(-1, *([1] * (x0.ndim - 1)))
        return (1.0 - t) * x0 + t * x1

    def velocity(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        return x1 - x0

    def one_step_estimate(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """x̂1 = x_t + (1 − t)·v: where a straight path from x_t with velocity v ends."""
        t = t.reshape(-1, *([1] * (x_t.ndim - 1)))
        return x_t + (1.0 - t) * v


def fm_loss(v_pred: torch.Tensor, u_target: torch.Tensor) -> torch.Tensor:
    """Flow-matching regression loss E‖v_θ − u‖² (mean over batch, summed-mean over locations)."""
    return ((v_pred - u_target) ** 2).mean()
