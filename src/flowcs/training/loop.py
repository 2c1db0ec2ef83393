"""One training loop for every model in flowcs (task nets, flow policies, learned baselines).

What it guarantees, whatever is trained:
* DDP-ready: under torchrun the objective is wrapped in DistributedDataParallel.
  ``batch_size`` is the *global* batch: each epoch is a seeded permutation of
  the data (reshuffled per epoch, like DistributedSampler), cut into global
  batches, and rank r of W trains on the r-th contiguous slice of each.
* Independent of the number of processes: all randomness of step ``g`` comes
  from a generator seeded by (seed, g) whose per-sample draws are taken for
  the whole global batch (:mod:`flowcs.rng`). A run on W processes therefore
  sees the data and noise of a 1-process run with the same global batch, and
  a checkpoint can be resumed on a different number of processes.
* No lost work: atomic checkpoints every ``checkpoint_every`` steps, at each
  epoch end and on SIGINT/SIGTERM; the previous checkpoint is kept as a fallback.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import ConfigError, FlowcsError
from ..rng import ShardGenerator, shard_generator
from .checkpoint import load_state_into, newest_valid, save_checkpoint
from .distributed import DistInfo, all_reduce_sum, barrier

BatchFn = Callable[[torch.Tensor, torch.Generator], dict]


@dataclass
class LoopConfig:
    epochs: int = 1
    batch_size: int = 128
    lr: float = 1e-3
    grad_clip: float | None = 1.0
    checkpoint_every: int = 200
    steps_per_epoch: int | None = None  # cap per epoch (train on a subset each epoch)
    log_every: int = 25

    def __post_init__(self) -> None:
        """Reject values that would fail (or silently do nothing) only once training has started."""
        checks = [("epochs", self.epochs >= 1), ("batch_size", self.batch_size >= 1),
                  ("lr", math.isfinite(self.lr) and self.lr > 0),
                  ("grad_clip", self.grad_clip is None or (math.isfinite(self.grad_clip) and self.grad_clip > 0)),
                  ("checkpoint_every", self.checkpoint_every >= 1),
                  ("steps_per_epoch", self.steps_per_epoch is None or self.steps_per_epoch >= 1),
                  ("log_every", self.log_every >= 1)]
        bad = [name for name, ok in checks if not ok]
        if bad:
            raise ConfigError("invalid training-loop value(s): " + ", ".join(f"{b}={getattr(self, b)!r}" for b in bad)
                              + " (epochs, batch_size, checkpoint_every, log_every must be >= 1; lr > 0)")


class Interrupted(FlowcsError):
    """Training stopped by a signal after writing a checkpoint."""

    exit_code = 130


def step_generator(seed: int, global_step: int, dist: DistInfo | None = None) -> ShardGenerator:
    """The generator of one global step; knows this process's share of the global batch."""
    dist = dist or DistInfo()
    return shard_generator((seed * 1_000_003 + global_step) % (2**63 - 1), dist.rank, dist.world_size)


def epoch_order(n_items: int, seed: int, epoch: int) -> torch.Tensor:
    """The seeded permutation of epoch ``epoch`` (the same on every process)."""
    return torch.randperm(n_items, generator=torch.Generator().manual_seed(seed * 7_919 + epoch))


@contextmanager
def _stop_on_signals() -> Iterator[dict]:
    state = {"signal": None}

    def handler(signum, _frame):
        state["signal"] = signum

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not in the main thread
            pass
    try:
        yield state
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


def checkpoint_paths(out_dir: Path, name: str) -> tuple[Path, Path]:
    return out_dir / f"{name}.pt", out_dir / f"{name}.prev.pt"


def fit(
    objective: nn.Module,
    batch_fn: BatchFn,
    n_items: int,
    cfg: LoopConfig,
    *,
    out_dir: Path,
    name: str,
    signature: dict,
    seed: int,
    device: torch.device,
    dist: DistInfo | None = None,
    resume: bool = False,
    desc: str | None = None,
) -> dict:
    """Train ``objective`` (returns a dict with ``loss``) and return the last logged averages."""
    dist = dist or DistInfo()
    out_dir = Path(out_dir)
    ckpt_path, prev_path = checkpoint_paths(out_dir, name)
    log_path = out_dir / f"{name}.log.jsonl"
    params = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    if cfg.batch_size % dist.world_size:
        raise ConfigError(f"{name}: global batch size {cfg.batch_size} is not divisible by the "
                          f"{dist.world_size} processes")
    local = cfg.batch_size // dist.world_size
    per_epoch = n_items // cfg.batch_size
    if cfg.steps_per_epoch:
        per_epoch = min(per_epoch, cfg.steps_per_epoch)
    if per_epoch < 1:
        raise FlowcsError(f"{name}: {n_items} training items are too few for batch size {cfg.batch_size}")
    total = cfg.epochs * per_epoch
    global_step = 0
    if resume:
        found = newest_valid([ckpt_path, prev_path], name, signature)
        if found is not None:
            path, ckpt = found
            load_state_into(objective, ckpt, path)
            optimizer.load_state_dict(ckpt["optimizer"])
            global_step = int(ckpt["global_step"])
            if dist.is_main:
                print(f"[{name}] resumed from {path} at step {global_step}/{total}", file=sys.stderr)
        elif dist.is_main:
            why = "none is loadable" if ckpt_path.exists() or prev_path.exists() else "there is none"
            print(f"[{name}] --resume: no usable checkpoint in {out_dir} ({why}); training this stage from the "
                  f"start", file=sys.stderr)
    if global_step >= total:
        return _read_last_log(log_path)

    model = objective
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel  # imports torch._dynamo/sympy: seconds

        model = DistributedDataParallel(objective, find_unused_parameters=True)
    model.train()

    def save(done: bool) -> None:
        sums = _rank_checksums(objective, dist) if done else None  # collective: every rank takes part
        if not dist.is_main:
            return
        if ckpt_path.exists():
            ckpt_path.replace(prev_path)
        save_checkpoint(ckpt_path, name, signature, {
            "model": objective.state_dict(), "optimizer": optimizer.state_dict(),
            "global_step": global_step, "done": done, "loop": asdict(cfg), "world_size": dist.world_size,
            **({"rank_param_checksums": sums} if sums is not None else {}),
        })

    running: dict[str, float] = {}
    count = 0
    skipped = 0
    last: dict = {}
    bar = tqdm(total=total, initial=global_step, desc=desc or name, disable=not dist.is_main,
               dynamic_ncols=True, mininterval=1.0 if sys.stderr.isatty() else 30.0)
    t0 = time.time()
    with _stop_on_signals() as stop:
        while global_step < total:
            epoch, start = divmod(global_step, per_epoch)
            order = epoch_order(n_items, seed, epoch)
            for step in range(start, per_epoch):
                first = step * cfg.batch_size + dist.rank * local
                idx = order[first:first + local]
                gen = step_generator(seed, global_step, dist)
                # dropout and other layers draw from the global RNG: seed it per step so a resumed run
                # replays exactly (per rank: dropout masks need not match across processes)
                torch.manual_seed((seed * 1_000_003 + global_step * 31 + dist.rank) % (2**63 - 1))
                out = model(**batch_fn(idx, gen), generator=gen)
                loss = out["loss"]
                if not torch.isfinite(loss):
                    save(False)
                    raise FlowcsError(f"{name}: loss became {loss.item()} at step {global_step}; "
                                      f"last good checkpoint kept at {ckpt_path} (lower the learning rate?)")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip or math.inf)
                if not torch.isfinite(norm):  # a finite loss with NaN/inf gradients: never let it reach the weights
                    skipped += 1
                    if skipped > max(10, total // 100):
                        raise FlowcsError(f"{name}: non-finite gradients in {skipped} steps (last at step "
                                          f"{global_step}); last good checkpoint kept at {ckpt_path}")
                else:
                    optimizer.step()
                global_step += 1
                bar.update(1)
                for k, v in out.items():
                    running[k] = running.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v)
                count += 1
                if count == cfg.log_every or global_step == total:
                    last = _log(running, count, dist, global_step, epoch, t0, log_path, bar)
                    running, count = {}, 0
                if stop["signal"] is not None:
                    save(False)
                    bar.close()
                    raise Interrupted(f"{name}: stopped by signal {stop['signal']} at step {global_step}/{total}; "
                                      f"checkpoint saved to {ckpt_path} (rerun with --resume to continue)")
                if global_step % cfg.checkpoint_every == 0 and global_step < total:
                    save(False)
        save(True)
    bar.close()
    barrier(dist)  # later stages on other ranks read this checkpoint
    return last


def _rank_checksums(objective: nn.Module, dist: DistInfo) -> list[float]:
    """Sum of |trainable weights| on every rank: equal values show the replicas stayed in sync."""
    local = torch.stack([p.detach().double().abs().sum() for p in objective.parameters() if p.requires_grad]).sum()
    if not dist.enabled:
        return [float(local)]
    gathered = [torch.zeros_like(local) for _ in range(dist.world_size)]
    torch.distributed.all_gather(gathered, local)
    return [float(g) for g in gathered]


def _log(running, count, dist, global_step, epoch, t0, log_path: Path, bar) -> dict:
    keys = sorted(running)
    vec = all_reduce_sum(torch.tensor([running[k] for k in keys] + [count], dtype=torch.float64), dist)
    avg = {k: float(vec[i] / vec[-1]) for i, k in enumerate(keys)}
    rec = {"step": global_step, "epoch": epoch, "elapsed_s": round(time.time() - t0, 2), **avg}
    if dist.is_main:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        bar.set_postfix({k: f"{v:.4g}" for k, v in avg.items() if math.isfinite(v)}, refresh=False)
    return rec


def _read_last_log(log_path: Path) -> dict:
    if not log_path.is_file():
        return {}
    lines = [ln for ln in log_path.read_text().splitlines() if ln.strip()]
    try:
        return json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        return {}
