"""DPS — Deep Probabilistic Subsampling (Huijben et al., ICLR 2020), non-adaptive.

One learned logit per location. Training draws a mask by **Gumbel top-k** (perturb the logits with
i.i.d. Gumbel noise, keep the k largest: an exact sample of k locations without replacement with
probabilities ∝ softmax(logits)) and back-propagates through a relaxation with a **straight-through**
estimator: the forward value is the hard k-hot mask, the gradient is that of the relaxed mask.

Relaxations (``relax``):

* ``softmax`` (the paper's): the k-hot mask is relaxed as the sum of k softmaxes with temperature τ,
  the j-th over the perturbed logits with the j − 1 already drawn locations removed;
* ``sigmoid``: σ((z − τ_k)/τ) with τ_k the (detached) midpoint between the k-th and (k+1)-th perturbed
  logit — one pass instead of k, used for large k;
* ``auto`` (default): ``softmax`` for k ≤ 128, else ``sigmoid``.

At test time the mask is either the **mode** (``test_mode="topk"``, the k largest logits: deterministic,
the default) or a fresh Gumbel top-k **sample** (``test_mode="sample"``, seeded by the generator).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from ..masks import RELAXATIONS, relaxed_topk, select_topk
from ..rng import rand_rows
from .base import Policy

__all__ = ["DPSPolicy", "check_gumbel_settings", "gumbel_noise", "gumbel_topk", "relaxed_topk", "RELAXATIONS",
           "TEST_MODES"]

TEST_MODES = ("topk", "sample")


def check_gumbel_settings(owner: str, tau: float, relax: str, test_mode: str) -> None:
    """One-line errors for the Gumbel top-k settings that DPS and A-DPS share (``owner``: the config section)."""
    if test_mode not in TEST_MODES:
        raise ConfigError(f"{owner}.test_mode {test_mode!r}: choose one of {', '.join(TEST_MODES)}")
    if relax not in RELAXATIONS:
        raise ConfigError(f"{owner}.relax {relax!r}: choose one of {', '.join(RELAXATIONS)}")
    if tau <= 0:
        raise ConfigError(f"{owner}.tau (temperature) must be > 0, got {tau}")


def gumbel_noise(batch: int, n: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """(B, N) i.i.d. standard Gumbel draws −log(−log u) (per-sample rows, see :mod:`flowcs.rng`)."""
    u = rand_rows(batch, n, generator=generator, device=device).clamp(1e-10, 1.0 - 1e-7)
    return -torch.log(-torch.log(u))


def gumbel_topk(logits: torch.Tensor, k: int, acquired: torch.Tensor | None = None,
                generator: torch.Generator | None = None, tau: float = 1.0, relax: str = "auto",
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Gumbel top-k with a straight-through relaxation.

    Returns ``(hard, st)``: ``hard`` is a bool (B, N) mask of exactly ``k`` new locations outside
    ``acquired``, a sample without replacement with probabilities ∝ softmax(logits); ``st`` is a float
    mask whose *value* equals ``hard`` and whose *gradient* is that of the relaxed mask.
    """
    if tau <= 0:
        raise ConfigError(f"Gumbel temperature must be > 0, got {tau}")
    b, n = logits.shape
    acquired = torch.zeros(b, n, dtype=torch.bool, device=logits.device) if acquired is None else acquired.bool()
    if k == 0:
        return torch.zeros_like(acquired), torch.zeros_like(logits)
    z = logits + gumbel_noise(b, n, generator, logits.device).to(logits.dtype)
    hard = select_topk(z.detach(), k, acquired)
    soft = relaxed_topk(z, hard, k, acquired, tau, relax)
    return hard, hard.to(soft.dtype) + (soft - soft.detach())  # value exactly hard, gradient of soft


class DPSPolicy(nn.Module, Policy):
    """Learned logits (N,), Gumbel top-k during training; non-adaptive at test time.

    ``init`` draws the initial logits N(0, 0.01²)-close to uniform (seeded), as in the paper's
    uniform initialisation up to symmetry breaking.
    """

    name = "dps"
    adaptive = False

    def __init__(self, n_locations: int, tau: float = 1.0, relax: str = "auto", test_mode: str = "topk",
                 seed: int = 0):
        nn.Module.__init__(self)
        Policy.__init__(self, n_locations)
        check_gumbel_settings("dps", tau, relax, test_mode)
        gen = torch.Generator().manual_seed(seed)
        self.logits = nn.Parameter(0.01 * torch.randn(n_locations, generator=gen))
        self.tau, self.relax, self.test_mode = float(tau), relax, test_mode

    def relaxed_mask(self, k: int, acquired: torch.Tensor, generator: torch.Generator | None = None,
                     observe=None) -> torch.Tensor:
        """Training mask of the new locations: value = a hard Gumbel top-k draw, gradient = the relaxation."""
        logits = self.logits.expand(acquired.shape[0], -1)
        return gumbel_topk(logits, k, acquired, generator, self.tau, self.relax)[1]

    def probabilities(self) -> torch.Tensor:
        """softmax(logits): the first-draw probabilities of the learned distribution."""
        return torch.softmax(self.logits.detach(), 0)

    @torch.no_grad()
    def _new_locations(self, condition, budget, acquired, generator):
        logits = self.logits.detach().to(acquired.device).expand(acquired.shape[0], -1)
        if self.test_mode == "sample":
            return gumbel_topk(logits, budget, acquired, generator, self.tau, "sigmoid")[0]
        return select_topk(logits, budget, acquired)
