"""What every experiment shares: the run context, staged training, and the SPEC §9 results files."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..io import to_json, write_json, write_texts
from ..metrics import summarize
from ..runinfo import git_commit, run_metadata
from ..training.checkpoint import load_checkpoint, load_state_into
from ..training.distributed import DistInfo
from ..training.loop import LoopConfig, fit


@dataclass
class RunContext:
    """Everything a stage needs besides its own config section."""

    experiment: str
    cfg: Any
    cfg_dict: dict
    run_dir: Path
    results_dir: Path
    data_root: Path
    seed: int
    device: torch.device
    dist: DistInfo = field(default_factory=DistInfo)
    resume: bool = False
    started: float = field(default_factory=time.time)
    commit: str | None = field(default_factory=lambda: git_commit())  # the code this run started with

    def checkpoint(self, name: str) -> Path:
        return self.run_dir / f"{name}.pt"

    def metadata(self, **extra) -> dict:
        return run_metadata(self.cfg_dict, self.seed, self.device, self.started, self.commit,
                            {"experiment": self.experiment, "data_root": str(self.data_root), **extra})


def metrics_payload(
    experiment: str,
    metric: str,
    higher_is_better: bool,
    budget_unit: str,
    budgets: list,
    policies: dict[str, dict],
    **extra: Any,
) -> dict:
    """The one results schema (SPEC §9)."""
    return {
        "experiment": experiment,
        "metric": metric,
        "higher_is_better": higher_is_better,
        "budget_unit": budget_unit,
        "budgets": list(budgets),
        "policies": policies,
        **extra,
    }


def markdown_table(payload: dict, scale: float = 1.0, digits: int = 2) -> str:
    """Metric-vs-budget table, one row per policy, ``mean ± std``."""
    unit = {"percent": "%", "pixels": " px", "acceleration": "×"}.get(payload["budget_unit"], "")
    head = "| policy | " + " | ".join(f"{b}{unit}" for b in payload["budgets"]) + " |"
    sep = "|---" * (len(payload["budgets"]) + 1) + "|"
    rows = [head, sep]
    for name, p in payload["policies"].items():
        cells = []
        for i, m in enumerate(p["mean"]):
            s = p.get("std", [None] * len(p["mean"]))[i]
            cells.append(f"{m * scale:.{digits}f}" + (f" ± {s * scale:.{digits}f}" if s is not None else ""))
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def write_results(results_dir: Path, name: str, payload: dict, meta: dict, table_scale: float = 1.0) -> None:
    """Write ``<name>.json``, ``<name>.md`` and ``run.json`` atomically."""
    run_file = results_dir / "run.json" if name == "metrics" else results_dir / f"{name}.run.json"
    write_texts({results_dir / f"{name}.json": to_json(payload),
                 results_dir / f"{name}.md": markdown_table(payload, table_scale),
                 run_file: to_json(meta)})


# ----------------------------------------------------------------------------- staged training


def load_stage(ctx: RunContext, stage: str, module: nn.Module, signature: dict, state_prefix: str = "model."
               ) -> nn.Module:
    """Load the final weights of a finished stage ``<run_dir>/<stage>.pt`` into ``module`` (eval mode).

    ``state_prefix`` selects the sub-dict of the trained objective's state that belongs to ``module``
    (``"model."`` for the objective's ``model`` attribute). A missing or unfinished stage, or one trained
    with another configuration (``signature``), is a one-line error.
    """
    path = ctx.checkpoint(stage)
    if not path.is_file():
        raise ConfigError(f"{path}: stage '{stage}' has not been trained yet "
                          f"(run `flowcs train {ctx.experiment}` first)")
    ckpt = load_checkpoint(path, stage, signature)
    if not ckpt.get("done"):
        raise ConfigError(f"{path}: stage '{stage}' did not finish (rerun `flowcs train {ctx.experiment} --resume`)")
    state = {k[len(state_prefix):]: v for k, v in ckpt["model"].items() if k.startswith(state_prefix)}
    load_state_into(module, {"model": state}, path)
    return module.to(ctx.device).eval()


def fit_stage(ctx: RunContext, stage: str, objective: nn.Module, loop: LoopConfig, x: torch.Tensor,
              y: torch.Tensor, signature: dict) -> dict:
    """Train ``objective(x=..., y=...)`` on in-memory tensors as stage ``stage`` (resumable)."""

    def batch_fn(idx, _gen):
        return {"x": x[idx].to(ctx.device), "y": y[idx].to(ctx.device)}

    return fit(objective, batch_fn, x.shape[0], loop, out_dir=ctx.run_dir, name=stage, signature=signature,
               seed=ctx.seed, device=ctx.device, dist=ctx.dist, resume=ctx.resume, desc=stage)


def record_data_sources(ctx: RunContext, sources: dict) -> None:
    """Remember which data files training used (``<run_dir>/data_sources.json``) for the results."""
    if ctx.dist.is_main:
        write_json(ctx.run_dir / "data_sources.json", sources)


def recorded_data_sources(ctx: RunContext) -> dict:
    path = ctx.run_dir / "data_sources.json"
    return json.loads(path.read_text()) if path.is_file() else {"train": "unknown (data_sources.json missing)"}


# ----------------------------------------------------------------------------- aggregation


def seed_row(per_seed: list[dict], name: str, budgets: list, indices: torch.Tensor | None = None) -> dict:
    """One SPEC §9 row from per-sample values ``per_seed[s][name][budget]`` of several evaluation seeds.

    ``mean`` = mean over seeds of the per-seed means, ``std`` = their spread across seeds (0 with one seed),
    ``ci95_pooled`` = bootstrap interval of all per-sample values pooled over seeds, ``n`` = samples per seed.
    ``indices`` restricts the row to a subset of the samples (e.g. a fixed test subset).
    """
    def values(run, b):
        v = run[name][b]
        return v if indices is None else v[indices]

    means, stds, ci = [], [], []
    for b in budgets:
        seed_means = torch.stack([values(run, b).float().mean() for run in per_seed])
        means.append(float(seed_means.mean()))
        stds.append(float(seed_means.std(unbiased=False)) if len(per_seed) > 1 else 0.0)
        ci.append(list(summarize(torch.cat([values(run, b) for run in per_seed]))["ci95"]))
    return {"mean": means, "std": stds, "ci95_pooled": ci, "n": int(values(per_seed[0], budgets[0]).numel())}
