"""Estimators of the target mask distribution p̂(m | x) that the flow regresses onto (SPEC §3).

No ground-truth "best mask" exists, so each training example gets an
estimated good mask:

* ``saliency`` (default): the k locations whose inclusion lowers the task loss
  most, i.e. top-k of −∂L/∂m at the uniform soft mask m = k/N (one backward
  pass through the frozen task model). The sign matters: |∂L/∂m| would also
  pick locations that *hurt*.
* ``greedy``: saliency recomputed at the current partial mask, ``chunks`` times:
  each chunk takes the locations of largest −∂L/∂m given what the earlier
  chunks chose (those at 1, the rest of the budget spread uniformly over the
  free locations). One chunk is exactly ``saliency``; more chunks see what a
  location adds *after* the others were measured (first order, one backward each).
* ``best-of-r``: the best of R uniformly random masks by task loss.
* ``self``: self-improvement: the best of R masks sampled from the *current*
  flow, by task loss (the flow regresses onto its own best proposals; the
  objective supplies the proposals, see :mod:`flowcs.flow.objective`).
* ``none``: no target; training uses the task loss only, and the flow path is
  anchored on random masks (documented in docs/design.md).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..masks import random_mask, select_topk, split_budget
from ..operators.base import Operator
from ..tasks.base import Task

TARGETS = ("saliency", "greedy", "best-of-r", "self", "none")


class TargetEstimator:
    """Target masks for a batch: ``estimator(x, y, k, acquired, generator) -> acquired ∪ k new locations``."""

    def __init__(self, kind: str, task: Task, operator: Operator, r: int = 16, chunks: int = 4):
        if kind not in TARGETS:
            raise ConfigError(f"unknown target estimator {kind!r}; choose one of {', '.join(TARGETS)}")
        if r < 1 or chunks < 1:
            raise ConfigError(f"target estimator: best_of_r and greedy_chunks must be >= 1, got {r}, {chunks}")
        self.kind, self.task, self.operator, self.r, self.chunks = kind, task, operator, r, chunks

    def task_loss(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-sample task loss of the measurement with ``mask`` (hard or soft)."""
        op = self.operator
        zf = op.zero_filled(op.measure(x, mask), mask)
        return self.task.loss(self.task.predict(zf, op.mask_to_image(mask)), y, reduction="none")

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, k: int, acquired: torch.Tensor, generator: torch.Generator | None,
        proposals: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Bool (B, N) target mask: acquired ∪ k estimated-good new locations (``proposals``: for ``self``)."""
        if self.kind in ("saliency", "greedy"):
            new = self._greedy(x, y, k, acquired, 1 if self.kind == "saliency" else self.chunks)
        elif self.kind == "best-of-r":
            b, n = acquired.shape
            new = self.best_of(x, y, [random_mask(b, n, k, acquired, generator, x.device) for _ in range(self.r)],
                               acquired)
        elif self.kind == "self":
            if not proposals:
                raise ConfigError("target 'self' needs the flow's own proposals (FlowTaskObjective supplies them)")
            new = self.best_of(x, y, proposals, acquired)
        else:
            new = random_mask(x.shape[0], self.operator.n_locations, k, acquired, generator, x.device)
        return acquired | new

    def _greedy(self, x, y, k, acquired, chunks: int) -> torch.Tensor:
        rank = self.ranking(x, y, k, acquired, chunks)
        return select_topk(-rank, k, acquired)

    def ranking(self, x, y, k, acquired, chunks: int | None = None) -> torch.Tensor:
        """(B, N) order in which the greedy estimator picks locations (lower = earlier; acquired: −1).

        The first ``k`` locations come chunk by chunk as in ``greedy`` (``chunks = 1``: ``saliency``); the rest
        follow in the order of the last gradient. The top-k' of the free locations by this order is the
        target for any budget k' and any locations acquired meanwhile: one backward per chunk serves every
        round of a sequential policy.
        """
        chunks = self.chunks if chunks is None else chunks
        n = self.operator.n_locations
        taken = acquired.bool().clone()
        rank = torch.full(taken.shape, float(n + k), dtype=torch.float64, device=x.device)
        rank[taken] = -1.0
        left, done, start = k, 0, 0
        place = torch.zeros_like(rank)
        for c in split_budget(k, chunks):
            free = (~taken).sum(1, keepdim=True).clamp_min(1)
            fill = (left / free).to(x.dtype) if chunks > 1 else torch.full_like(free, k / n, dtype=x.dtype)
            with torch.enable_grad():
                m = fill.expand(-1, n).clone().requires_grad_(True)
                soft = torch.where(taken, torch.ones_like(m), m)
                grad = torch.autograd.grad(self.task_loss(x, y, soft).sum(), m)[0]
            order = (-grad).detach().to(torch.float64).masked_fill(taken, -torch.inf).argsort(dim=1, descending=True,
                                                                                              stable=True)
            new = select_topk(-grad, c, taken)
            place = torch.empty_like(rank).scatter_(1, order, torch.arange(n, dtype=torch.float64,
                                                                          device=x.device).expand_as(rank))
            rank = torch.where(new, done + place, rank)
            taken, left, start, done = taken | new, left - c, done, done + c
        # after the k chosen locations: the order of the last gradient (its top c were that chunk's)
        return torch.where(~taken, start + place, rank)

    @torch.no_grad()
    def best_of(self, x, y, candidates: list[torch.Tensor], acquired) -> torch.Tensor:
        """Per sample, the candidate (new locations) whose mask acquired ∪ candidate has the lowest task loss
        (ties: the earliest candidate)."""
        best, best_loss = None, None
        for new in candidates:
            new = new.bool() & ~acquired
            loss = self.task_loss(x, y, (acquired | new).float())
            if best is None:
                best, best_loss = new, loss
            else:
                better = loss < best_loss
                best = torch.where(better[:, None], new, best)
                best_loss = torch.where(better, loss, best_loss)
        return best
