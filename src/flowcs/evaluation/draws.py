"""Where the evaluation's random numbers come from (first measurement, measurement noise, each policy's draws).

Each batch of the evaluation asks a :class:`Draws` object for the generators of that batch. The two recipes
below reproduce the evaluation loops this package replaced, number for number: the pixel recipe (one generator
per batch, shared in order by the first measurement and the experiment's own policies; peers draw from their
own) and the MRI recipe (one noise generator and one generator per policy index per batch).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch

from ..rng import derive, row_generator, shard_generator

__all__ = ["Draws", "BatchDraws", "NamedDraws", "PixelDraws", "MRIDraws", "mix_seed"]


def mix_seed(*parts: int) -> torch.Generator:
    """A CPU generator seeded by a polynomial hash of integers."""
    h = 0
    for p in parts:
        h = (h * 1_000_003 + int(p)) % (2**61 - 1)
    return torch.Generator().manual_seed(h)


def _name_code(name: str) -> int:
    return zlib.crc32(name.encode())


@dataclass
class BatchDraws:
    """The generators of one evaluation batch."""

    first: torch.Generator | None
    noise: torch.Generator | None
    shared: torch.Generator | None
    shared_names: frozenset
    fallback: tuple  # (kind, parts) of a policy's own generator

    def policy(self, name: str) -> torch.Generator | None:
        if name in self.shared_names:
            return self.shared
        kind, parts = self.fallback
        if kind == "pixel":
            return mix_seed(*parts, _name_code(name))
        return mix_seed(*parts, MRI_POLICY_INDEX.get(name, 100 + _name_code(name) % 1000))


class Draws:
    """Generators per (evaluation seed, batch)."""

    def batch(self, seed_index: int, batch_index: int, start: int, stop: int, lo: int, hi: int, rank: int = 0,
              world: int = 1) -> BatchDraws:
        raise NotImplementedError


class PixelDraws(Draws):
    """Pixel recipe: evaluation seed ``run_seed·1000 + seed index``; generator ``seed·1_000_003 + batch``
    (sharded under torchrun) shared by the first measurement and the experiment's policies in order; other
    policies seeded by (seed, batch, name)."""

    SHARED = frozenset({"flow", "random", "random-same-total"})

    def __init__(self, run_seed: int):
        self.run_seed = int(run_seed)

    def batch(self, seed_index, batch_index, start, stop, lo, hi, rank=0, world=1):
        seed = self.run_seed * 1000 + seed_index
        gen = shard_generator(seed * 1_000_003 + batch_index, rank, world, total=stop - start, start=lo)
        return BatchDraws(gen, None, gen, self.SHARED, ("pixel", (seed, batch_index)))


#: the generator index of each MRI policy in the MRI recipe (zero-filled reads the random row's masks)
MRI_POLICY_INDEX = {"random": 0, "zero-filled": 0, "equispaced": 1, "variable-density": 2, "flow": 3,
                    "low-frequency": 4}


class MRIDraws(Draws):
    """MRI recipe: noise ``(run seed, 1, seed index, start)``, policy ``(run seed, 2, seed index, start, index)``."""

    def __init__(self, run_seed: int):
        self.run_seed = int(run_seed)

    def batch(self, seed_index, batch_index, start, stop, lo, hi, rank=0, world=1):
        noise = mix_seed(self.run_seed, 1, seed_index, start)
        return BatchDraws(None, noise, None, frozenset(), ("mri", (self.run_seed, 2, seed_index, start)))


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
