"""Randomness that does not depend on how a global batch is split across processes.

A training step draws its noise (first measurements, flow times, x0, random
masks) from a generator seeded by (run seed, global step). Per-sample draws go
through :func:`rand_rows` / :func:`randn_rows`: every process draws the values
of the *whole* global batch and keeps its own rows, so 2 processes × 64 samples
see exactly the noise that 1 process × 128 samples sees, and a distributed run
reproduces the single-process checkpoint (up to float summation order).
Batch-level draws (one budget per batch) use the generator directly and are
therefore identical on every rank.
"""

from __future__ import annotations

import torch


class ShardGenerator(torch.Generator):
    """A CPU generator that knows which rows of the global batch this process owns.

    By default the global batch is ``world`` equal shards and this process owns
    shard ``rank``; ``total``/``start`` describe an uneven split explicitly
    (e.g. the last batch of an evaluation).
    """

    rank: int = 0
    world: int = 1
    total: int | None = None
    start: int | None = None


def shard_generator(seed: int, rank: int = 0, world: int = 1, total: int | None = None,
                    start: int | None = None) -> ShardGenerator:
    gen = ShardGenerator()
    gen.rank, gen.world, gen.total, gen.start = rank, world, total, start
    gen.manual_seed(seed)
    return gen


def _rows(draw, batch: int, rest: tuple, generator: torch.Generator | None, device) -> torch.Tensor:
    rank, world = getattr(generator, "rank", 0), getattr(generator, "world", 1)
    total, start = getattr(generator, "total", None), getattr(generator, "start", None)
    if total is None:
        total, start = batch * world, rank * batch
    full = draw((total, *rest), generator=generator)
    return full[start:start + batch].to(device)


def rand_rows(batch: int, *rest: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """Uniform [0, 1) draws of shape (batch, *rest): this process's rows of the global batch."""
    return _rows(torch.rand, batch, rest, generator, device)


def randn_rows(batch: int, *rest: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """Standard normal draws of shape (batch, *rest): this process's rows of the global batch."""
    return _rows(torch.randn, batch, rest, generator, device)
