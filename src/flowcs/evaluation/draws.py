"""Where the evaluation's random numbers come from (first measurement, measurement noise, each policy's draws).

Each batch of the evaluation asks a :class:`Draws` object for the generators of that batch.
:class:`NamedDraws`, the one every experiment uses, derives every sample's generators from names
(:func:`flowcs.rng.derive`): a policy's draws for an image depend only on the run seed, the evaluation seed,
the image's index and the policy's name.
"""

from __future__ import annotations

import torch

from ..rng import derive, row_generator

__all__ = ["Draws", "NamedDraws"]


class Draws:
    """The generators of each (evaluation seed, batch); ``batch()`` returns an object with ``first``, ``noise``
    and ``policy(name)``."""

    def batch(self, seed_index: int, batch_index: int, start: int, stop: int, lo: int, hi: int, rank: int = 0,
              world: int = 1):
        raise NotImplementedError


class _NamedBatch:
    """Generators of one batch whose every row is seeded by (run seed, evaluation seed, sample, name)."""

    def __init__(self, run_seed: int, seed_index: int, rows: range):
        self.run_seed, self.seed_index, self.rows = run_seed, seed_index, rows
        self.first = self._gen("first-measurement")
        self.noise = self._gen("measurement-noise")

    def _gen(self, name: str) -> torch.Generator:
        seeds = [derive(self.run_seed, self.seed_index, i, name) for i in self.rows]
        return row_generator(seeds, derive(self.run_seed, self.seed_index, self.rows.start, name, "batch"))

    def policy(self, name: str) -> torch.Generator:
        return self._gen(name)


class NamedDraws(Draws):
    """Every sample's draws derived from names: ``derive(run seed, seed index, sample index, what)``, ``what`` being
    ``first-measurement``, ``measurement-noise`` or the policy's name. Adding, removing or reordering a policy,
    changing the batch size or the number of processes changes no other number."""

    def __init__(self, run_seed: int):
        self.run_seed = int(run_seed)

    def batch(self, seed_index, batch_index, start, stop, lo, hi, rank=0, world=1):
        return _NamedBatch(self.run_seed, seed_index, range(start + lo, start + hi))
