"""Stages of a run directory: train one (resumably) or load its finished weights, with one-line errors.

A *stage* is one trained model of a run: ``<run_dir>/<stage>.pt`` written by :func:`flowcs.training.loop.fit`
with a ``signature`` (the settings that shape the model and what it was trained against). Experiments,
``flowcs compare`` and the benchmarks all load stages through :func:`load_stage` and train them through
:func:`fit_stage` / :func:`train_or_load`, so a missing, unfinished or mismatched stage reads the same
everywhere and names the command that fixes it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from ..errors import ConfigError
from .checkpoint import load_checkpoint, load_state_into
from .distributed import DistInfo
from .loop import BatchFn, LoopConfig, fit

__all__ = ["StageContext", "load_stage", "load_state_prefix", "fit_stage", "train_or_load", "stage_done"]


class StageContext(Protocol):
    """What stage training needs of a run (``flowcs.experiments.RunContext`` is one)."""

    run_dir: Path
    seed: int
    device: torch.device
    dist: DistInfo
    resume: bool

    def checkpoint(self, name: str) -> Path: ...

    def command(self, verb: str, *extra: str) -> str: ...


def load_state_prefix(module: nn.Module, ckpt: dict, path: Path, prefix: str = "model.") -> nn.Module:
    """Load the part of a trained objective's state under ``prefix`` (e.g. its ``model`` attribute) into ``module``."""
    state = {k[len(prefix):]: v for k, v in ckpt["model"].items() if k.startswith(prefix)}
    load_state_into(module, {"model": state}, path)
    return module


def load_stage(ctx: StageContext, stage: str, module: nn.Module, signature: dict, prefix: str = "model.",
               ) -> nn.Module:
    """Load the final weights of a finished stage ``<run_dir>/<stage>.pt`` into ``module`` (eval mode).

    A missing or unfinished stage, or one trained with another configuration (``signature``), is a one-line
    error that repeats the user's own ``--run-dir`` (and ``--smoke``) in the command it suggests.
    """
    path = ctx.checkpoint(stage)
    if not path.is_file():
        raise ConfigError(f"{path}: stage '{stage}' has not been trained yet (run `{ctx.command('train')}` first)")
    ckpt = load_checkpoint(path, stage, signature)
    if not ckpt.get("done"):
        raise ConfigError(f"{path}: stage '{stage}' did not finish (rerun `{ctx.command('train', '--resume')}`)")
    load_state_prefix(module, ckpt, path, prefix)
    return module.to(ctx.device).eval()


def stage_done(path: Path, stage: str, signature: dict) -> dict | None:
    """The checkpoint of a finished stage, None if it is missing or unfinished (a mismatch is an error)."""
    if not path.is_file():
        return None
    ckpt = load_checkpoint(path, stage, signature)
    return ckpt if ckpt.get("done") else None


def fit_stage(ctx: StageContext, stage: str, objective: nn.Module, loop: LoopConfig, batch_fn: BatchFn, n_items: int,
              signature: dict, resume: bool | None = None, desc: str | None = None) -> dict:
    """Train ``objective`` as stage ``stage`` of the run (resumable; ``resume`` default: the run's)."""
    return fit(objective, batch_fn, n_items, loop, out_dir=ctx.run_dir, name=stage, signature=signature,
               seed=ctx.seed, device=ctx.device, dist=ctx.dist, resume=ctx.resume if resume is None else resume,
               desc=desc or stage)


def tensor_batches(x: torch.Tensor, y: torch.Tensor, device: torch.device) -> BatchFn:
    """``batch_fn`` over in-memory tensors: ``{"x": x[idx], "y": y[idx]}``."""

    def batch_fn(idx, _gen):
        return {"x": x[idx].to(device), "y": y[idx].to(device)}

    return batch_fn


def train_or_load(ctx: StageContext, stage: str, objective: nn.Module, batch_fn: BatchFn, n_items: int,
                  loop: LoopConfig, signature: dict, module: nn.Module, prefix: str, log: dict) -> dict:
    """Train stage ``stage`` unless it is finished already; load its weights into ``module``; log what happened.

    Returns the stage's checkpoint. ``log[stage]`` records the training seconds (0 when loaded) and steps.
    """
    path = ctx.checkpoint(stage)
    t0 = time.time()
    if stage_done(path, stage, signature) is None:
        torch.manual_seed(ctx.seed)
        fit_stage(ctx, stage, objective, loop, batch_fn, n_items, signature, resume=True)
        log[stage] = {"trained_s": round(time.time() - t0, 1)}
    else:
        log[stage] = {"trained_s": 0.0, "note": "already trained (loaded)"}
    ckpt = load_checkpoint(path, stage, signature)
    load_state_prefix(module, ckpt, path, prefix)
    module.eval()
    log[stage]["steps"] = int(ckpt["global_step"])
    return ckpt
