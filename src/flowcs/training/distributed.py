"""torchrun / DistributedDataParallel plumbing: a single process is the world-size-1 case."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun (RANK/WORLD_SIZE set); no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def current_dist() -> DistInfo:
    """The process group this process belongs to (world size 1 when not under torchrun)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo()


def shard_range(n: int, info: DistInfo) -> tuple[int, int]:
    """Contiguous slice [lo, hi) of n items owned by this rank (ceil split; the last ranks may get fewer)."""
    chunk = -(-n // info.world_size)
    lo = min(info.rank * chunk, n)
    return lo, min(lo + chunk, n)


def gather_rows(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate every rank's rows in rank order (exact: no padding is counted)."""
    if not info.enabled:
        return t
    t = t.contiguous()
    sizes = [torch.zeros(1, dtype=torch.long) for _ in range(info.world_size)]
    dist.all_gather(sizes, torch.tensor([t.shape[0]]))
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *t.shape[1:]), dtype=t.dtype)
    padded[: t.shape[0]] = t
    parts = [torch.zeros_like(padded) for _ in range(info.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)])


def merge_dicts(d: dict, info: DistInfo) -> dict:
    """Every rank's dict merged into one (on every rank): for small per-rank records such as figure data."""
    if not info.enabled:
        return d
    parts: list = [None] * info.world_size
    dist.all_gather_object(parts, d)
    out: dict = {}
    for p in parts:
        out.update(p)
    return out


def shutdown(clean: bool = True) -> None:
    """Leave the process group before the interpreter exits (gloo aborts a process whose group is still up).

    ``clean``: every rank got here normally, so wait for the others first; after an error, just leave.
    """
    if dist.is_available() and dist.is_initialized():
        if clean:
            dist.barrier()
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t
