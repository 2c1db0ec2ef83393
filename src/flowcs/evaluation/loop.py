"""The one evaluation loop: every experiment, ``flowcs compare`` and the benchmarks measure policies here.

For each evaluation seed and each batch of test samples: measure the samples (the measurement noise is drawn
once, so every policy sees the same data), acquire the first measurement, build the condition, let each policy
propose its masks for every budget, let the task read each mask's measurement, and score it per sample. The
generators come from a :class:`~flowcs.evaluation.draws.Draws` recipe, so which numbers a policy draws does
not depend on which other policies run.

Under torchrun each process evaluates a contiguous slice of every batch with the draws a single process
would use for those samples; the per-sample values are gathered back into the data set's order, so the
result is exactly the single-process one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..acquisition import Acquisition
from ..errors import FlowcsError
from ..policies.base import Policy
from ..training.distributed import current_dist, gather_rows, shard_range
from .draws import Draws
from .results import Results, Timing
from .setup import Reader, Setup

__all__ = ["Entry", "MaskEvent", "evaluate"]


@dataclass
class Entry:
    """A policy in the evaluation and the rows it produces.

    ``reuse_first``: the policy starts from the first measurement (its locations are kept and its condition is
    built from them); otherwise it gets nothing measured and only its budget. ``readers`` maps row names to
    the task models reading the policy's masks (default: one row named like the entry, read by the setup's
    task). ``draw_name``: whose random draws it uses (default its own name). ``max_samples`` / ``max_seeds``
    evaluate it on the first samples / seeds only (expensive policies).
    """

    policy: Policy
    reuse_first: bool = True
    readers: dict[str, Reader] | None = None
    draw_name: str | None = None
    max_samples: int | None = None
    max_seeds: int | None = None


@dataclass
class MaskEvent:
    """What one policy chose for one batch (passed to the ``on_masks`` hook)."""

    name: str
    seed_index: int
    rows: torch.Tensor  # global sample indices of the batch
    masks: dict[int, torch.Tensor]  # per budget: bool (B, N) full masks
    acquired: torch.Tensor  # bool (B, N) what the policy started from
    zero_filled: dict[int, torch.Tensor]  # per budget: the measurement the task read
    predictions: dict[tuple[str, int], torch.Tensor]  # (row, budget) -> the task's prediction


def _check_mask(name: str, mask: torch.Tensor, acquired: torch.Tensor, budget: int) -> None:
    new = (mask & ~acquired).sum(1)
    if not bool((new == budget).all()) or not bool(mask[acquired].all()):
        raise FlowcsError(f"policy {name} returned a mask without exactly {budget} new locations "
                          f"(got {new.tolist()[:5]}...) or dropped acquired ones")


@torch.inference_mode()
def evaluate(
    setup: Setup,
    entries: dict[str, Entry],
    draws: Draws,
    n_seeds: int,
    batch_size: int,
    device: torch.device,
    *,
    budgets: list[int] | None = None,
    references: dict[str, Reader] | None = None,
    on_masks: Callable[[MaskEvent], None] | None = None,
    desc: str = "evaluate",
) -> Results:
    """Per-sample metrics of every entry's rows (and every full-sampling reference) at every budget and seed.

    ``references`` map row names to readers of the *fully sampled* measurement (the ``full`` rows); their value
    is the same at every budget.
    """
    budgets = list(budgets or setup.budgets)
    references = references or {}
    dist = current_dist()
    n = len(setup.test)
    op = setup.operator
    timing = {name: Timing() for name in entries}
    collected: dict = {}  # (metric, row, budget) -> per seed: list of (indices, values)

    def record(row: str, b: int, s: int, idx: torch.Tensor, scores: dict[str, torch.Tensor]) -> None:
        for metric, v in scores.items():
            collected.setdefault((metric, row, b), {}).setdefault(s, []).append((idx, v.double().cpu()))

    for s in range(n_seeds):
        starts = range(0, n, batch_size)
        bar = tqdm(starts, desc=f"{desc} seed {s}", leave=False, disable=not dist.is_main)
        for i, start in enumerate(bar):
            stop = min(start + batch_size, n)
            lo, hi = shard_range(stop - start, dist)
            if hi <= lo:
                continue  # fewer samples than processes in this batch
            bd = draws.batch(s, i, start, stop, lo, hi, dist.rank, dist.world_size)
            rows = torch.arange(start + lo, start + hi)
            x = setup.test.x[start + lo:start + hi].to(device)
            y = setup.test.y[start + lo:start + hi].to(device)
            acq = Acquisition.start(op, x, setup.first, setup.condition, bd.first, setup.noisy, bd.noise)
            cond = acq.condition()
            none = torch.zeros_like(acq.acquired)
            for name, entry in entries.items():
                if entry.max_seeds is not None and s >= entry.max_seeds:
                    continue
                limit = rows.shape[0] if entry.max_samples is None else int((rows < entry.max_samples).sum())
                if limit == 0:
                    continue
                sub = acq if limit == rows.shape[0] else acq.rows(limit)
                if entry.reuse_first:
                    acquired, c_in = sub.acquired, cond[:limit]
                else:
                    acquired, c_in = none[:limit], sub.condition(none[:limit])
                g = bd.policy(entry.draw_name or name)
                t0 = time.perf_counter()
                masks = entry.policy.propose_many(c_in, budgets, acquired, g, observe=sub.observe)
                timing[name].seconds += time.perf_counter() - t0
                timing[name].images += limit
                timing[name].locations += limit * max(budgets)
                readers = entry.readers or {name: setup.task.predict}
                zfs, preds = {}, {}
                for b, m in masks.items():
                    _check_mask(name, m, acquired, b)
                    zfs[b] = zf = sub.observe(m)
                    for row, reader in readers.items():
                        preds[(row, b)] = pred = reader(zf, op.mask_to_image(m))
                        record(row, b, s, rows[:limit], setup.score(pred, y[:limit], rows[:limit]))
                if on_masks is not None:
                    on_masks(MaskEvent(name, s, rows[:limit], masks, acquired, zfs, preds))
            if references:
                ones = torch.ones_like(acq.acquired)
                zf = acq.observe(ones)
                for row, reader in references.items():
                    scores = setup.score(reader(zf, op.mask_to_image(ones)), y, rows)
                    for b in budgets:
                        record(row, b, s, rows, scores)
    return Results(budgets, _assemble(collected, dist), timing)


def _assemble(collected: dict, dist) -> dict:
    """Per (metric, row, budget): the values of every seed, gathered from every process into sample order."""
    out: dict = {}
    for (metric, row, b), per_seed in collected.items():
        seeds = []
        for s in sorted(per_seed):
            idx = gather_rows(torch.cat([i for i, _ in per_seed[s]]), dist)
            val = gather_rows(torch.cat([v for _, v in per_seed[s]]), dist)
            ordered = torch.empty_like(val)
            ordered[idx] = val
            seeds.append(ordered)
        out.setdefault(metric, {}).setdefault(row, {})[b] = torch.stack(seeds)
    return out
