"""A-DPS — Active Deep Probabilistic Subsampling (van Gorp et al., ICML 2021): adaptive and sequential.

The budget k is acquired in ``steps`` acquisitions of ⌈k/steps⌉ or ⌊k/steps⌋ locations. Before each
acquisition the current samples are measured with everything acquired so far (``observe``), and a small
network maps the zero-filled reconstruction and the mask to logits for the next acquisition; already
acquired locations are excluded. Training draws each acquisition by Gumbel top-k with the
straight-through relaxation of :mod:`flowcs.policies.dps` and measures with the straight-through mask, so
the task loss reaches every step's logits through the measurements.

Our choice of context (the paper uses an LSTM over the acquisition steps): **no recurrent state** — the
network sees the current zero-filled image and the current mask, which together hold everything measured
so far (for masking operators the zero-filled image is a sufficient statistic of the measurements);
the mask also enters the MLP head directly, so the network knows which locations are taken.

Network (:class:`ADPSNet`): 3 stride-2 3×3 convolutions (LeakyReLU) on [zero-filled, mask image] →
adaptive average pool to ``pool``×``pool`` → flatten ⊕ current (B, N) mask → MLP (``hidden``) → N logits.
It is size-generic: pixel locations (N = H·W) and k-space columns (N = W) use the same net.

Test time: each acquisition takes the top-``c`` logits (``test_mode="topk"``, deterministic, the default)
or a Gumbel top-``c`` sample (``"sample"``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..layers import strided_trunk
from ..masks import select_topk, split_budget
from ..operators.base import Operator
from ..tasks.unet import network_input
from .base import Policy
from .dps import check_gumbel_settings, gumbel_topk

__all__ = ["ADPSNet", "ADPSPolicy", "split_budget"]


class ADPSNet(nn.Module):
    """[zero-filled (C ch), mask image] → logits over the N locations (see the module doc)."""

    def __init__(self, image_channels: int, n_locations: int, widths: Sequence[int] = (16, 32, 32),
                 hidden: int = 256, pool: int = 4):
        super().__init__()
        self.trunk, n_feats = strided_trunk(image_channels + 1, widths, pool)
        self.head = nn.Sequential(nn.Linear(n_feats + n_locations, hidden), nn.LeakyReLU(0.2),
                                  nn.Linear(hidden, n_locations))

    def forward(self, zero_filled: torch.Tensor, mask_image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        feats = self.trunk(network_input(zero_filled, mask_image))
        return self.head(torch.cat([feats, mask.to(feats.dtype)], dim=1))


class ADPSPolicy(nn.Module, Policy):
    """Sequential adaptive policy: ``steps`` acquisitions, each conditioned on the current measurements."""

    name = "adps"
    adaptive = True
    sequential = True

    def __init__(self, net: ADPSNet, operator: Operator, steps: int = 4, tau: float = 1.0, relax: str = "auto",
                 test_mode: str = "topk"):
        nn.Module.__init__(self)
        Policy.__init__(self, operator.n_locations)
        check_gumbel_settings("adps", tau, relax, test_mode)
        split_budget(1, steps)
        self.net = net
        self.operator = operator
        self.steps, self.tau, self.relax, self.test_mode = int(steps), float(tau), relax, test_mode

    def logits(self, zero_filled: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(zero_filled, self.operator.mask_to_image(mask), mask)

    def relaxed_mask(self, k: int, acquired: torch.Tensor, generator: torch.Generator | None = None,
                     observe=None) -> torch.Tensor:
        """Training: value = the hard masks of the sequential Gumbel draws, gradient through every step."""
        if observe is None:
            raise ConfigError("adps training needs observe= (it measures between acquisitions)")
        taken = acquired.bool().clone()
        st_new = torch.zeros(acquired.shape, dtype=torch.float32, device=acquired.device)
        for c in split_budget(k, self.steps):
            mask = acquired.float() + st_new
            logits = self.logits(observe(mask), mask)
            hard, st = gumbel_topk(logits, c, taken, generator, self.tau, self.relax)
            taken = taken | hard
            st_new = st_new + st
        return st_new

    @torch.no_grad()
    def _new_locations(self, condition, budget, acquired, generator, observe=None):
        taken = acquired.clone()
        for c in split_budget(budget, self.steps):
            logits = self.logits(observe(taken), taken)
            if self.test_mode == "sample":
                hard = gumbel_topk(logits, c, taken, generator, self.tau, "sigmoid")[0]
            else:
                hard = select_topk(logits, c, taken)
            taken = taken | hard
        return taken & ~acquired
