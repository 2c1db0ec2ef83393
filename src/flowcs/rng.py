"""Randomness that does not depend on how a global batch is split across processes.

A training step draws its noise (first measurements, flow times, x0, random
masks) from a generator seeded by (run seed, global step). Per-sample draws go
through :func:`rand_rows` / :func:`randn_rows`: every process draws the values
of the *whole* global batch and keeps its own rows, so 2 processes × 64 samples
see exactly the noise that 1 process × 128 samples sees, and a distributed run
reproduces the single-process checkpoint (up to float summation order).
Batch-level draws (one budget per batch) use the generator directly and are
therefore identical on every rank.

Evaluation goes one step further: every sample gets its own generators, seeded
by :func:`derive` from names and numbers (run seed, evaluation seed, sample
index, policy name), and a :class:`RowGenerator` hands each row of a batch its
own sample's stream. A policy's draws for an image then depend on nothing but
that image and the policy's name: not on the batch size, the number of
processes, or which other policies run before it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

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


def derive(*parts: int | str) -> int:
    """A 63-bit seed from a sequence of numbers and names (blake2b: stable across runs, machines, versions)."""
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        if isinstance(p, bool) or not isinstance(p, (int, str)):
            raise TypeError(f"derive() takes ints and strings, got {p!r}")
        h.update(f"{type(p).__name__}:{p}".encode())
        h.update(b"\x1f")
    return int.from_bytes(h.digest(), "little") >> 1


class RowGenerator(torch.Generator):
    """A batch's generators, one per row: per-sample draws (:func:`rand_rows`, :func:`randn_rows`) take row i
    from ``rows[i]``; a direct ``torch.rand(..., generator=g)`` uses the generator's own (batch-level) state."""

    rows: list[torch.Generator]


def row_generator(seeds: Sequence[int], batch_seed: int = 0) -> RowGenerator:
    """A :class:`RowGenerator` whose row i is seeded by ``seeds[i]`` (its batch-level state by ``batch_seed``)."""
    gen = RowGenerator()
    gen.manual_seed(int(batch_seed))
    gen.rows = [torch.Generator().manual_seed(int(s)) for s in seeds]
    return gen


def _rows(draw, batch: int, rest: tuple, generator: torch.Generator | None, device) -> torch.Tensor:
    if isinstance(generator, RowGenerator):
        if batch > len(generator.rows):
            raise ValueError(f"{batch} rows requested from a generator of {len(generator.rows)} rows")
        return torch.stack([draw(rest, generator=g) for g in generator.rows[:batch]]).to(device)
    rank, world = getattr(generator, "rank", 0), getattr(generator, "world", 1)
    total, start = getattr(generator, "total", None), getattr(generator, "start", None)
    if total is None:
        total, start = batch * world, rank * batch
    full = draw((total, *rest), generator=generator)
    return full[start:start + batch].to(device)


def rand_rows(batch: int, *rest: int, generator: torch.Generator | None = None, device="cpu",
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniform [0, 1) draws of shape (batch, *rest): this process's rows of the global batch."""
    return _rows(lambda shape, generator: torch.rand(shape, generator=generator, dtype=dtype), batch, rest, generator,
                 device)


def randn_rows(batch: int, *rest: int, generator: torch.Generator | None = None, device="cpu",
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal draws of shape (batch, *rest): this process's rows of the global batch."""
    return _rows(lambda shape, generator: torch.randn(shape, generator=generator, dtype=dtype), batch, rest,
                 generator, device)
