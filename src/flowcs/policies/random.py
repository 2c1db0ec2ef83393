"""Uniformly random locations: the baseline every learned policy must beat."""

from __future__ import annotations

from ..masks import random_mask
from .base import Policy


class RandomPolicy(Policy):
    """``budget`` locations drawn uniformly among the not-yet-acquired ones (seeded by ``generator``)."""

    name = "random"

    def _new_locations(self, condition, budget, acquired, generator):
        return random_mask(condition.shape[0], self.n_locations, budget, acquired, generator, condition.device)
