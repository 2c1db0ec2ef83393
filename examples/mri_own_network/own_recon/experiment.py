"""Experiment ``own-recon-mri``: the flow policy picks Cartesian k-space lines for *your* reconstruction network.

Data: complex images made from the Shepp–Logan phantom of ``<data root>/phantom_skimage/phantom.png``
(random rotation, scale, shift, contrast and a smooth random phase per image; seeded). Geometry: flowcs'
:class:`~flowcs.operators.KSpaceLineOperator` (one location = one phase-encode column). The first measurement
is the central low-frequency band. Stages:

* ``network`` trains the user's :class:`~own_recon.network.ResidualCNN` on random line masks (MSE);
* ``flow`` freezes it inside :class:`~own_recon.task.OwnReconTask` and trains the flow policy with flowcs'
  :class:`~flowcs.flow.objective.FlowTaskObjective` and :func:`~flowcs.training.loop.fit`.

``evaluate`` compares the flow policy with the random policy (same band, same budgets) by the network's
PSNR, and reports the zero-filled PSNR of the same masks as a second metric. Run it (repository root)::

    PYTHONPATH=examples/mri_own_network FLOWCS_PLUGINS=own_recon \\
        flowcs run own-recon-mri --smoke --config examples/mri_own_network/config.yaml
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flowcs.errors import ConfigError, DataError
from flowcs.experiments import report
from flowcs.experiments.common import RunContext, load_stage, metrics_payload, seed_row, write_results
from flowcs.flow.model import FlowModel, FrozenEncoder
from flowcs.flow.nets.mlp import MRIVelocityMLP, PooledCondition
from flowcs.flow.objective import FlowTaskObjective
from flowcs.flow.policy import FlowPolicy
from flowcs.flow.targets import TargetEstimator
from flowcs.masks import random_mask, rate_to_budget
from flowcs.operators import KSpaceLineOperator, low_frequency_band
from flowcs.policies import RandomPolicy
from flowcs.rng import shard_generator
from flowcs.training.loop import LoopConfig, fit

from .network import ResidualCNN
from .task import OwnReconTask, psnr

NAME = "own-recon-mri"
STAGES = ["network", "flow"]


@dataclass
class DataConfig:
    size: int = 32
    train_images: int = 1024
    test_images: int = 256


@dataclass
class NetworkConfig:
    width: int = 32
    depth: int = 5
    rate_min: float = 10.0          # new lines (beyond the band) during training, % of the columns
    rate_max: float = 50.0
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(epochs=4, batch_size=32, lr=2e-3))


@dataclass
class FlowConfig:
    lf_fraction: float = 0.125      # central band measured first (fraction of the columns)
    rate_min: float = 10.0
    rate_max: float = 40.0
    target: str = "saliency"
    loss: str = "both"
    gate_a: float = 30.0
    gate_b: float = 1.0
    steps: int = 10
    pool: int = 8
    hidden: int = 256
    layers: int = 2
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(epochs=4, batch_size=32, lr=2e-3))


@dataclass
class EvalConfig:
    budgets: list[int] = field(default_factory=lambda: [2, 4, 8])   # new k-space lines per image
    seeds: int = 2
    batch_size: int = 128


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


SMOKE = {"data": {"train_images": 384, "test_images": 96},
         "network": {"loop": {"epochs": 3}}, "flow": {"loop": {"epochs": 3}}, "eval": {"seeds": 1}}


# ----------------------------------------------------------------------------- data


def phantom_images(path, n: int, size: int, seed: int) -> torch.Tensor:
    """``n`` complex (2, size, size) variations of the phantom: rotation, scale, shift, contrast, smooth phase."""
    from PIL import Image

    if not path.is_file():
        raise DataError(f"{path}: phantom image not found (the example reads <data root>/phantom_skimage/phantom.png;"
                        f" pass --data DIR)")
    base = torch.from_numpy(np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0)[None, None]
    base = F.interpolate(base, size=(4 * size, 4 * size), mode="bilinear", antialias=True, align_corners=False)
    g = torch.Generator().manual_seed(seed)
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=g)  # noqa: E731
    angle, scale = u(-math.pi / 6, math.pi / 6), u(0.8, 1.15)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = scale * torch.cos(angle), -scale * torch.sin(angle)
    theta[:, 1, 0], theta[:, 1, 1] = scale * torch.sin(angle), scale * torch.cos(angle)
    theta[:, :, 2] = 0.1 * (2 * torch.rand(n, 2, generator=g) - 1)
    grid = F.affine_grid(theta, [n, 1, size, size], align_corners=False)
    mag = F.grid_sample(base.expand(n, -1, -1, -1), grid, align_corners=False)[:, 0] * u(0.7, 1.0)[:, None, None]
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    c = (2 * torch.rand(n, 3, generator=g) - 1) * math.pi / 2
    phase = c[:, 0, None, None] + c[:, 1, None, None] * xx + c[:, 2, None, None] * yy
    return torch.stack([mag * torch.cos(phase), mag * torch.sin(phase)], dim=1)


def load_split(ctx: RunContext, split: str) -> torch.Tensor:
    c = ctx.cfg.data
    n = c.train_images if split == "train" else c.test_images
    return phantom_images(ctx.data_root / "phantom_skimage" / "phantom.png", n, c.size,
                          seed=1 if split == "train" else 2)


# ----------------------------------------------------------------------------- models


class NetworkObjective(nn.Module):
    """Stage ``network``: the user's net on the band plus a random number of random lines, MSE."""

    def __init__(self, task: OwnReconTask, op: KSpaceLineOperator, band: torch.Tensor, cfg: NetworkConfig):
        super().__init__()
        self.model, self.task, self.op, self.band, self.cfg = task.model, task, op, band, cfg

    def forward(self, x, y, generator=None):
        acquired = self.band.to(x.device).expand(x.shape[0], -1)
        rate = self.cfg.rate_min + (self.cfg.rate_max - self.cfg.rate_min) * float(torch.rand(1, generator=generator))
        m = acquired | random_mask(x.shape[0], self.op.n_locations, rate_to_budget(rate, self.op.n_locations),
                                   acquired, generator, x.device)
        pred = self.task.predict(self.op.zero_filled(self.op.measure(x, m), m), self.op.mask_to_image(m))
        return {"loss": self.task.loss(pred, y)}


def operator_for(cfg: Config) -> KSpaceLineOperator:
    return KSpaceLineOperator(cfg.data.size, cfg.data.size)


def make_task(cfg: Config) -> OwnReconTask:
    return OwnReconTask(ResidualCNN(cfg.network.width, cfg.network.depth))


def build_flow_model(cfg: Config, n: int) -> FlowModel:
    f = cfg.flow
    velocity = MRIVelocityMLP(n, 2 * f.pool ** 2, f.hidden, f.layers, time_dim=32)
    return FlowModel(FrozenEncoder(PooledCondition(f.pool)), velocity)


def signature(cfg: Config, stage: str) -> dict:
    sig = {"experiment": NAME, "size": cfg.data.size, "width": cfg.network.width, "depth": cfg.network.depth}
    if stage == "flow":
        sig.update(pool=cfg.flow.pool, hidden=cfg.flow.hidden, layers=cfg.flow.layers)
    return sig


def first_measurement(op: KSpaceLineOperator, x: torch.Tensor, band: torch.Tensor):
    acquired = band.to(x.device).expand(x.shape[0], -1).clone()
    return acquired, op.zero_filled(op.measure(x, acquired), acquired)


# ----------------------------------------------------------------------------- experiment API


def validate(cfg: Config) -> None:
    if cfg.data.size < 8:
        raise ConfigError(f"data.size must be at least 8, got {cfg.data.size}")
    band = int(low_frequency_band(cfg.data.size, cfg.flow.lf_fraction).sum())
    if max(cfg.eval.budgets) + band > cfg.data.size:
        raise ConfigError(f"eval.budgets up to {max(cfg.eval.budgets)} plus the {band}-line band exceed the "
                          f"{cfg.data.size} lines")


def train(ctx: RunContext, stages: list[str] | None = None) -> None:
    cfg = ctx.cfg
    for stage in stages or STAGES:
        if stage not in STAGES:
            raise ConfigError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")
    x = load_split(ctx, "train")
    op = operator_for(cfg)
    band = low_frequency_band(cfg.data.size, cfg.flow.lf_fraction)

    def plain_batches(idx, gen):
        xb = x[idx].to(ctx.device)
        return {"x": xb, "y": xb}

    run = dict(out_dir=ctx.run_dir, seed=ctx.seed, device=ctx.device, dist=ctx.dist, resume=ctx.resume)
    if "network" in (stages or STAGES):
        obj = NetworkObjective(make_task(cfg), op, band, cfg.network).to(ctx.device)
        fit(obj, plain_batches, x.shape[0], cfg.network.loop, name="network", signature=signature(cfg, "network"),
            desc="network", **run)
    if "flow" in (stages or STAGES):
        task = trained_task(ctx)
        f = cfg.flow
        objective = FlowTaskObjective(build_flow_model(cfg, op.n_locations), task, op,
                                      TargetEstimator(f.target, task, op), f.loss, f.gate_a, f.gate_b).to(ctx.device)

        def flow_batches(idx, gen):
            xb = x[idx].to(ctx.device)
            acquired, cond = first_measurement(op, xb, band)
            rate = f.rate_min + (f.rate_max - f.rate_min) * float(torch.rand(1, generator=gen))
            return {"x": xb, "y": xb, "condition": cond, "acquired": acquired,
                    "k": rate_to_budget(rate, op.n_locations)}

        fit(objective, flow_batches, x.shape[0], f.loop, name="flow", signature=signature(cfg, "flow"),
            desc="flow", **run)


def trained_task(ctx: RunContext) -> OwnReconTask:
    task = make_task(ctx.cfg)
    load_stage(ctx, "network", task.model, signature(ctx.cfg, "network"))
    return task.freeze()


@torch.inference_mode()
def evaluate(ctx: RunContext) -> dict:
    cfg = ctx.cfg
    op = operator_for(cfg)
    task = trained_task(ctx)
    model = load_stage(ctx, "flow", build_flow_model(cfg, op.n_locations), signature(cfg, "flow"))
    band = low_frequency_band(cfg.data.size, cfg.flow.lf_fraction)
    x = load_split(ctx, "test").to(ctx.device)
    policies = {"flow": FlowPolicy(model, op.n_locations, steps=cfg.flow.steps), "random": RandomPolicy(op.n_locations)}
    budgets = list(cfg.eval.budgets)
    per_seed, per_seed_zf = [], []
    for s in range(cfg.eval.seeds):
        net = {name: {b: [] for b in budgets} for name in policies}
        zf = {name: {b: [] for b in budgets} for name in policies}
        for i, start in enumerate(range(0, x.shape[0], cfg.eval.batch_size)):
            xb = x[start:start + cfg.eval.batch_size]
            acquired, cond = first_measurement(op, xb, band)
            for name, policy in policies.items():
                gen = shard_generator(ctx.seed * 1_000_003 + s * 1009 + i)
                for b, m in policy.propose_many(cond, budgets, acquired, gen).items():
                    z = op.zero_filled(op.measure(xb, m), m)
                    net[name][b].append(task.score(task.predict(z, op.mask_to_image(m)), xb).double().cpu())
                    zf[name][b].append(psnr(z, xb).double().cpu())
        per_seed.append({n: {b: torch.cat(v) for b, v in p.items()} for n, p in net.items()})
        per_seed_zf.append({n: {b: torch.cat(v) for b, v in p.items()} for n, p in zf.items()})
    rows = {name: seed_row(per_seed, name, budgets) for name in policies}
    rows_zf = {name: seed_row(per_seed_zf, name, budgets) for name in policies}
    payload = metrics_payload(
        NAME, "psnr", True, "lines", budgets, rows,
        extra_metrics={"psnr_zero_filled": rows_zf}, band_lines=int(band.sum()), n_locations=op.n_locations,
        seeds=cfg.eval.seeds, test_images=int(x.shape[0]),
        margins={"flow_vs_random": [f - r for f, r in zip(rows["flow"]["mean"], rows["random"]["mean"])]},
        data={"protocol": f"Shepp-Logan phantom variations {cfg.data.size}x{cfg.data.size} (rotation, scale, "
                          f"shift, contrast, smooth random phase), {int(band.sum())} central lines measured first",
              "source": str(ctx.data_root / "phantom_skimage" / "phantom.png")},
        notes="PSNR (dB) of the user's ResidualCNN reconstruction; psnr_zero_filled: the same masks without the "
              "network. Budgets are new lines beyond the central band. margins: flow − random (positive = flow "
              "better).")
    if ctx.dist.is_main:
        res = ctx.results_dir
        write_results(res, "metrics", payload, ctx.metadata())
        report.plot_metric_vs_budget(payload, res / "psnr_vs_budget.png", ylabel="PSNR (dB)",
                                     xlabel="new k-space lines")
    return payload


def ablate(ctx: RunContext) -> dict:
    raise ConfigError(f"{NAME} has no ablation")


__all__ = ["Config", "SMOKE", "NAME", "STAGES", "validate", "train", "evaluate", "ablate", "phantom_images",
           "NetworkObjective"]
