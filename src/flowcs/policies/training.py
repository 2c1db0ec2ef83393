"""The shared training objective of the learned peers (LOUPE, DPS, A-DPS) against a frozen task.

Every peer exposes ``relaxed_mask(k, acquired, generator, observe) -> (B, N)`` float mask of the *new*
locations (relaxed Bernoulli for LOUPE; straight-through Gumbel top-k for DPS / A-DPS). The objective
measures the batch with ``acquired ∪ relaxed``, reconstructs the zero-filled image, feeds it to the
**frozen** task model and returns the task loss; only the peer's parameters are trained (the task is
not a submodule of the objective: it is neither in the optimiser nor in the checkpoint, and ``fit``'s
``train()`` call cannot switch its BatchNorm/Dropout layers out of eval mode).

Measurements use the identity of masking operators ``measure(x, m) = mask_to_image(m) · measure(x, 1)``:
the fully-sampled measurement (noisy where the experiment adds noise) is drawn once per batch, so every
``observe`` of a sequential peer sees the same noise.

Straight-through peers (DPS, A-DPS; ``linear_sampling = True``) see the mask **once** in the zero-filled image
(``A_1ᴴ (m ⊙ y_full)``, linear in m, as DPS's sampling layer), not twice as ``zero_filled(measure(x, m), m)``
does (m²). Both agree on hard masks — the forward values of a straight-through mask are hard, so nothing the
task sees changes — but with m² the gradient at an *unselected* location (m = 0) is exactly zero: only the
locations already drawn would ever get a learning signal. LOUPE (``linear_sampling = False``) feeds *soft*
values forward, so it keeps the operator's own soft-mask convention (m², the one the task models — MoDL's
normal operator Fᴴ diag(m²) F — and the flow's gate use); with the linear form MoDL's data consistency would
contradict its zero-filled input.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..acquisition import full_measurement, observer
from ..masks import sample_budgets
from ..operators.base import Operator
from ..tasks.base import Task

__all__ = ["PeerObjective", "full_measurement", "observer"]

FirstFn = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]
MeasureFn = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]


class PeerObjective(nn.Module):
    """Task loss of a peer's relaxed mask on top of the experiment's first measurement.

    ``first(x, generator) -> acquired`` is the experiment's first measurement (random pixels or the MRI
    low-frequency band, possibly empty); ``budget`` is a fixed number of new locations (per-budget
    training, as in the papers) or a ``(min, max)`` rate range in percent sampled per batch.
    """

    def __init__(self, peer: nn.Module, task: Task, operator: Operator, first: FirstFn,
                 budget: int | tuple[float, float], noisy: bool = False):
        super().__init__()
        self.peer = peer
        self.task = task  # frozen, deliberately not registered as a submodule
        self.operator, self.first, self.budget, self.noisy = operator, first, budget, noisy

    def _k(self, generator) -> int:
        if isinstance(self.budget, int):
            return self.budget
        lo, hi = self.budget
        return int(sample_budgets(1, self.operator.n_locations, lo, hi, generator)[0])

    def forward(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        op = self.operator
        acquired = self.first(x, generator)
        k = self._k(generator)
        observe = observer(op, full_measurement(op, x, self.noisy, generator),
                           linear=getattr(self.peer, "linear_sampling", True))
        new = self.peer.relaxed_mask(k, acquired, generator, observe)
        mask = torch.where(acquired, torch.ones_like(new), new)
        pred = self.task.predict(observe(mask), op.mask_to_image(mask))
        loss = self.task.loss(pred, y)
        with torch.no_grad():
            score = self.task.score(pred.detach(), y).float().mean()
        return {"loss": loss, self.task.metric: score, "new_locations": new.detach().sum(1).mean()}
