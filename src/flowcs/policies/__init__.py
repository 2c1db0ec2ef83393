"""Sampling policies behind one interface: ``propose(condition, budget, acquired) -> mask``."""

from .base import Policy, ScorePolicy
from .random import RandomPolicy

__all__ = ["Policy", "ScorePolicy", "RandomPolicy"]
