"""Forward-Euler integration of a learned velocity field from t = 0 to t = 1."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import ConfigError

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def euler(velocity: VelocityFn, x0: torch.Tensor, steps: int = 20) -> torch.Tensor:
    """Integrate dx/dt = v(x, t) with ``steps`` uniform Euler steps.

    ``velocity(x, t)`` receives the batch and a (B,) tensor of times. Several
    samples of one condition are simply rows of the same batch.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"number of Euler steps must be a positive integer, got {steps!r}")
    x = x0
    dt = 1.0 / steps
    for i in range(steps):
        t = torch.full((x.shape[0],), i * dt, dtype=x.dtype, device=x.device)
        x = x + dt * velocity(x, t)
    return x
