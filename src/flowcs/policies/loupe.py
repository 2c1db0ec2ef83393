"""LOUPE — Learning-based Optimization of the Under-sampling PattErn (Bahadir et al., 2019/2020).

One learned logit w_i per location; the probability mask is p = σ(a·w) (``prob_slope`` a = 5), rescaled
so that its mean equals the target rate α (the sparsity constraint of the paper):

    p̄ ≥ α:  p' = (α / p̄)·p            p̄ < α:  p' = 1 − (1 − α)/(1 − p̄)·(1 − p)

(both keep p' in [0, 1] and give mean(p') = α exactly). Training samples a **relaxed Bernoulli** mask
m = σ(s·(p' − u)), u ~ U(0, 1) (``sample_slope`` s = 12, a sigmoid in place of the threshold u < p').

With a first measurement already acquired (random-first pixels, the MRI low-frequency band), α is the
budget over the *free* locations, α = k / (N − |acquired|), and acquired locations are forced to 1.

**Test time (non-adaptive)**: ``test_mode="topk"`` (default) takes the k most probable free locations —
the mode of the learned Bernoulli distribution *conditioned on exactly k* (the conditional Bernoulli
P(S) ∝ Π_{i∈S} p_i/(1−p_i) is maximised by the k largest odds, i.e. the k largest p). ``"sample"``
draws an exact seeded sample of that conditional distribution (:func:`conditional_bernoulli`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from ..masks import select_topk
from ..rng import rand_rows
from .base import Policy

__all__ = ["LOUPEPolicy", "rescale_probabilities", "conditional_bernoulli", "TEST_MODES"]

TEST_MODES = ("topk", "sample")


def rescale_probabilities(p: torch.Tensor, rate: float | torch.Tensor) -> torch.Tensor:
    """LOUPE's sparsity rescaling of probabilities ``p`` (last dim = locations) to mean ``rate`` ∈ (0, 1)."""
    rate = torch.as_tensor(rate, dtype=p.dtype, device=p.device)
    if rate.ndim:
        rate = rate.unsqueeze(-1)
    pbar = p.mean(dim=-1, keepdim=True)
    down = p * rate / pbar.clamp_min(1e-12)
    up = 1.0 - (1.0 - p) * (1.0 - rate) / (1.0 - pbar).clamp_min(1e-12)
    return torch.where(pbar >= rate, down, up)


def conditional_bernoulli(p: torch.Tensor, k: int, acquired: torch.Tensor,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """Exact draw of independent Bernoulli(p) on the free locations, conditioned on exactly ``k`` successes.

    ``p`` is (N,) or (B, N); returns a bool (B, N) mask of ``k`` new locations outside ``acquired``.
    P(S) ∝ Π_{i∈S} w_i with odds w_i = p_i / (1 − p_i). Sequential sampling with the suffix elementary
    symmetric polynomials e_r(w_i, …, w_{N−1}) in log space: location i is taken with probability
    w_i·e_{r−1}(i+1…) / e_r(i…) where r is the number still to take. Memory O(B·N·k).
    """
    b, n = acquired.shape
    p = p.to(torch.float64).expand(b, n)
    logw = (p.clamp(1e-12, 1 - 1e-12).log() - (1 - p).clamp(1e-12, 1).log()).masked_fill(acquired, -torch.inf)
    if int((~acquired).sum(1).min()) < k:
        raise ConfigError(f"cannot draw {k} locations: fewer are free")
    table = torch.full((b, n + 1, k + 1), -torch.inf, dtype=torch.float64)
    table[:, :, 0] = 0.0
    for i in range(n - 1, -1, -1):
        if k:
            table[:, i, 1:] = torch.logaddexp(table[:, i + 1, 1:], logw[:, i:i + 1] + table[:, i + 1, :-1])
    u = rand_rows(b, n, generator=generator).to(torch.float64)
    left = torch.full((b,), k, dtype=torch.long)
    out = torch.zeros(b, n, dtype=torch.bool)
    rows = torch.arange(b)
    for i in range(n):
        active = left > 0
        if not bool(active.any()):
            break
        r = left.clamp_min(1)
        logp = logw[:, i] + table[rows, i + 1, r - 1] - table[rows, i, r]
        take = active & (u[:, i].log() < logp)
        out[:, i] = take
        left = left - take.long()
    return out.to(acquired.device)


class LOUPEPolicy(nn.Module, Policy):
    """Learned per-location probabilities with LOUPE's sparsity rescaling; non-adaptive at test time."""

    name = "loupe"
    adaptive = False
    #: soft mask values reach the task: keep the operator's soft-mask convention (see policies.training)
    linear_sampling = False

    def __init__(self, n_locations: int, prob_slope: float = 5.0, sample_slope: float = 12.0,
                 test_mode: str = "topk", seed: int = 0):
        nn.Module.__init__(self)
        Policy.__init__(self, n_locations)
        if test_mode not in TEST_MODES:
            raise ConfigError(f"loupe.test_mode {test_mode!r}: choose one of {', '.join(TEST_MODES)}")
        if prob_slope <= 0 or sample_slope <= 0:
            raise ConfigError(f"loupe slopes must be > 0, got prob_slope={prob_slope}, sample_slope={sample_slope}")
        # paper init: σ(a·w) uniform in (0, 1), i.e. w = logit(u) / a
        u = torch.rand(n_locations, generator=torch.Generator().manual_seed(seed)).clamp(1e-3, 1 - 1e-3)
        self.logits = nn.Parameter(torch.log(u / (1 - u)) / prob_slope)
        self.prob_slope, self.sample_slope, self.test_mode = float(prob_slope), float(sample_slope), test_mode

    def probabilities(self) -> torch.Tensor:
        """σ(a·w): the un-rescaled learned probabilities (N,)."""
        return torch.sigmoid(self.prob_slope * self.logits)

    def rate_for(self, k: int, acquired: torch.Tensor) -> torch.Tensor:
        """(B,) target rate α = k / (free locations) per sample."""
        free = (~acquired).sum(1).clamp_min(1).to(self.logits.dtype)
        return (k / free).clamp(1e-6, 1.0)

    def relaxed_mask(self, k: int, acquired: torch.Tensor, generator: torch.Generator | None = None,
                     observe=None) -> torch.Tensor:
        """Relaxed Bernoulli mask of the new locations (expected count ≈ k), differentiable in the logits."""
        b, n = acquired.shape
        p = rescale_probabilities(self.probabilities().expand(b, n), self.rate_for(k, acquired))
        u = rand_rows(b, n, generator=generator, device=acquired.device).to(p.dtype)
        return torch.sigmoid(self.sample_slope * (p - u)).masked_fill(acquired, 0.0)

    @torch.no_grad()
    def _new_locations(self, condition, budget, acquired, generator):
        p = self.probabilities().detach().to(acquired.device)
        if self.test_mode == "sample":
            return conditional_bernoulli(p.cpu(), budget, acquired.cpu(), generator).to(acquired.device)
        return select_topk(p.expand(acquired.shape[0], -1), budget, acquired)
