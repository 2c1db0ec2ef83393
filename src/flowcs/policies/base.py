"""The one interface every sampling policy implements.

``propose(condition, budget, acquired)`` returns the full hard mask (the
already-acquired locations plus exactly ``budget`` new ones), so that the
evaluation harness treats flow, random, Cartesian and learned baselines alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch

from ..errors import ConfigError
from ..masks import check_budget, select_topk


class Policy(ABC):
    """A rule that decides where to measure next.

    ``condition`` is the network input built from the first measurement
    (B, C, H, W) — policies that ignore the data (random, Cartesian) still
    receive it for the batch size and device. ``acquired`` is a bool (B, N)
    mask of what has been measured already (may be all False).
    """

    name: str = "policy"
    adaptive: bool = False

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
    ) -> torch.Tensor:
        """Full hard mask: ``acquired`` ∪ ``budget`` new locations chosen by this policy."""
        acquired = self._check(condition, budget, acquired)
        new = self._new_locations(condition, budget, acquired, generator)
        return acquired | new

    def propose_many(
        self,
        condition: torch.Tensor,
        budgets: Sequence[int],
        acquired: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[int, torch.Tensor]:
        """Masks for several budgets; policies whose scores do not depend on the budget override this."""
        return {b: self.propose(condition, b, acquired, generator) for b in budgets}

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

    def propose_many(self, condition, budgets, acquired=None, generator=None):
        # Scores do not depend on the budget: compute them once, threshold per budget.
        acquired = self._check(condition, max(budgets), acquired)
        s = self.scores(condition, acquired, generator)
        return {b: acquired | select_topk(s, b, acquired) for b in budgets}
