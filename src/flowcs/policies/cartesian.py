"""fastMRI-style Cartesian line policies on top of the acquired low-frequency band.

Both return exactly ``budget`` new columns outside ``acquired`` (the LF band, which counts inside the
acceleration budget, is passed as ``acquired``):

* :class:`EquispacedPolicy` — the ``budget`` columns equally spaced among the not-yet-acquired
  columns (spacing M / budget over the M free columns, so the gap is uniform in k-space except across
  the LF band). The offset within one spacing is random when a generator is given (fastMRI's
  ``EquispacedMaskFunc`` draws it too), else centred (deterministic).
* :class:`LowFrequencyPolicy` — the ``budget`` free columns closest to the k-space centre (DC = W // 2; ties
  to the lower index): a wider fully-sampled centre band. Not a fastMRI mask but the natural reference for a
  learned policy that concentrates on low frequencies: beating it means more than "widen the LF band".
* :class:`VariableDensityPolicy` — ``budget`` columns drawn without replacement with probability
  ∝ (1 − |c − W/2| / (W/2))^power + floor (polynomial variable density, denser near the k-space centre),
  via Gumbel top-k so the count is exact. Without a generator it returns the ``budget`` highest-density
  columns (a wider centre).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..masks import select_topk
from ..rng import rand_rows
from .base import Policy

__all__ = ["EquispacedPolicy", "LowFrequencyPolicy", "VariableDensityPolicy", "variable_density"]


class EquispacedPolicy(Policy):
    name = "equispaced"

    def _new_locations(self, condition, budget, acquired, generator):
        b, n = acquired.shape
        out = torch.zeros_like(acquired)
        if budget == 0:
            return out
        u = rand_rows(b, generator=generator) if generator is not None else torch.full((b,), 0.5)
        for i in range(b):
            free = (~acquired[i]).nonzero().flatten()
            step = free.numel() / budget
            offset = float(u[i]) * step
            pos = (offset + step * torch.arange(budget, dtype=torch.float64)).floor().long().clamp_max(free.numel() - 1)
            out[i, free[pos]] = True
        return out


class LowFrequencyPolicy(Policy):
    name = "low-frequency"

    def _new_locations(self, condition, budget, acquired, generator):
        b, n = acquired.shape
        dist = (torch.arange(n, device=acquired.device) - n // 2).abs().to(torch.float64)
        return select_topk((-dist).expand(b, n), budget, acquired)


def variable_density(n_locations: int, power: float = 3.0, floor: float = 0.01) -> torch.Tensor:
    """(N,) sampling density ∝ (1 − |c − N/2| / (N/2))^power + floor, normalised to sum 1."""
    if power < 0 or floor < 0:
        raise ConfigError(f"variable-density power and floor must be >= 0, got {power}, {floor}")
    c = torch.arange(n_locations, dtype=torch.float64)
    d = ((c - n_locations // 2).abs() / (n_locations / 2)).clamp(0, 1)
    p = (1 - d) ** power + floor
    return p / p.sum()


class VariableDensityPolicy(Policy):
    name = "variable-density"

    def __init__(self, n_locations: int, power: float = 3.0, floor: float = 0.01):
        super().__init__(n_locations)
        self.density = variable_density(n_locations, power, floor)

    def _new_locations(self, condition, budget, acquired, generator):
        b, n = acquired.shape
        logp = self.density.log().to(acquired.device).expand(b, n)
        if generator is not None:
            u = rand_rows(b, n, generator=generator, device=acquired.device, dtype=torch.float64)
            u = u.clamp(1e-12, 1 - 1e-12)
            logp = logp - torch.log(-torch.log(u))  # Gumbel top-k = sampling without replacement ∝ p
        return select_topk(logp, budget, acquired)
