"""Experiment ``kspace-points``: flow policy vs random policy for 2-D k-space point sampling of MNIST digits.

Protocol: every digit (downsampled to ``data.size``², real image in the first of two channels) is first
measured on the central ``first_block``² k-space block; a policy then picks ``budget`` more k-space points.
The task is the zero-filled reconstruction ``F^H(M ⊙ F x)`` (a task with no trained model: the
:class:`ZeroFilledTask`), scored by the normalised squared error (NMSE, lower is better). The flow policy is
the flowcs one (FM loss + gated task loss, Kendall weighting, Euler sampling); only the geometry
(:class:`~kspace_points.geometry.KSpacePointOperator`), the small velocity MLP and the condition encoder are
defined here.

Run it (from the repository root)::

    PYTHONPATH=examples/kspace_points FLOWCS_PLUGINS=kspace_points \\
        flowcs run kspace-points --smoke --config examples/kspace_points/config.yaml
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from flowcs.data import load_mnist
from flowcs.errors import ConfigError
from flowcs.experiments import report
from flowcs.experiments.common import (
    RunContext,
    load_stage,
    metrics_payload,
    record_data_sources,
    seed_row,
    write_results,
)
from flowcs.flow.model import FlowModel, FrozenEncoder
from flowcs.flow.nets.mlp import MRIVelocityMLP, PooledCondition
from flowcs.flow.objective import FlowTaskObjective
from flowcs.flow.policy import FlowPolicy
from flowcs.flow.targets import TargetEstimator
from flowcs.masks import rate_to_budget
from flowcs.policies import RandomPolicy
from flowcs.registry import get_operator
from flowcs.rng import shard_generator
from flowcs.tasks.base import Task
from flowcs.training.loop import LoopConfig, fit

NAME = "kspace-points"
STAGES = ["flow"]


@dataclass
class DataConfig:
    size: int = 14                  # digits are average-pooled from 28×28 to size×size (28 / size must be whole)
    train_images: int = 4096
    test_images: int = 1000


@dataclass
class FlowConfig:
    first_block: int = 3            # side of the central k-space block measured first
    rate_min: float = 3.0           # policy budget during training, % of the N points
    rate_max: float = 15.0
    target: str = "saliency"
    loss: str = "both"
    gate_a: float = 30.0
    gate_b: float = 1.0
    steps: int = 10                 # Euler steps at sampling time
    hidden: int = 256
    layers: int = 2
    pool: int = 7                   # condition = zero-filled first measurement average-pooled to pool×pool
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(epochs=4, batch_size=64, lr=2e-3))


@dataclass
class EvalConfig:
    budgets: list[int] = field(default_factory=lambda: [5, 10, 20, 30])   # new k-space points per image
    seeds: int = 2
    batch_size: int = 250


@dataclass
class Config:
    geometry: str = "kspace-points"   # an operator name from flowcs.registry
    data: DataConfig = field(default_factory=DataConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


SMOKE = {"data": {"train_images": 1024, "test_images": 200},
         "flow": {"loop": {"epochs": 3, "batch_size": 32}},
         "eval": {"seeds": 1, "budgets": [5, 10, 20]}}


# ----------------------------------------------------------------------------- the pieces


class ZeroFilledTask(Task):
    """Zero-filled reconstruction: no trained model, loss = squared error, metric = NMSE per image."""

    name = "zero-filled"
    metric = "nmse"
    higher_is_better = False

    def __init__(self):
        super().__init__(nn.Identity())

    def predict(self, zero_filled, mask_image):
        return zero_filled

    def loss(self, pred, target, reduction="mean"):
        per = (pred - target).pow(2).flatten(1).sum(1)
        return per.mean() if reduction == "mean" else per

    def score(self, pred, target):
        return (pred - target).pow(2).flatten(1).sum(1) / target.pow(2).flatten(1).sum(1).clamp_min(1e-12)


def operator_for(cfg: Config):
    return get_operator(cfg.geometry)(cfg.data.size, cfg.data.size)


def build_flow_model(cfg: Config, n_locations: int) -> FlowModel:
    f = cfg.flow
    velocity = MRIVelocityMLP(n_locations, 2 * f.pool * f.pool, f.hidden, f.layers, time_dim=32)
    return FlowModel(FrozenEncoder(PooledCondition(f.pool)), velocity)


def signature(cfg: Config) -> dict:
    f = cfg.flow
    return {"experiment": NAME, "size": cfg.data.size, "hidden": f.hidden, "layers": f.layers, "pool": f.pool,
            "geometry": cfg.geometry}


def first_measurement(op, x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(acquired (B, N) bool = the central block, condition = its zero-filled image)."""
    from .geometry import central_block

    _, h, w = op.image_shape
    acquired = central_block(h, w, block).to(x.device).expand(x.shape[0], -1).clone()
    return acquired, op.zero_filled(op.measure(x, acquired), acquired)


# ----------------------------------------------------------------------------- experiment API


def validate(cfg: Config) -> None:
    if cfg.data.size < 4 or 28 % cfg.data.size:
        raise ConfigError(f"data.size must divide 28 and be at least 4, got {cfg.data.size}")
    n = cfg.data.size ** 2
    if max(cfg.eval.budgets) + cfg.flow.first_block ** 2 > n:
        raise ConfigError(f"eval.budgets up to {max(cfg.eval.budgets)} plus the first block exceed the {n} points")
    if cfg.eval.seeds < 1:
        raise ConfigError(f"eval.seeds must be at least 1, got {cfg.eval.seeds}")


def load_digits(ctx: RunContext, split: str) -> tuple[torch.Tensor, str]:
    """(B, 2, s, s) digits in [0, 1] (imaginary channel 0) and the file they came from."""
    c = ctx.cfg.data
    s = load_mnist(ctx.data_root / "mnist", split)
    n = min(c.train_images if split == "train" else c.test_images, len(s))
    x = s.images[:n].float().div(255.0).unsqueeze(1)
    x = F.avg_pool2d(x, 28 // c.size)
    return torch.cat([x, torch.zeros_like(x)], dim=1), s.source


def train(ctx: RunContext, stages: list[str] | None = None) -> None:
    cfg = ctx.cfg
    for stage in stages or STAGES:
        if stage not in STAGES:
            raise ConfigError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")
    x, source = load_digits(ctx, "train")
    record_data_sources(ctx, {"train": source})
    op = operator_for(cfg)
    task = ZeroFilledTask().freeze()
    model = build_flow_model(cfg, op.n_locations)
    f = cfg.flow
    objective = FlowTaskObjective(model, task, op, TargetEstimator(f.target, task, op), f.loss, f.gate_a,
                                  f.gate_b).to(ctx.device)

    def batch_fn(idx: torch.Tensor, gen: torch.Generator) -> dict:
        xb = x[idx].to(ctx.device)
        acquired, cond = first_measurement(op, xb, f.first_block)
        rate = f.rate_min + (f.rate_max - f.rate_min) * float(torch.rand(1, generator=gen))
        return {"x": xb, "y": xb, "condition": cond, "acquired": acquired, "k": rate_to_budget(rate, op.n_locations)}

    fit(objective, batch_fn, x.shape[0], f.loop, out_dir=ctx.run_dir, name="flow", signature=signature(cfg),
        seed=ctx.seed, device=ctx.device, dist=ctx.dist, resume=ctx.resume, desc="flow")


@torch.inference_mode()
def evaluate(ctx: RunContext) -> dict:
    cfg = ctx.cfg
    op = operator_for(cfg)
    model = load_stage(ctx, "flow", build_flow_model(cfg, op.n_locations), signature(cfg))
    x, test_source = load_digits(ctx, "test")
    x = x.to(ctx.device)
    task = ZeroFilledTask()
    policies = {"flow": FlowPolicy(model, op.n_locations, steps=cfg.flow.steps), "random": RandomPolicy(op.n_locations)}
    budgets = list(cfg.eval.budgets)
    per_seed, density = [], torch.zeros(op.n_locations)
    for s in range(cfg.eval.seeds):
        values = {name: {b: [] for b in budgets} for name in policies}
        for i, start in enumerate(range(0, x.shape[0], cfg.eval.batch_size)):
            xb = x[start:start + cfg.eval.batch_size]
            acquired, cond = first_measurement(op, xb, cfg.flow.first_block)
            for name, policy in policies.items():
                gen = shard_generator(ctx.seed * 1_000_003 + s * 1009 + i)
                for b, m in policy.propose_many(cond, budgets, acquired, gen).items():
                    pred = task.predict(op.zero_filled(op.measure(xb, m), m), op.mask_to_image(m))
                    values[name][b].append(task.score(pred, xb).double().cpu())
                    if s == 0 and name == "flow" and b == budgets[-1]:
                        density += (m & ~acquired).float().sum(0).cpu()
        per_seed.append({name: {b: torch.cat(v) for b, v in per.items()} for name, per in values.items()})
    rows = {name: seed_row(per_seed, name, budgets) for name in policies}
    payload = metrics_payload(
        NAME, "nmse", False, "points", budgets, rows,
        geometry=cfg.geometry, first_block=cfg.flow.first_block, n_locations=op.n_locations,
        seeds=cfg.eval.seeds, test_images=int(x.shape[0]),
        margins={"flow_vs_random": [r - f for f, r in zip(rows["flow"]["mean"], rows["random"]["mean"])]},
        data={"test": test_source, **_train_source(ctx),
              "protocol": f"MNIST digits average-pooled to {cfg.data.size}x{cfg.data.size}; central "
                          f"{cfg.flow.first_block}x{cfg.flow.first_block} k-space block measured first"},
        notes="Zero-filled reconstruction of k-space points; NMSE per image (lower is better). Both policies "
              "start from the central block; budgets are new points. margins: random − flow (positive = flow "
              "better).")
    if ctx.dist.is_main:
        res = ctx.results_dir
        write_results(res, "metrics", payload, ctx.metadata())
        report.plot_metric_vs_budget(payload, res / "nmse_vs_budget.png", ylabel="NMSE (lower is better)",
                                     xlabel="new k-space points")
        n = max(int(x.shape[0]), 1)
        report.plot_density({f"{budgets[-1]} points": (density / n).reshape(cfg.data.size, cfg.data.size)},
                            res / "density.png", title="flow: probability that a k-space point is chosen")
    return payload


def _train_source(ctx: RunContext) -> dict:
    import json

    path = ctx.run_dir / "data_sources.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def ablate(ctx: RunContext) -> dict:
    raise ConfigError(f"{NAME} has no ablation")


__all__ = ["Config", "SMOKE", "NAME", "STAGES", "validate", "train", "evaluate", "ablate", "ZeroFilledTask"]
