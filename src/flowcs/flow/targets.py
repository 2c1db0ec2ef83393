"""Estimators of the target mask distribution p̂(m | x) that the flow regresses onto (SPEC §3).

No ground-truth "best mask" exists, so each training example gets an
estimated good mask:

* ``saliency`` (default): the k locations whose inclusion lowers the task loss
  most, i.e. top-k of −∂L/∂m at the uniform soft mask m = k/N (one backward
  pass through the frozen task model). The sign matters: |∂L/∂m| would also
  pick locations that *hurt*.
* ``best-of-r``: the best of R uniformly random masks by task loss.
* ``none``: no target; training uses the task loss only, and the flow path is
  anchored on random masks (documented in docs/design.md).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..masks import random_mask, select_topk
from ..operators.base import Operator
from ..tasks.base import Task

TARGETS = ("saliency", "best-of-r", "none")


class TargetEstimator:
    def __init__(self, kind: str, task: Task, operator: Operator, r: int = 16):
        if kind not in TARGETS:
            raise ConfigError(f"unknown target estimator {kind!r}; choose one of {', '.join(TARGETS)}")
        self.kind, self.task, self.operator, self.r = kind, task, operator, r

    def _task_loss(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        op = self.operator
        zf = op.zero_filled(op.measure(x, mask), mask)
        return self.task.loss(self.task.predict(zf, op.mask_to_image(mask)), y, reduction="none")

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, k: int, acquired: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Bool (B, N) target mask: acquired ∪ k estimated-good new locations."""
        if self.kind == "saliency":
            new = self._saliency(x, y, k, acquired)
        elif self.kind == "best-of-r":
            new = self._best_of_r(x, y, k, acquired, generator)
        else:
            new = random_mask(x.shape[0], self.operator.n_locations, k, acquired, generator, x.device)
        return acquired | new

    def _saliency(self, x, y, k, acquired):
        n = self.operator.n_locations
        with torch.enable_grad():
            m = torch.full(acquired.shape, k / n, device=x.device, requires_grad=True)
            soft = torch.where(acquired, torch.ones_like(m), m)
            grad = torch.autograd.grad(self._task_loss(x, y, soft).sum(), m)[0]
        return select_topk(-grad, k, acquired)

    @torch.no_grad()
    def _best_of_r(self, x, y, k, acquired, generator):
        b, n = acquired.shape
        best, best_loss = None, None
        for _ in range(self.r):
            new = random_mask(b, n, k, acquired, generator, x.device)
            loss = self._task_loss(x, y, (acquired | new).float())
            if best is None:
                best, best_loss = new, loss
            else:
                better = loss < best_loss
                best = torch.where(better[:, None], new, best)
                best_loss = torch.minimum(loss, best_loss)
        return best
