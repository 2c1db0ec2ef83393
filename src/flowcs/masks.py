"""Sampling masks: budgets, hard top-k selection, the differentiable sigmoid gate and its straight-through form.

A mask lives on the N *locations* an operator can measure (pixels, k-space
columns...) as a (B, N) tensor. Hard masks are ``bool``; soft masks used while
training are floats in [0, 1].
"""

from __future__ import annotations

import math

import torch

from .errors import ConfigError
from .rng import rand_rows


def check_rate(rate: float, what: str = "sampling rate") -> float:
    """Validate a sampling rate given in percent, in (0, 100]."""
    if not isinstance(rate, (int, float)) or math.isnan(rate) or not 0 < rate <= 100:
        raise ConfigError(f"{what} {rate!r} is out of range: it must be a percentage in (0, 100]")
    return float(rate)


def rate_to_budget(rate: float, n_locations: int) -> int:
    """Number of locations for a rate in percent: ``round(rate/100 * N)``, at least 1."""
    check_rate(rate)
    return max(1, int(round(rate / 100.0 * n_locations)))


def budget_to_rate(budget: int, n_locations: int) -> float:
    """Inverse of :func:`rate_to_budget` (percent)."""
    check_budget(budget, n_locations)
    return 100.0 * budget / n_locations


def check_budget(budget: int, n_locations: int, acquired: int = 0) -> int:
    """A budget must be a positive integer that fits in the not-yet-acquired locations."""
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
        raise ConfigError(f"budget {budget!r} must be a non-negative integer number of locations")
    if budget + acquired > n_locations:
        raise ConfigError(
            f"budget of {budget} locations plus {acquired} already acquired exceeds the "
            f"{n_locations} available locations"
        )
    return budget


def split_budget(k: int, steps: int) -> list[int]:
    """``k`` locations in at most ``steps`` acquisition rounds, sizes differing by at most one (larger first)."""
    if steps < 1:
        raise ConfigError(f"the number of acquisition rounds must be >= 1, got {steps}")
    if k <= 0:
        return []
    steps = min(steps, k)
    base, extra = divmod(k, steps)
    return [base + (1 if i < extra else 0) for i in range(steps)]


def _acquired_or_empty(scores: torch.Tensor, acquired: torch.Tensor | None) -> torch.Tensor:
    if acquired is None:
        return torch.zeros_like(scores, dtype=torch.bool)
    if acquired.shape != scores.shape:
        raise ConfigError(
            f"acquired mask shape {tuple(acquired.shape)} differs from scores shape {tuple(scores.shape)}"
        )
    return acquired.bool()


def select_topk(scores: torch.Tensor, k: int, acquired: torch.Tensor | None = None) -> torch.Tensor:
    """Hard top-k: the ``k`` highest-scoring not-yet-acquired locations of each row.

    Returns a bool (B, N) mask of the *new* locations only, with exactly ``k``
    entries per row, never overlapping ``acquired``. Ties are broken
    deterministically in favour of the lower index (stable sort), so the same
    scores always give the same mask.
    """
    if scores.ndim != 2:
        raise ConfigError(f"scores must have shape (batch, locations), got {tuple(scores.shape)}")
    if torch.isnan(scores).any():
        raise ConfigError("scores contain NaN: cannot select the top-k locations")
    acquired = _acquired_or_empty(scores, acquired)
    n_acq = int(acquired.sum(dim=1).max()) if acquired.numel() else 0
    check_budget(k, scores.shape[1], n_acq)
    masked = scores.detach().to(torch.float64).masked_fill(acquired, -math.inf)
    order = torch.sort(masked, dim=1, descending=True, stable=True).indices
    # a genuine -inf score ties with the -inf fill: move acquired locations behind everything (stable)
    order = order.gather(1, acquired.gather(1, order).to(torch.uint8).argsort(dim=1, stable=True))[:, :k]
    chosen = torch.zeros_like(acquired)
    chosen.scatter_(1, order, True)
    return chosen


def topk_threshold(scores: torch.Tensor, k: int | torch.Tensor, acquired: torch.Tensor | None = None) -> torch.Tensor:
    """Per-row threshold τ_k with exactly ``k`` non-acquired entries above it.

    τ is the midpoint between the k-th and (k+1)-th largest non-acquired score,
    so it sits strictly between the selected and the rejected entries.
    ``k`` may be an int or a (B,) tensor of per-row budgets.
    """
    acquired = _acquired_or_empty(scores, acquired)
    masked = scores.masked_fill(acquired, -math.inf)
    ordered = torch.sort(masked, dim=1, descending=True).values
    n = scores.shape[1]
    k_t = torch.as_tensor(k, device=scores.device).expand(scores.shape[0]).long()
    upper = ordered.gather(1, (k_t - 1).clamp(0, n - 1)[:, None])
    lower = ordered.gather(1, k_t.clamp(0, n - 1)[:, None])
    # With no rejected entry left (k == available), put τ just below the k-th value.
    lower = torch.where(torch.isfinite(lower) & (k_t[:, None] < n), lower, upper - 1.0)
    return 0.5 * (upper + lower)


def kappa(t: torch.Tensor, a: float = 30.0, b: float = 1.0) -> torch.Tensor:
    """Gate steepness κ(t) = a·t^b: soft early in the flow, near-hard at t → 1."""
    return a * t.clamp_min(0.0) ** b


def sigmoid_gate(
    scores: torch.Tensor,
    k: int | torch.Tensor,
    t: torch.Tensor,
    a: float = 30.0,
    b: float = 1.0,
    acquired: torch.Tensor | None = None,
) -> torch.Tensor:
    """Differentiable soft top-k mask (paper Eq. 13): σ(κ(t)·(s − τ_k(s))).

    The threshold τ_k is treated as a constant (detached): gradients flow to
    every score through the sigmoid, which is what lets the task loss move the
    scores. Already-acquired locations are forced to 1 (they were measured).
    ``t`` is a scalar or a (B,) tensor of flow times.
    """
    acquired = _acquired_or_empty(scores, acquired)
    tau = topk_threshold(scores.detach(), k, acquired)
    t = torch.as_tensor(t, dtype=scores.dtype, device=scores.device).reshape(-1, 1)
    soft = torch.sigmoid(kappa(t, a, b) * (scores - tau))
    return torch.where(acquired, torch.ones_like(soft), soft)


RELAXATIONS = ("auto", "softmax", "sigmoid")
SOFTMAX_MAX_K = 128  # ``auto``: the sequential softmax up to this k, the one-pass sigmoid above


def relaxed_topk(z: torch.Tensor, hard: torch.Tensor, k: int, acquired: torch.Tensor, tau: float,
                 relax: str = "auto") -> torch.Tensor:
    """Differentiable relaxation of the k-hot mask ``hard`` = top-k of the (perturbed) scores ``z`` (DPS's).

    ``softmax``: the sum of k softmaxes with temperature τ, the j-th over ``z`` with the j − 1 locations drawn
    before it removed; ``sigmoid``: σ((z − τ_k)/τ), τ_k the detached midpoint between the k-th and (k+1)-th
    score — one pass instead of k; ``auto``: ``softmax`` for k ≤ 128, else ``sigmoid``.
    """
    if relax not in RELAXATIONS:
        raise ConfigError(f"unknown relaxation {relax!r}; choose one of {', '.join(RELAXATIONS)}")
    if relax == "auto":
        relax = "softmax" if k <= SOFTMAX_MAX_K else "sigmoid"
    if relax == "sigmoid":
        thr = topk_threshold(z.detach(), k, acquired)
        return torch.sigmoid((z - thr) / tau).masked_fill(acquired, 0.0)
    order = z.detach().masked_fill(acquired, -math.inf).argsort(dim=1, descending=True, stable=True)[:, :k]
    removed = acquired.clone()
    soft = torch.zeros_like(z)
    for j in range(k):
        soft = soft + torch.softmax((z / tau).masked_fill(removed, -math.inf), dim=1)
        removed = removed.scatter(1, order[:, j:j + 1], True)
    return soft


ST_RELAXATIONS = ("zscore", *RELAXATIONS)


def straight_through_topk(scores: torch.Tensor, k: int, acquired: torch.Tensor | None = None,
                          relax: str = "zscore") -> tuple[torch.Tensor, torch.Tensor]:
    """Hard top-k in the forward pass, a relaxation's gradient in the backward pass.

    Returns ``(hard, mask)``: ``hard`` is :func:`select_topk`'s bool mask of the k new locations; ``mask`` equals
    ``hard`` as floats but carries the gradient of a relaxation. ``zscore``: σ(z − τ_k(z)), z the scores
    standardised over the free locations (the slope does not depend on the scale the scores drift to);
    ``softmax`` / ``sigmoid`` / ``auto``: :func:`relaxed_topk` of the raw scores at temperature 1, as DPS and
    A-DPS train (on the mnist-classify validation pilots ``auto`` beat ``zscore`` by 2–4 points at 4–8 %,
    docs/design.md). Used where the task loss must see exactly the mask the policy will acquire.
    """
    if relax not in ST_RELAXATIONS:
        raise ConfigError(f"unknown relaxation {relax!r}; choose one of {', '.join(ST_RELAXATIONS)}")
    acquired = _acquired_or_empty(scores, acquired)
    hard = select_topk(scores.detach(), k, acquired)  # the policy's own selection
    if relax != "zscore":
        soft = relaxed_topk(scores, hard, k, acquired, 1.0, relax)
        return hard, hard.to(soft.dtype) + (soft - soft.detach())
    free = (~acquired).to(scores.dtype)
    count = free.sum(1, keepdim=True).clamp_min(1.0)
    mean = (scores.masked_fill(acquired, 0.0) * free).sum(1, keepdim=True) / count
    std = ((((scores - mean) * free) ** 2).sum(1, keepdim=True) / count).sqrt() + 1e-6
    z = (scores - mean) / std
    soft = torch.sigmoid(z - topk_threshold(z.detach(), k, acquired)) * free
    return hard, hard.to(soft.dtype) + (soft - soft.detach())  # exactly 0 forward: the value is the hard mask


def random_mask(
    batch: int,
    n_locations: int,
    k: int,
    acquired: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``k`` uniformly random new locations per row, avoiding ``acquired`` (bool (B, N))."""
    noise = rand_rows(batch, n_locations, generator=generator, device=device)
    return select_topk(noise, k, acquired)


def random_masks_varying(
    budgets: torch.Tensor, n_locations: int, generator: torch.Generator | None = None, device="cpu"
) -> torch.Tensor:
    """Uniformly random masks with a different budget per row (``budgets``: (B,) ints)."""
    noise = rand_rows(budgets.shape[0], n_locations, generator=generator)
    ranks = noise.argsort(dim=1).argsort(dim=1)
    return (ranks < budgets[:, None].cpu()).to(device)


def sample_budgets(
    batch: int, n_locations: int, rate_min: float, rate_max: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(B,) budgets with rates drawn uniformly in [rate_min, rate_max] percent."""
    check_rate(rate_min, "minimum rate")
    check_rate(rate_max, "maximum rate")
    if rate_min > rate_max:
        raise ConfigError(f"minimum rate {rate_min} exceeds maximum rate {rate_max}")
    rates = rate_min + (rate_max - rate_min) * rand_rows(batch, generator=generator)
    return (rates / 100.0 * n_locations).round().clamp(1, n_locations).long()
