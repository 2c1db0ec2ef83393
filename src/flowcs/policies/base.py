"""The one interface every sampling policy implements.

``propose(condition, budget, acquired)`` returns the full hard mask (the
already-acquired locations plus exactly ``budget`` new ones), so that the
evaluation harness treats flow, random, Cartesian and learned baselines alike.

Sequential policies (A-DPS, ADS) measure between their acquisition steps. They
get an ``observe`` callback: ``observe(mask) -> zero_filled`` measures the
*current* samples with a (B, N) mask and returns the operator's zero-filled
image ``A_mᴴ y`` (B, C, H, W). It is a sufficient statistic of the measurement
for the masking operators of flowcs (pixel: ``y`` itself; Cartesian k-space:
``A_m`` of it gives ``y`` back). Non-sequential policies ignore it; a
sequential policy called without it raises a :class:`ConfigError`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch

from ..errors import ConfigError
from ..masks import check_budget, select_topk

#: ``observe(mask) -> zero-filled image`` of the current samples measured with ``mask`` (see the module doc)
Observe = Callable[[torch.Tensor], torch.Tensor]


class Policy(ABC):
    """A rule that decides where to measure next.

    ``condition`` is the network input built from the first measurement
    (B, C, H, W) — policies that ignore the data (random, Cartesian) still
    receive it for the batch size and device. ``acquired`` is a bool (B, N)
    mask of what has been measured already (may be all False).
    """

    name: str = "policy"
    adaptive: bool = False
    #: measures between acquisition steps: ``_new_locations`` also receives ``observe=``
    sequential: bool = False

    def __init__(self, n_locations: int):
        self.n_locations = int(n_locations)

    @abstractmethod
    def _new_locations(
        self, condition: torch.Tensor, budget: int, acquired: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Bool (B, N) mask of exactly ``budget`` locations not in ``acquired``."""

    def propose(
        self,
        condition: torch.Tensor,
        budget: int,
        acquired: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        observe: Observe | None = None,
    ) -> torch.Tensor:
        """Full hard mask: ``acquired`` ∪ ``budget`` new locations chosen by this policy.

        ``observe`` is used by sequential policies only (see the module doc).
        """
        acquired = self._check(condition, budget, acquired)
        if self.sequential:
            new = self._new_locations(condition, budget, acquired, generator, observe=self._need(observe))
        else:
            new = self._new_locations(condition, budget, acquired, generator)
        return acquired | new

    def propose_many(
        self,
        condition: torch.Tensor,
        budgets: Sequence[int],
        acquired: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        observe: Observe | None = None,
    ) -> dict[int, torch.Tensor]:
        """Masks for several budgets; policies whose scores do not depend on the budget override this."""
        return {b: self.propose(condition, b, acquired, generator, observe) for b in budgets}

    def _need(self, observe: Observe | None) -> Observe:
        if observe is None:
            raise ConfigError(f"{self.name} is a sequential policy: propose() needs observe=, a callback that "
                              f"measures the current samples with a mask and returns the zero-filled image")
        return observe

    def _check(self, condition: torch.Tensor, budget: int, acquired: torch.Tensor | None) -> torch.Tensor:
        batch = condition.shape[0]
        if acquired is None:
            acquired = torch.zeros(batch, self.n_locations, dtype=torch.bool, device=condition.device)
        if acquired.shape != (batch, self.n_locations):
            raise ConfigError(
                f"{self.name}: acquired mask must have shape ({batch}, {self.n_locations}), got {tuple(acquired.shape)}"
            )
        check_budget(budget, self.n_locations, int(acquired.sum(1).max()) if batch else 0)
        return acquired.bool()


class ScorePolicy(Policy):
    """A policy that ranks locations by a score and takes the hard top-k (flow, saliency...)."""

    @abstractmethod
    def scores(
        self, condition: torch.Tensor, acquired: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """(B, N) real scores; higher = measure first."""

    def _new_locations(self, condition, budget, acquired, generator):
        return select_topk(self.scores(condition, acquired, generator), budget, acquired)

    def propose_many(self, condition, budgets, acquired=None, generator=None, observe=None):
        # Scores do not depend on the budget: compute them once, threshold per budget.
        acquired = self._check(condition, max(budgets), acquired)
        s = self.scores(condition, acquired, generator)
        return {b: acquired | select_topk(s, b, acquired) for b in budgets}
